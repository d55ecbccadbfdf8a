"""kNN and linear-probe evaluation, against hand-made answers, a naive kNN and scikit-learn."""

import numpy as np
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


# ------------------------------------------------------------------------------------ pinned behaviour
# Settings that decide whether a kNN monitor or a linear probe matches the papers' numbers, pinned
# against scikit-learn and naive numpy so that a one-line change fails here.


def _three_class_problem():
    """Imbalanced 3-class 2-D data (240/100/60) with anisotropic scales, a shift and a constant column."""
    rng = np.random.default_rng(0)
    counts = [240, 100, 60]
    centres = np.array([[0.0, 0.0], [2.0, 0.5], [0.5, 2.0]])
    x = np.concatenate([rng.normal(c, 1.0, size=(n, 2)) for c, n in zip(centres, counts, strict=True)])
    y = np.repeat(np.arange(3), counts)
    x = np.concatenate([x * [3.0, 0.5] + [1.0, -2.0], np.full((len(x), 1), 7.0)], axis=1)
    return x, y


def _sklearn_grid_labels(x, y, weight_decay):
    """scikit-learn's multinomial logistic regression on the same standardized features, with
    C = 1 / (weight_decay * N) (the documented equivalence), and its argmax on a 60 x 60 grid spanning
    +-3 train standard deviations. Returns the grid (raw units) and sklearn's labels there."""
    from sklearn.linear_model import LogisticRegression

    mean, std = x.mean(0), x.std(0, ddof=1)
    std[std == 0] = 1.0  # constant features are only centred
    ref = LogisticRegression(C=1.0 / (weight_decay * len(x)), tol=1e-12, max_iter=10_000)
    ref.fit((x - mean) / std, y)
    g = np.stack(np.meshgrid(np.linspace(-3, 3, 60), np.linspace(-3, 3, 60)), -1).reshape(-1, 2)
    grid = np.concatenate([g * std[:2] + mean[:2], np.full((len(g), 1), 7.0)], axis=1)
    labels = ref.decision_function((grid - mean) / std).argmax(1)
    return grid, labels


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_linear_probe_decisions_match_sklearn_under_strong_regularisation(solver):
    """Strong L2 shrinks the weights while the unpenalized biases follow the class priors, so the decision
    boundaries of this imbalanced problem move with the penalty: the probe's argmax on a dense grid must
    agree with sklearn's at the same penalty (a doubled penalty agrees on only ~88 % of the grid)."""
    pytest.importorskip("sklearn")
    x, y = _three_class_problem()
    weight_decay = 0.3
    grid, grid_labels = _sklearn_grid_labels(x, y, weight_decay)
    assert np.bincount(grid_labels, minlength=3).min() > 100  # all three regions are on the grid
    kwargs = dict(batch_size=200, epochs=60, lr=0.05) if solver == "adam" else {}
    as_t = dict(dtype=torch.float32)
    agreement = linear_probe(
        torch.tensor(x, **as_t),
        torch.tensor(y),
        torch.tensor(grid, **as_t),
        torch.tensor(grid_labels),
        weight_decay=weight_decay,
        **kwargs,
    )
    assert agreement >= (0.995 if solver == "lbfgs" else 0.99), agreement


def _fan(labels, step=0.004):
    """Unit vectors at angles step, 2 step, ... from the query e1: rank i (0-based) has label labels[i]."""
    angles = step * torch.arange(1, len(labels) + 1, dtype=torch.float64)
    return torch.stack([angles.cos(), angles.sin()], 1).float(), torch.tensor(labels)


def test_knn_default_k_is_200():
    """Neighbours ordered by angle: 20 of class 2, then 89 of class 0, 90 of class 1, one of class 0 (the
    200th), then class 1. Majority vote: k=20 -> 2, k=199 -> 1, k=200 -> a 90/90 tie won by the class of
    the nearer neighbour (0), k=201 -> 1."""
    labels = [2] * 20 + [0] * 89 + [1] * 90 + [0] + [1] * 100
    train, y = _fan(labels)
    query = torch.tensor([[1.0, 0.0]])
    expected = {20: 2, 199: 1, 200: 0, 201: 1}
    for k, cls in expected.items():
        assert knn_predict(train, y, query, k=k, weighted=False).item() == cls, k
    assert knn_predict(train, y, query, weighted=False).item() == 0
    # Weighted with a huge temperature is a majority vote (ties to the lowest class index, 0 here too).
    assert knn_predict(train, y, query, temperature=1e6).item() == 0
    assert knn_predict(train, y, query, k=199, temperature=1e6).item() == 1


