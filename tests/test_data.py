"""Data sets: ImageSet validation, the bundled digits, and the CIFAR-10 JPEG reader (on a small copy)."""

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vprob.data import ImageSet, load_cifar10, load_dataset, load_digits
from vprob.data.datasets import channel_stats

CIFAR_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _image_set(n=6, c=3, classes=("a", "b", "c"), **overrides):
    fields = dict(
        images=torch.zeros(n, c, 4, 4, dtype=torch.uint8),
        labels=torch.arange(n) % len(classes),
        classes=classes,
        mean=(0.5,) * c,
        std=(0.25,) * c,
    )
    fields.update(overrides)
    return ImageSet(**fields)


# ------------------------------------------------------------------------------------------ ImageSet


@pytest.mark.parametrize(
    "overrides, error, field",
    [
        (dict(images=torch.zeros(6, 3, 4, 4)), TypeError, "images"),
        (dict(images=np.zeros((6, 3, 4, 4), np.uint8)), TypeError, "images"),
        (dict(images=torch.zeros(6, 4, 4, dtype=torch.uint8)), ValueError, "images"),
        (dict(labels=torch.zeros(6, dtype=torch.int32)), TypeError, "labels"),
        (dict(labels=torch.zeros(5, dtype=torch.int64)), ValueError, "labels"),
        (dict(labels=torch.tensor([0, 1, 2, 3, 0, 1])), ValueError, "labels"),
        (dict(labels=torch.tensor([0, 1, 2, -1, 0, 1])), ValueError, "labels"),
        (dict(mean=(0.5, 0.5)), ValueError, "mean"),
        (dict(std=(0.5, 0.5, 0.0)), ValueError, "std"),
        (dict(classes=(1, 2, 3)), TypeError, "classes"),
    ],
)
def test_image_set_validation_names_the_field(overrides, error, field):
    with pytest.raises(error, match=field):
        _image_set(**overrides)


def test_image_set_basics_and_subset():
    s = _image_set(n=6, classes=["a", "b", "c"])
    s.images[:, 0] = torch.arange(6, dtype=torch.uint8).view(6, 1, 1)
    assert len(s) == 6 and s.num_classes == 3 and s.classes == ("a", "b", "c")
    assert s.channels == 3 and s.image_size == 4
    mask = s.labels == 1
    sub = s.subset(mask)
    assert len(sub) == 2 and (sub.labels == 1).all()
    assert sub.images[:, 0, 0, 0].tolist() == [1, 4]
    assert sub.mean == s.mean and sub.std == s.std and sub.classes == s.classes
    assert s.subset([5, 0]).images[:, 0, 0, 0].tolist() == [5, 0]
    assert s.subset(torch.tensor([2])).labels.tolist() == [2]
    assert len(s.subset(slice(1, 4))) == 3
    with pytest.raises(ValueError, match="mask"):
        s.subset(torch.ones(5, dtype=torch.bool))
    moved = s.to("cpu")
    assert moved.images.device.type == "cpu" and torch.equal(moved.images, s.images)


def test_channel_stats_exact():
    images = torch.randint(0, 256, (50, 3, 5, 7), dtype=torch.uint8)
    mean, std = channel_stats(images)
    x = images.double() / 255
    np.testing.assert_allclose(mean, x.mean(dim=(0, 2, 3)).numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, x.std(dim=(0, 2, 3), unbiased=False).numpy(), rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------- digits


def test_load_digits_shapes_split_and_values():
    from sklearn.datasets import load_digits as sk_load

    train, test = load_digits()
    bunch = sk_load()
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 8, 8)
    assert len(train) + len(test) == 1797
    assert train.classes == tuple(str(i) for i in range(10))
    # Stratified: each class contributes round(0.2 * n_c) test images.
    n_c = np.bincount(bunch.target)
    assert test.labels.bincount(minlength=10).tolist() == [round(0.2 * n) for n in n_c]
    # The two splits hold exactly sklearn's images (0..16 rescaled to 0..255), each once.
    expected = np.rint(bunch.images * 255 / 16).astype(np.uint8).reshape(1797, 64)
    ours = torch.cat([train.images, test.images]).reshape(-1, 64).numpy()
    ours_rows = np.concatenate([ours, torch.cat([train.labels, test.labels]).numpy()[:, None]], axis=1)
    exp_rows = np.concatenate([expected, bunch.target[:, None].astype(np.uint8)], axis=1)
    np.testing.assert_array_equal(np.unique(ours_rows, axis=0), np.unique(exp_rows, axis=0))
    assert int(ours.max()) == 255 and int(ours.min()) == 0
    # Both splits carry the train statistics.
    x = train.images.double() / 255
    assert train.mean == test.mean and train.std == test.std
    assert abs(train.mean[0] - x.mean().item()) < 1e-9
    assert abs(train.std[0] - x.std(unbiased=False).item()) < 1e-9


