"""kNN and linear-probe evaluation, against hand-made answers, a naive kNN and scikit-learn."""

import pytest
import torch
from torch import nn

from vprob.evaluate import extract_features, knn_accuracy, knn_predict, linear_probe


def _clusters(n_per=50, dim=16, classes=4, noise=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 3
    labels = torch.arange(classes).repeat_interleave(n_per)
    x = centres[labels] + noise * torch.randn(len(labels), dim, generator=g)
    return x, labels


def _naive_knn(train, train_y, test, k, temperature, weighted, num_classes):
    train = train / train.norm(dim=1, keepdim=True)
    test = test / test.norm(dim=1, keepdim=True)
    preds = []
    for q in test:
        sims = train @ q
        order = sorted(range(len(sims)), key=lambda j: -float(sims[j]))[:k]
        score = [0.0] * num_classes
        first = [k] * num_classes
        for rank, j in enumerate(order):
            c = int(train_y[j])
            score[c] += float(torch.exp((sims[j] - sims[order[0]]) / temperature)) if weighted else 1.0
            first[c] = min(first[c], rank)
        # Majority ties: nearest class first; weighted ties: lowest class index.
        best = max(range(num_classes), key=lambda c: (score[c], -c if weighted else -first[c]))
        preds.append(best)
    return torch.tensor(preds)


def test_knn_on_clusters():
    x, y = _clusters()
    xt, yt = _clusters(n_per=10, seed=0)
    xt = xt + 0.05 * torch.randn_like(xt)
    for weighted in (True, False):
        assert knn_accuracy(x, y, xt, yt, k=20, weighted=weighted) == 1.0
    pred = knn_predict(x, y, xt, k=1000)  # k larger than the train set is clipped
    assert pred.dtype == torch.long and pred.shape == (40,)


def test_weighted_and_majority_differ_where_they_should():
    # One very close neighbour of class 0, two far ones of class 1.
    train = torch.tensor([[1.0, 0.05], [0.5, 1.0], [0.6, 1.0]])
    labels = torch.tensor([0, 1, 1])
    query = torch.tensor([[1.0, 0.0]])
    assert knn_predict(train, labels, query, k=3, temperature=0.1, weighted=True).item() == 0
    assert knn_predict(train, labels, query, k=3, weighted=False).item() == 1
    # A tie in counts goes to the class of the nearest neighbour.
    train = torch.tensor([[1.0, 0.3], [1.0, 0.1], [1.0, 0.5], [1.0, 0.2]])
    labels = torch.tensor([0, 2, 0, 2])
    assert knn_predict(train, labels, query, k=4, weighted=False, num_classes=3).item() == 2


@pytest.mark.parametrize("weighted", [True, False])
def test_knn_matches_naive_reference(weighted):
    g = torch.Generator().manual_seed(1)
    train = torch.randn(300, 8, generator=g)
    y = torch.randint(0, 5, (300,), generator=g)
    test = torch.randn(40, 8, generator=g)
    ref = _naive_knn(train, y, test, k=15, temperature=0.1, weighted=weighted, num_classes=5)
    ours = knn_predict(train, y, test, k=15, temperature=0.1, weighted=weighted, chunk_size=7)
    assert torch.equal(ours, ref)
    assert torch.equal(ours, knn_predict(train, y, test, k=15, weighted=weighted, num_classes=5))


def test_knn_small_temperature_is_finite():
    x, y = _clusters()
    assert knn_accuracy(x, y, x, y, k=10, temperature=1e-4) == 1.0


def test_linear_probe_separable_toy():
    x, y = _clusters(n_per=100, classes=5, noise=1.0)
    xt, yt = _clusters(n_per=40, classes=5, noise=1.0, seed=0)
    assert linear_probe(x, y, xt, yt) >= 0.99
    assert linear_probe(x, y, xt, yt, batch_size=64, epochs=20, seed=3) >= 0.99


def test_linear_probe_matches_sklearn_on_digits():
    sklearn = pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from vprob.data import load_digits

    assert sklearn
    train, test = load_digits()
    xtr = train.images.flatten(1).float()
    xte = test.images.flatten(1).float()
    scaler = StandardScaler().fit(xtr.numpy())
    c = 1.0
    ref = LogisticRegression(C=c, max_iter=5000).fit(scaler.transform(xtr.numpy()), train.labels.numpy())
    ref_acc = ref.score(scaler.transform(xte.numpy()), test.labels.numpy())
    ours = linear_probe(xtr, train.labels, xte, test.labels, epochs=200, weight_decay=1 / (c * len(train)))
    assert abs(ours - ref_acc) <= 0.02, (ours, ref_acc)
    adam_kw = dict(batch_size=256, epochs=20, lr=0.1, seed=0)
    adam = linear_probe(xtr, train.labels, xte, test.labels, **adam_kw)
    assert adam == linear_probe(xtr, train.labels, xte, test.labels, **adam_kw)
    assert abs(adam - ref_acc) <= 0.03, (adam, ref_acc)


def test_extract_features_restores_modes_and_batches():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5)
    )
    net.train()
    net[4].eval()  # mixed modes must come back as they were
    images = torch.randint(0, 256, (10, 1, 5, 5), dtype=torch.uint8)

    def normalize(u8):
        return u8.float() / 255 - 0.5

    feats = extract_features(net, images, normalize, batch_size=3)
    assert feats.shape == (10, 100) and feats.dtype == torch.float32
    assert net.training and net[1].training and not net[4].training
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(feats, net(normalize(images)))
    bf = extract_features(net, images, normalize, autocast_dtype=torch.bfloat16)
    assert bf.dtype == torch.float32
    torch.testing.assert_close(bf, feats, atol=0.05, rtol=0.05)


def test_extract_features_restores_mode_on_error():
    net = nn.Sequential(nn.Linear(3, 2))
    net.train()

    def broken(u8):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        extract_features(net, torch.zeros(2, 3, dtype=torch.uint8), broken)
    assert net.training