def _numpy_weighted_knn(train, train_y, test, k, temperature, num_classes):
    """exp(cosine / temperature) votes of the k most similar, in float64 numpy."""
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    sim = b @ a.T
    preds = []
    for row in sim:
        nearest = np.argsort(-row, kind="stable")[:k]
        scores = np.zeros(num_classes)
        np.add.at(scores, train_y[nearest], np.exp(row[nearest] / temperature))
        preds.append(int(np.argmax(scores)))
    return np.array(preds)


def test_knn_default_temperature_and_weighting_formula():
    """One class-0 neighbour at cosine 1 against three class-1 neighbours at cosine cos(phi): class 1 wins
    when 3 exp((cos(phi) - 1) / T) > 1. Sweeping phi puts the switch where numpy's formula puts it, and the
    default temperature (0.1) switches where T = 0.1 does, not where 0.05 or 0.2 do."""
    query = torch.tensor([[1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 1])
    phis = np.linspace(0.05, 1.0, 60)
    results = {}
    for temperature in (0.05, 0.1, 0.2, None):
        preds = []
        for phi in phis:
            train = np.array([[1.0, 0.0]] + [[np.cos(phi), np.sin(phi)]] * 3)
            kw = {} if temperature is None else dict(temperature=temperature)
            preds.append(knn_predict(torch.tensor(train).float(), labels, query, k=4, **kw))
            if temperature is not None:
                ref = _numpy_weighted_knn(
                    train, np.array([0, 1, 1, 1]), query.numpy().astype(float), 4, temperature, 2
                )
                assert preds[-1].item() == ref[0], (temperature, phi)
        results[temperature] = [int(p) for p in preds]
    assert results[None] == results[0.1]
    assert results[0.1] != results[0.05] and results[0.1] != results[0.2]
    assert 0 < sum(results[0.1]) < len(phis)  # the switch lies inside the sweep


def test_knn_uses_cosine_not_dot_product():
    """Rows scaled by factors from 0.01 to 100: a dot-product kNN (or one normalizing only one side) would
    vote differently; the votes must equal numpy's cosine kNN at several temperatures and k."""
    rng = np.random.default_rng(3)
    train = rng.normal(size=(300, 6)) * np.exp(rng.uniform(np.log(0.01), np.log(100), size=(300, 1)))
    test = rng.normal(size=(50, 6)) * np.exp(rng.uniform(np.log(0.01), np.log(100), size=(50, 1)))
    y = rng.integers(0, 4, size=300)
    for k, temperature in ((10, 0.5), (40, 0.07), (300, 1.0)):
        ref = _numpy_weighted_knn(train, y, test, k, temperature, 4)
        ours = knn_predict(
            torch.tensor(train).float(),
            torch.tensor(y),
            torch.tensor(test).float(),
            k=k,
            temperature=temperature,
        )
        np.testing.assert_array_equal(ours.numpy(), ref)
    dot = np.argmax(test @ train.T, axis=1)  # sanity: the scaling makes the dot product disagree
    assert (
        y[dot]
        != knn_predict(torch.tensor(train).float(), torch.tensor(y), torch.tensor(test).float(), k=1).numpy()
    ).any()


def test_knn_accuracy_and_input_checks():
    train, y = _fan([0, 1, 1, 2])
    queries = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # k is passed on: the nearest neighbour says 0; all four vote 1 (two of them) by default.
    assert knn_accuracy(train, y, queries, torch.tensor([0, 0]), k=1) == 1.0
    assert knn_accuracy(train, y, queries, torch.tensor([0, 0])) == 0.0
    with pytest.raises(ValueError, match="k must be positive"):
        knn_predict(train, y, queries, k=0)
    with pytest.raises(ValueError, match="rows"):
        knn_predict(train, y[:3], queries)
    assert knn_predict(train, y, queries[:0]).shape == (0,)


def _grid_problem(weight_decay=0.3):
    x, y = _three_class_problem()
    grid, grid_labels = _sklearn_grid_labels(x, y, weight_decay)
    as_t = dict(dtype=torch.float32)
    return torch.tensor(x, **as_t), torch.tensor(y), torch.tensor(grid, **as_t), torch.tensor(grid_labels)


def test_linear_probe_solver_choice_and_defaults():
    """batch_size >= N is the full-batch L-BFGS (not Adam over one batch); the Adam path's defaults are
    lr 0.01 and seed 0 (equal results to passing them; different lr or seed give different results here)."""
    pytest.importorskip("sklearn")
    x, y, grid, grid_labels = _grid_problem()
    lbfgs = linear_probe(x, y, grid, grid_labels, weight_decay=0.3)
    assert linear_probe(x, y, grid, grid_labels, weight_decay=0.3, batch_size=len(x)) == lbfgs >= 0.995
    adam = dict(weight_decay=0.3, batch_size=128, epochs=20)
    default = linear_probe(x, y, grid, grid_labels, **adam)
    assert default == linear_probe(x, y, grid, grid_labels, lr=0.01, seed=0, **adam)
    assert default != linear_probe(x, y, grid, grid_labels, lr=0.02, **adam)
    assert default != linear_probe(x, y, grid, grid_labels, seed=1, **adam)


def test_linear_probe_lbfgs_honours_epochs_and_lr():
    """``epochs`` caps the L-BFGS iterations (3 are not converged here, 100 are) and ``lr`` is its initial
    step (default 1.0): 3 iterations give the same decisions as lr=1.0 and different ones at lr=2.0."""
    pytest.importorskip("sklearn")
    x, y, grid, grid_labels = _grid_problem()

    def short(**kw):
        return linear_probe(x, y, grid, grid_labels, weight_decay=0.3, epochs=3, **kw)

    assert short() == short(lr=1.0) != short(lr=2.0)
    assert short() < 0.99 <= linear_probe(x, y, grid, grid_labels, weight_decay=0.3)


def test_linear_probe_adam_takes_one_step_per_minibatch(monkeypatch):
    """Adam path: every epoch walks all N rows in ceil(N / batch_size) minibatches (61 rows in batches of 20:
    20, 20, 20, 1), so 3 epochs are 12 Adam steps."""
    steps = []
    original = torch.optim.Adam.step

    def counting_step(self, *args, **kwargs):
        steps.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counting_step)
    x = torch.randn(61, 3)
    y = torch.arange(61) % 2
    linear_probe(x, y, x, y, batch_size=20, epochs=3)
    assert len(steps) == 12