def test_load_digits_deterministic_per_seed():
    a, _ = load_digits(seed=0)
    b, _ = load_digits(seed=0)
    c, _ = load_digits(seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.0)


def test_load_dataset_dispatch():
    train, test = load_dataset("digits")
    ref_train, ref_test = load_digits()
    assert torch.equal(train.images, ref_train.images) and torch.equal(test.labels, ref_test.labels)
    with pytest.raises(ValueError, match="digits, cifar10"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="--data-dir"):
        load_dataset("cifar10")


# ------------------------------------------------------------------------------------------- CIFAR-10


def _write_split(path, blobs, labels, overrides=None):
    """An npz in the README's format; ``overrides`` replaces arrays (None drops one)."""
    arrays = dict(
        jpeg=np.frombuffer(b"".join(blobs), dtype=np.uint8),
        offsets=np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64),
        y=np.asarray(labels, dtype=np.int64),
        classes=np.asarray(CIFAR_CLASSES),
    )
    arrays.update(overrides or {})
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def _read_blobs(path, index):
    with np.load(path) as npz:
        jpeg, offsets, y = npz["jpeg"], npz["offsets"], npz["y"]
    return [jpeg[offsets[i] : offsets[i + 1]].tobytes() for i in index], y[index]


@pytest.fixture(scope="module")
def cifar_sample():
    """JPEG bytes and labels of 200 train and 100 test images spread over all classes (real data)."""
    if not (CIFAR_DIR / "train.npz").is_file() or not (CIFAR_DIR / "test.npz").is_file():
        pytest.skip(f"CIFAR-10 data not found at {CIFAR_DIR} (see ../shared/data/cifar10/README.md)")
    train = _read_blobs(CIFAR_DIR / "train.npz", np.arange(0, 50_000, 250))
    test = _read_blobs(CIFAR_DIR / "test.npz", np.arange(0, 10_000, 100))
    return train, test


@pytest.fixture
def small_cifar(tmp_path, cifar_sample):
    (train_blobs, train_y), (test_blobs, test_y) = cifar_sample
    folder = tmp_path / "cifar10"
    folder.mkdir()
    _write_split(folder / "train.npz", train_blobs, train_y)
    _write_split(folder / "test.npz", test_blobs, test_y)
    return folder