def test_linear_probe_input_checks_and_class_count():
    x, y = _clusters(n_per=20, dim=4, classes=3)
    with pytest.raises(ValueError, match="^features and labels must have the same number of rows$"):
        linear_probe(x, y[:-1], x, y)
    with pytest.raises(ValueError, match="^features and labels must have the same number of rows$"):
        linear_probe(x, y, x, y[:-1])
    # The class count comes from train and test labels together: a test set missing class 2 is fine,
    # and so is a test label the train set never shows (it is simply never predicted).
    assert linear_probe(x, y, x[y < 2], y[y < 2]) == 1.0
    assert linear_probe(x[y < 2], y[y < 2], x, y) == pytest.approx(2 / 3)


@pytest.mark.cuda
def test_evaluation_device_plumbing_on_cuda():
    """CPU inputs evaluated on the GPU (``device``), and GPU features with CPU labels: same answers as on
    the CPU (the device mutants that are equivalent on a CPU-only machine fail here)."""
    x, y = _clusters(n_per=30, dim=8, classes=3, noise=1.5)
    xt, yt = _clusters(n_per=10, dim=8, classes=3, noise=1.5, seed=1)
    for kw in ({}, dict(batch_size=16, epochs=5)):
        cpu = linear_probe(x, y, xt, yt, **kw)
        assert linear_probe(x, y, xt, yt, device="cuda", **kw) == pytest.approx(cpu, abs=1 / 30)
        assert linear_probe(x.cuda(), y.cuda(), xt.cuda(), yt.cuda(), **kw) == pytest.approx(cpu, abs=1 / 30)
    pred = knn_predict(x.cuda(), y.cuda(), xt.cuda(), k=5)
    assert pred.is_cuda and torch.equal(pred.cpu(), knn_predict(x, y, xt, k=5))
    assert knn_accuracy(x.cuda(), y.cuda(), xt.cuda(), yt, k=5) == knn_accuracy(x, y, xt, yt, k=5)


class _AutocastRecorder(nn.Module):
    """Flatten + Linear(64, 8) that records whether each forward pass ran under CPU autocast."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 8))
        self.autocast = []

    def forward(self, x):
        self.autocast.append(torch.is_autocast_enabled("cpu"))
        return self.net(x)


def _digits_normalize(x):
    return (x.float() / 255.0 - 0.3) / 0.4


def _direct_scores(encoder, fit_set, score_set, ks, autocast_dtype=None):
    """What evaluate_backbone should return, from the public functions called one by one."""
    fit = extract_features(encoder, fit_set.images, _digits_normalize, autocast_dtype=autocast_dtype)
    score = extract_features(encoder, score_set.images, _digits_normalize, autocast_dtype=autocast_dtype)
    out = {}
    for k, weighted, name in ks:
        out[f"knn_top1_k{k}_{name}"] = knn_accuracy(
            fit, fit_set.labels, score, score_set.labels, k=k, weighted=weighted
        )
    out["linear_top1"] = linear_probe(fit, fit_set.labels, score, score_set.labels)
    return out


def test_evaluate_backbone_keys_values_and_split_roles():
    from vprob.data import load_digits
    from vprob.evaluate import evaluate_backbone

    train, test = load_digits()
    encoder = _AutocastRecorder()

    # Default knn_k: weighted vote at k = 200, majority at k = 10 (the vote switches above k = 10).
    got = evaluate_backbone(encoder, train, test, _digits_normalize)
    expected = _direct_scores(encoder, train, test, [(200, True, "weighted"), (10, False, "majority")])
    assert list(got) == ["knn_top1_k200_weighted", "knn_top1_k10_majority", "linear_top1"]
    assert got == pytest.approx(expected, abs=0)
    assert not any(encoder.autocast)

    # A custom tuple, straddling the switch: 11 weighted, 10 and 1 majority.
    got = evaluate_backbone(encoder, train, test, _digits_normalize, knn_k=(11, 10, 1))
    expected = _direct_scores(
        encoder, train, test, [(11, True, "weighted"), (10, False, "majority"), (1, False, "majority")]
    )
    assert list(got) == [
        "knn_top1_k11_weighted",
        "knn_top1_k10_majority",
        "knn_top1_k1_majority",
        "linear_top1",
    ]
    assert got == pytest.approx(expected, abs=0)

    # Fitted on the first set and scored on the second: swapping the roles changes the numbers.
    swapped = evaluate_backbone(encoder, test, train, _digits_normalize, knn_k=(11, 10, 1))
    swapped_expected = _direct_scores(
        encoder, test, train, [(11, True, "weighted"), (10, False, "majority"), (1, False, "majority")]
    )
    assert swapped == pytest.approx(swapped_expected, abs=0)
    assert all(swapped[key] != got[key] for key in got)

    # amp=True runs the encoder under bfloat16 autocast, for both sets.
    encoder.autocast.clear()
    got = evaluate_backbone(encoder, train, test, _digits_normalize, knn_k=(10,), amp=True)
    assert encoder.autocast and all(encoder.autocast)
    expected = _direct_scores(encoder, train, test, [(10, False, "majority")], autocast_dtype=torch.bfloat16)
    assert got == pytest.approx(expected, abs=0)


# ------------------------------------------------------------------------- solver settings and devices
# The probe's L-BFGS settings decide its memory and when it stops; the device arguments decide where the work
# runs. Both are invisible in an accuracy on the CPU, so they are observed directly: the optimizer's own
# state, and tensors on the meta device (which stands in for a GPU here: a tensor left on the CPU shows).


class _RecordingLBFGS(torch.optim.LBFGS):
    """torch.optim.LBFGS that keeps its instances and the max |gradient| after every objective evaluation."""

    made: list["_RecordingLBFGS"] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.grad_max: list[float] = []
        _RecordingLBFGS.made.append(self)

    def step(self, closure):
        def recorded():
            loss = closure()
            self.grad_max.append(max(p.grad.abs().max().item() for p in self.param_groups[0]["params"]))
            return loss

        return super().step(recorded)


def test_linear_probe_lbfgs_memory_stopping_rule_and_iteration_cap(monkeypatch):
    """On digits at weight decay 1e-4 the probe needs more than 20 iterations: it keeps exactly the last 20
    curvature pairs (memory (F K) x 40 floats, not 200 at torch's default history of 100), stops at the first
    accepted iterate with max |gradient| <= 1e-5 (torch's default 1e-7 would take ~90 iterations here, not
    ~55), and caps the iterations at ``epochs`` = 100 by default."""
    from vprob.data import load_digits

    train, test = load_digits()
    _RecordingLBFGS.made.clear()
    monkeypatch.setattr(torch.optim, "LBFGS", _RecordingLBFGS)
    linear_probe(train.images.flatten(1), train.labels, test.images.flatten(1), test.labels)
    (opt,) = _RecordingLBFGS.made
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert 20 < state["n_iter"] < 100
    assert len(state["old_dirs"]) == len(state["old_stps"]) == 20
    assert opt.grad_max[-1] <= 1e-5 < min(opt.grad_max[:-1])
    assert opt.defaults["max_iter"] == 100


def test_linear_probe_lbfgs_line_search_makes_lr_only_a_first_step():
    """With the strong Wolfe line search, ``lr`` is only the first trial step: at lr = 5 the probe still
    reaches sklearn's optimum (fixed steps of 5, without a line search, diverge to NaN on this problem)."""
    pytest.importorskip("sklearn")
    x, y, grid, grid_labels = _grid_problem()
    assert linear_probe(x, y, grid, grid_labels, weight_decay=0.3, lr=5.0) >= 0.995


class _Stop(Exception):
    pass


def test_linear_probe_moves_all_four_inputs_to_device(monkeypatch):
    """CPU inputs with ``device="meta"``: the fit sees features and labels on meta (float32 and int64), and a
    plain ``device="cpu"`` gives the default's answer."""
    import vprob.evaluate as evaluate

    x, y = _clusters(n_per=10, dim=4, classes=3)
    assert linear_probe(x, y, x, y, device="cpu") == linear_probe(x, y, x, y) == 1.0
    seen = {}

    def fit(x_train, y_train, num_classes, *rest):
        seen.update(x=x_train, y=y_train, num_classes=num_classes)
        raise _Stop

    monkeypatch.setattr(evaluate, "_fit_logistic", fit)
    with pytest.raises(_Stop):
        linear_probe(x.double(), y.int(), x, y, device="meta", num_classes=3)
    assert seen["x"].device.type == seen["y"].device.type == "meta"
    assert seen["x"].dtype == torch.float32 and seen["y"].dtype == torch.int64 and seen["num_classes"] == 3


def test_evaluate_backbone_extracts_both_sets_on_device(monkeypatch):
    """A parameterless encoder has no device of its own, so ``device`` alone decides where features are
    extracted: both sets' features reach the kNN and the probe on meta."""
    import vprob.evaluate as evaluate
    from vprob.data import load_digits

    train, test = load_digits()
    devices = []

    def record(train_features, train_labels, test_features, test_labels, **kwargs):
        devices.append((train_features.device.type, test_features.device.type))
        return 0.0

    monkeypatch.setattr(evaluate, "knn_accuracy", record)
    monkeypatch.setattr(evaluate, "linear_probe", record)
    got = evaluate.evaluate_backbone(nn.Flatten(), train, test, _digits_normalize, knn_k=(3,), device="meta")
    assert got == {"knn_top1_k3_majority": 0.0, "linear_top1": 0.0}
    assert devices == [("meta", "meta")] * 2


def test_class_count_is_one_past_the_largest_label_of_any_nonempty_set():
    from vprob.evaluate import _num_classes

    assert _num_classes(torch.tensor([0, 3, 1])) == 4
    assert _num_classes(torch.tensor([2]), torch.tensor([], dtype=torch.long), torch.tensor([5, 0])) == 6