def test_load_cifar10_small_copy_matches_pillow(small_cifar, cifar_sample):
    pil = pytest.importorskip("PIL.Image")
    train, test = load_cifar10(small_cifar)
    assert train.images.shape == (200, 3, 32, 32) and test.images.shape == (100, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.classes == CIFAR_CLASSES and test.classes == CIFAR_CLASSES
    assert train.labels.bincount().tolist() == [20] * 10 and test.labels.bincount().tolist() == [10] * 10
    # Pillow as the independent decoder (the README says both give the same pixels).
    (train_blobs, _), _ = cifar_sample
    for i in (0, 57, 199):
        ref = np.asarray(pil.open(io.BytesIO(train_blobs[i])).convert("RGB")).transpose(2, 0, 1)
        diff = np.abs(train.images[i].numpy().astype(int) - ref.astype(int))
        assert diff.max() <= 1, f"image {i} differs from Pillow by up to {diff.max()}"
    mean, std = channel_stats(train.images)
    assert train.mean == mean and test.mean == mean and train.std == std


def test_load_cifar10_cache_dir(small_cifar, tmp_path):
    before = sorted(os.listdir(small_cifar))
    cache = tmp_path / "cache"
    a, at = load_cifar10(small_cifar, cache_dir=cache)
    assert len(list(cache.glob("*.npy"))) == 2
    b, bt = load_cifar10(small_cifar, cache_dir=cache)
    assert torch.equal(a.images, b.images) and torch.equal(at.images, bt.images)
    assert torch.equal(a.labels, b.labels)
    assert sorted(os.listdir(small_cifar)) == before  # the data folder is never written to
    with pytest.raises(ValueError, match="cache_dir"):
        load_cifar10(small_cifar, cache_dir=small_cifar)


def test_load_cifar10_missing_folder_explains_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data-dir") as err:
        load_cifar10(tmp_path / "nowhere")
    assert "README.md" in str(err.value) and "offsets" in str(err.value)
    (tmp_path / "half").mkdir()
    _write_split(tmp_path / "half" / "train.npz", [b"\xff\xd8"], [0])
    with pytest.raises(FileNotFoundError, match="test.npz"):
        load_cifar10(tmp_path / "half")


def _corrupt(folder, cifar_sample, **kw):
    """Rewrite train.npz of ``folder`` with modified blobs / labels / arrays."""
    (blobs, y), _ = cifar_sample
    blobs = list(blobs)
    y = np.array(y)
    if "blob" in kw:
        index, blob = kw.pop("blob")
        blobs[index] = blob
    if "label" in kw:
        index, value = kw.pop("label")
        y[index] = value
    _write_split(folder / "train.npz", blobs, y, kw)
    return folder / "train.npz"


def test_truncated_jpeg_names_file_and_index(small_cifar, cifar_sample):
    (blobs, _), _ = cifar_sample
    path = _corrupt(small_cifar, cifar_sample, blob=(123, blobs[123][: len(blobs[123]) // 2]))
    with pytest.raises(ValueError, match=r"train\.npz.*image 123"):
        load_cifar10(small_cifar)
    assert path.exists()


def test_garbage_bytes_name_index(small_cifar, cifar_sample):
    _corrupt(small_cifar, cifar_sample, blob=(7, b"not a jpeg at all"))
    with pytest.raises(ValueError, match=r"train\.npz.*image 7"):
        load_cifar10(small_cifar)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision 0.29 deprecates encode_jpeg
@pytest.mark.parametrize("shape", [(3, 16, 16), (1, 32, 32)])
def test_wrong_image_shape_is_rejected(small_cifar, cifar_sample, shape):
    from torchvision.io import encode_jpeg

    blob = encode_jpeg(torch.full(shape, 100, dtype=torch.uint8)).numpy().tobytes()
    _corrupt(small_cifar, cifar_sample, blob=(42, blob))
    with pytest.raises(ValueError, match=r"train\.npz.*image 42.*shape"):
        load_cifar10(small_cifar)


def test_labels_out_of_range(small_cifar, cifar_sample):
    _corrupt(small_cifar, cifar_sample, label=(17, 10))
    with pytest.raises(ValueError, match=r"train\.npz.*y\[17\] = 10"):
        load_cifar10(small_cifar)
    _corrupt(small_cifar, cifar_sample, label=(3, -1))
    with pytest.raises(ValueError, match=r"y\[3\] = -1"):
        load_cifar10(small_cifar)


def test_bad_offsets(small_cifar, cifar_sample):
    (blobs, y), _ = cifar_sample
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    swapped = offsets.copy()
    swapped[10], swapped[11] = swapped[11], swapped[10]
    _corrupt(small_cifar, cifar_sample, offsets=swapped)
    with pytest.raises(ValueError, match=r"train\.npz.*increasing.*image 10"):
        load_cifar10(small_cifar)
    short = offsets.copy()
    short[-1] -= 5
    _corrupt(small_cifar, cifar_sample, offsets=short)
    with pytest.raises(ValueError, match=r"train\.npz.*does not match"):
        load_cifar10(small_cifar)
    _corrupt(small_cifar, cifar_sample, offsets=offsets[:-1])
    with pytest.raises(ValueError, match=r"train\.npz.*N\+1"):
        load_cifar10(small_cifar)


@pytest.mark.parametrize("missing", ["jpeg", "offsets", "y", "classes"])
def test_missing_array(small_cifar, cifar_sample, missing):
    _corrupt(small_cifar, cifar_sample, **{missing: None})  # dropped from the archive
    with pytest.raises(ValueError, match=rf"train\.npz.*missing.*{missing}"):
        load_cifar10(small_cifar)


def test_not_an_npz(small_cifar):
    (small_cifar / "test.npz").write_bytes(b"hello")
    with pytest.raises(ValueError, match=r"test\.npz"):
        load_cifar10(small_cifar)


def test_classes_must_agree(small_cifar, cifar_sample):
    _, (blobs, y) = cifar_sample
    _write_split(small_cifar / "test.npz", blobs, y, dict(classes=np.asarray(CIFAR_CLASSES[::-1])))
    with pytest.raises(ValueError, match="classes"):
        load_cifar10(small_cifar)


@pytest.mark.cuda
def test_cifar10_gpu_decode_matches_cpu(small_cifar):
    cpu, _ = load_cifar10(small_cifar)
    gpu, _ = load_cifar10(small_cifar, device="cuda")
    assert gpu.images.is_cuda and gpu.labels.is_cuda
    assert torch.equal(gpu.labels.cpu(), cpu.labels)
    # nvJPEG's IDCT and chroma upsampling may differ from libjpeg-turbo by a few levels at edges.
    diff = (gpu.images.cpu().float() - cpu.images.float()).abs()
    assert diff.mean() < 1.0, diff.mean()
    np.testing.assert_allclose(gpu.mean, cpu.mean, atol=2e-3)  # same channel order


@pytest.mark.slow
def test_full_cifar10_matches_readme():
    if not CIFAR_DIR.is_dir():
        pytest.skip(f"CIFAR-10 data not found at {CIFAR_DIR}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    train, test = load_cifar10(CIFAR_DIR, device=device)
    assert train.images.shape == (50_000, 3, 32, 32) and test.images.shape == (10_000, 3, 32, 32)
    assert train.labels.bincount().tolist() == [5000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10
    assert train.classes == CIFAR_CLASSES
    np.testing.assert_allclose(train.mean, (0.4913, 0.4821, 0.4465), atol=2e-4)
    np.testing.assert_allclose(train.std, (0.2452, 0.2428, 0.2606), atol=2e-4)
