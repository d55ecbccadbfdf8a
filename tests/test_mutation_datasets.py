"""Image sets and the CIFAR-10 JPEG archives (vprob.data.datasets) on files written here: tiny JPEGs encoded
with Pillow (and decoded with Pillow as the reference), npz archives in the README's format, every refusal's
whole message, batched decoding in small chunks with the culprit named, the decoded-array cache (its name
from hashlib, hits, damaged caches replaced), the batch check, subsets and the digits split. Written for #19
(mutation testing left these unpinned by tests/test_data.py and the layout tests)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vprob.data import datasets
from vprob.data.datasets import CIFAR10_FORMAT_HELP as HELP
from vprob.data.datasets import ImageSet, check_image_batch, load_cifar10, load_digits

CLASSES = [f"c{i}" for i in range(10)]


def _jpeg(seed: int, size: int = 32, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


def _npz(path: Path, blobs: list[bytes], labels, **overrides) -> None:
    arrays = dict(
        jpeg=np.frombuffer(b"".join(blobs), dtype=np.uint8),
        offsets=np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64),
        y=np.asarray(labels, dtype=np.int64),
        classes=np.asarray(CLASSES),
    )
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})


def _pil(blob: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")).transpose(2, 0, 1)


def _folder(tmp_path: Path, n_train=5, n_test=2) -> tuple[Path, list[bytes], list[bytes]]:
    folder = tmp_path / "cifar10"
    folder.mkdir()
    train = [_jpeg(i) for i in range(n_train)]
    test = [_jpeg(100 + i) for i in range(n_test)]
    _npz(folder / "train.npz", train, [i % 10 for i in range(n_train)])
    _npz(folder / "test.npz", test, [(3 * i) % 10 for i in range(n_test)])
    return folder, train, test


def test_check_image_batch_messages():
    check_image_batch(torch.zeros(0, 3, 2, 2, dtype=torch.uint8))
    check_image_batch(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), non_empty=True)
    cases = [
        ([1, 2], {}, "images must be a uint8 image batch (N, C, H, W), got list"),
        (
            torch.zeros(1, 3, 2, 2),
            {},
            "images must be a uint8 image batch (N, C, H, W), got torch.float32 (1, 3, 2, 2)",
        ),
        (
            torch.zeros(3, 2, 2, dtype=torch.uint8),
            {"name": "x"},
            "x must be a uint8 image batch (N, C, H, W), got torch.uint8 (3, 2, 2)",
        ),
        (
            torch.zeros(0, 3, 2, 2, dtype=torch.uint8),
            {"name": "x", "non_empty": True},
            "x must be a non-empty uint8 image batch (N, C, H, W), got torch.uint8 (0, 3, 2, 2)",
        ),
        (
            None,
            {"non_empty": True},
            "images must be a non-empty uint8 image batch (N, C, H, W), got NoneType",
        ),
    ]
    for images, kwargs, message in cases:
        with pytest.raises(ValueError) as info:
            check_image_batch(images, **kwargs)
        assert str(info.value) == message


def _set(labels, unlabelled=False, coarse=None) -> ImageSet:
    n = len(labels)
    images = torch.arange(n * 3 * 4, dtype=torch.uint8).reshape(n, 3, 2, 2)
    extra = (torch.tensor(coarse), ("x", "y")) if coarse is not None else (None, None)
    return ImageSet(images, torch.tensor(labels), ("a", "b"), (0.5,) * 3, (0.25,) * 3, unlabelled, *extra)


def test_subset_and_labelled_views_masks_and_refusals():
    s = _set([0, 1, 1, 0], coarse=[1, 0, 1, 1])
    part = s.subset(torch.tensor([2, 0], dtype=torch.int32))
    assert part.labels.tolist() == [1, 0] and part.coarse_labels.tolist() == [1, 1]
    assert torch.equal(part.images, s.images[[2, 0]]) and part.coarse_classes == ("x", "y")
    assert s.subset([3]).labels.tolist() == [0] and s.subset(
        torch.tensor([1], dtype=torch.uint8)
    ).labels.tolist() == [1]
    masked = s.subset(torch.tensor([True, False, False, True]))
    assert masked.labels.tolist() == [0, 0] and masked.coarse_labels.tolist() == [1, 1]
    sliced = s.subset(slice(1, 3))
    assert sliced.coarse_labels.tolist() == [0, 1] and sliced.images.data_ptr() == s.images[1].data_ptr()
    with pytest.raises(ValueError) as info:
        s.subset(torch.tensor([True, False]))
    assert str(info.value) == "subset mask must have shape (4,), got (2,)"
    with pytest.raises(TypeError) as info:
        s.subset(torch.tensor([0.0]))
    assert str(info.value) == "subset expects a bool mask or an integer index, got dtype torch.float32"
    with pytest.raises(ValueError) as info:
        s.subset(torch.tensor([[0, 1]]))
    assert str(info.value) == "subset index must be 1-D, got shape (1, 2)"

    first = _set([1, 0, -1, -1], unlabelled=True, coarse=[0, 1, 1, 0])
    view = first.labelled()
    assert (
        view.labels.tolist() == [1, 0] and view.unlabelled is False and view.coarse_labels.tolist() == [0, 1]
    )
    assert view.images.data_ptr() == first.images.data_ptr()  # labelled images first: a view
    mixed = _set([-1, 1, -1, 0], unlabelled=True, coarse=[0, 1, 1, 0])
    picked = mixed.labelled()
    assert picked.labels.tolist() == [1, 0] and picked.coarse_labels.tolist() == [1, 0]
    assert torch.equal(picked.images, mixed.images[[1, 3]]) and picked.mean == mixed.mean
    assert (mixed.num_labelled, first.num_labelled, s.num_labelled) == (2, 2, 4)
    assert s.labelled() is s
    moved = s.to("cpu")
    assert torch.equal(moved.coarse_labels, s.coarse_labels) and moved.coarse_classes == ("x", "y")
    assert moved.classes == s.classes and moved.mean == s.mean and moved.unlabelled is False


def test_digits_split_rescale_and_refusals():
    from sklearn.datasets import load_digits as sk_digits

    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError) as info:
            load_digits(test_fraction=bad)
        assert str(info.value) == f"test_fraction must lie in (0, 1), got {bad}"
    bunch = sk_digits()
    train, test = load_digits()
    again, _ = load_digits(test_fraction=0.2, seed=0)
    assert torch.equal(train.images, again.images)
    other, _ = load_digits(seed=1)
    assert not torch.equal(other.labels, train.labels) or not torch.equal(other.images, train.images)
    assert train.classes == tuple(str(k) for k in range(10)) and len(train) + len(test) == 1797
    for c in range(10):  # round(0.2 n_c) test images of every class
        n_c = int((bunch.target == c).sum())
        assert int((test.labels == c).sum()) == round(0.2 * n_c)
    expected = np.rint(bunch.images * 255 / 16).astype(np.uint8)
    rows = {expected[i].tobytes() for i in range(len(expected))}
    assert all(img[0].numpy().tobytes() in rows for img in train.images[:50])
    assert train.images.is_contiguous() and test.images.is_contiguous()
    pixels = train.images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(train.mean, [pixels.mean()], rtol=1e-12)
    assert test.mean == train.mean and test.std == train.std
    small, small_test = load_digits(test_fraction=0.5)
    assert abs(len(small_test) - len(small)) <= 10


def test_cifar10_archives_decode_like_pillow_in_chunks(tmp_path, monkeypatch):
    folder, train_blobs, test_blobs = _folder(tmp_path)
    monkeypatch.setattr(datasets, "_DECODE_CHUNK", 2)
    train, test = load_cifar10(folder)
    assert train.images.shape == (5, 3, 32, 32) and test.images.shape == (2, 3, 32, 32)
    for got, blob in zip([*train.images, *test.images], [*train_blobs, *test_blobs], strict=True):
        assert np.abs(got.numpy().astype(int) - _pil(blob).astype(int)).max() <= 1
    assert train.labels.tolist() == [0, 1, 2, 3, 4] and test.labels.tolist() == [0, 3]
    assert train.labels.dtype == torch.int64 and train.classes == tuple(CLASSES) == test.classes
    pixels = train.images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(train.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-12)
    assert test.mean == train.mean and train.images.device == torch.device("cpu")


def test_int32_offsets_and_labels_are_widened(tmp_path):
    folder, train_blobs, _ = _folder(tmp_path)
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in train_blobs])]).astype(np.int32)
    _npz(
        folder / "train.npz", train_blobs, [1, 2, 3, 4, 5], offsets=offsets, y=np.arange(1, 6, dtype=np.int32)
    )
    train, _ = load_cifar10(folder)
    assert train.labels.dtype == torch.int64 and train.labels.tolist() == [1, 2, 3, 4, 5]


def test_byte_string_class_names_are_decoded(tmp_path):
    folder, train_blobs, test_blobs = _folder(tmp_path)
    names = np.asarray([name.encode() for name in CLASSES])  # dtype 'S': numpy's bytes
    _npz(folder / "train.npz", train_blobs, [i % 10 for i in range(len(train_blobs))], classes=names)
    _npz(folder / "test.npz", test_blobs, [0] * len(test_blobs), classes=names)
    train, test = load_cifar10(folder)
    assert train.classes == tuple(CLASSES) == test.classes


@pytest.mark.parametrize("culprit", [1, 3])
def test_a_bad_image_is_named_by_its_index(tmp_path, monkeypatch, culprit):
    folder, train_blobs, _ = _folder(tmp_path)
    monkeypatch.setattr(datasets, "_DECODE_CHUNK", 2)
    blobs = list(train_blobs)
    blobs[culprit] = blobs[culprit][:200]  # truncated
    _npz(folder / "train.npz", blobs, [0] * 5)
    with pytest.raises(ValueError) as info:
        load_cifar10(folder)
    assert str(info.value).startswith(f"{folder / 'train.npz'}: JPEG image {culprit} fails to decode (")
    blobs[culprit] = _jpeg(7, size=16)  # decodes, to the wrong size
    _npz(folder / "train.npz", blobs, [0] * 5)
    with pytest.raises(ValueError) as info:
        load_cifar10(folder)
    assert str(info.value) == (
        f"{folder / 'train.npz'}: JPEG image {culprit} decodes to shape (3, 16, 16), expected (3, 32, 32)"
    )


def test_decode_one_names_the_shape(tmp_path):
    data = torch.frombuffer(bytearray(_jpeg(1, size=8)), dtype=torch.uint8)
    with pytest.raises(ValueError) as info:
        datasets._decode_one(Path("p.npz"), 4, data, torch.device("cpu"))
    assert str(info.value) == "p.npz: JPEG image 4 decodes to shape (3, 8, 8), expected (3, 32, 32)"
    good = torch.frombuffer(bytearray(_jpeg(2)), dtype=torch.uint8)
    assert datasets._decode_one(Path("p.npz"), 0, good, torch.device("cpu")).shape == (3, 32, 32)


def test_the_decoded_cache_is_named_by_content_and_replaced_when_damaged(tmp_path, monkeypatch):
    folder, _, _ = _folder(tmp_path)
    cache = tmp_path / "a" / "cache"  # created with its parents
    first, first_test = load_cifar10(folder, cache_dir=cache)
    digest = hashlib.sha256((folder / "train.npz").read_bytes()).hexdigest()[:16]
    test_digest = hashlib.sha256((folder / "test.npz").read_bytes()).hexdigest()[:16]
    names = sorted(p.name for p in cache.iterdir())
    assert names == sorted([f"train-{digest}-uint8.npy", f"test-{test_digest}-uint8.npy"])
    stored = np.load(cache / f"train-{digest}-uint8.npy")
    assert np.array_equal(stored, first.images.numpy())

    real = datasets._decode_jpegs
    calls = []
    monkeypatch.setattr(datasets, "_decode_jpegs", lambda *args: calls.append(args[0].name) or real(*args))
    again, again_test = load_cifar10(folder, cache_dir=cache)
    assert (
        calls == []
        and torch.equal(again.images, first.images)
        and torch.equal(again_test.labels, first_test.labels)
    )
    assert again.labels.tolist() == first.labels.tolist()
    (cache / f"train-{digest}-uint8.npy").write_bytes(b"garbage")
    again, _ = load_cifar10(folder, cache_dir=cache)
    assert calls == ["train.npz"] and torch.equal(again.images, first.images)
    assert np.array_equal(np.load(cache / f"train-{digest}-uint8.npy"), first.images.numpy())  # replaced
    np.save(cache / f"train-{digest}-uint8.npy", np.zeros((4, 3, 32, 32), np.uint8))  # wrong count
    load_cifar10(folder, cache_dir=cache)
    np.save(cache / f"train-{digest}-uint8.npy", np.zeros((5, 3, 32, 32), np.int16))  # wrong dtype
    load_cifar10(folder, cache_dir=cache)
    assert calls == ["train.npz"] * 3
    home_cache = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home_cache))
    load_cifar10(folder, cache_dir="~/c")
    assert len(list((home_cache / "c").iterdir())) == 2


def test_file_digest_reads_in_blocks(tmp_path):
    path = tmp_path / "f"
    data = bytes(range(256)) * 20_000  # 5 MB: more than one 4 MiB block
    path.write_bytes(data)
    assert datasets._file_digest(path) == hashlib.sha256(data).hexdigest()[:16]


def test_folder_and_file_refusals(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(tmp_path / "nowhere")
    assert str(info.value) == f"CIFAR-10 data folder {str(tmp_path / 'nowhere')!r} does not exist. {HELP}"
    folder, train_blobs, _ = _folder(tmp_path)
    (folder / "test.npz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(folder)
    assert str(info.value) == f"{folder / 'test.npz'} is missing. {HELP}"
    _npz(folder / "test.npz", train_blobs[:1], [0], classes=np.asarray(["x"] * 10))
    with pytest.raises(ValueError) as info:
        load_cifar10(folder)
    assert str(info.value) == (
        f"{folder / 'test.npz'}: classes {('x',) * 10} differ from those of {folder / 'train.npz'}: "
        f"{tuple(CLASSES)}"
    )
    with pytest.raises(ValueError) as info:
        load_cifar10(folder, cache_dir=folder / ".")
    assert str(info.value) == f"cache_dir must not be the data folder {folder} (it is never written to)"


def _damage(folder: Path, blobs: list[bytes], how: str) -> str:
    path = folder / "train.npz"
    size = sum(len(b) for b in blobs)
    good_offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    if how == "npy":
        with path.open("wb") as f:
            np.save(f, np.zeros(3))
        return f"{path}: cannot be read as an .npz archive (a single .npy array, not an .npz archive). {HELP}"
    if how == "missing":
        _npz(path, blobs, [0] * len(blobs), y=None, offsets=None)
        return f"{path}: missing array(s) ['offsets', 'y'] (found ['classes', 'jpeg']). {HELP}"
    if how == "jpeg int":
        _npz(path, blobs, [0] * len(blobs), jpeg=np.zeros(size, np.int64))
        return f"{path}: `jpeg` must be a 1-D uint8 array, got int64 ({size},)"
    if how == "jpeg 2-D":
        _npz(path, blobs, [0] * len(blobs), jpeg=np.zeros((1, size), np.uint8))
        return f"{path}: `jpeg` must be a 1-D uint8 array, got uint8 (1, {size})"
    if how == "offsets float":
        _npz(path, blobs, [0] * len(blobs), offsets=good_offsets.astype(np.float64))
        return f"{path}: `offsets` must be a 1-D integer array (N+1,), got float64 ({len(blobs) + 1},)"
    if how == "offsets 2-D":
        _npz(path, blobs, [0] * len(blobs), offsets=good_offsets[None])
        return f"{path}: `offsets` must be a 1-D integer array (N+1,), got int64 (1, {len(blobs) + 1})"
    if how == "offsets one":
        _npz(path, blobs, [], offsets=np.zeros(1, np.int64))
        return f"{path}: `offsets` must be a 1-D integer array (N+1,), got int64 (1,)"
    if how == "y float":
        _npz(path, blobs, [0] * len(blobs), y=np.zeros(len(blobs)))
        return f"{path}: `y` must be a 1-D integer array, got float64 ({len(blobs)},)"
    if how == "y 2-D":
        _npz(path, blobs, [0] * len(blobs), y=np.zeros((1, len(blobs)), np.int64))
        return f"{path}: `y` must be a 1-D integer array, got int64 (1, {len(blobs)})"
    if how == "classes int":
        _npz(path, blobs, [0] * len(blobs), classes=np.arange(10))
        return f"{path}: `classes` must be a 1-D array of str, got int64 (10,)"
    if how == "classes empty":
        _npz(path, blobs, [0] * len(blobs), classes=np.asarray([], dtype="<U2"))
        return f"{path}: `classes` must be a 1-D array of str, got <U2 (0,)"
    if how == "classes 2-D":
        _npz(path, blobs, [0] * len(blobs), classes=np.asarray([CLASSES]))
        return f"{path}: `classes` must be a 1-D array of str, got <U2 (1, 10)"
    if how == "count":
        _npz(path, blobs, [0] * (len(blobs) - 1))
        n = len(blobs) - 1
        return f"{path}: `offsets` has {len(blobs) + 1} entries but `y` has {n} labels (need N+1 = {n + 1})"
    if how == "first offset":
        _npz(path, blobs, [0] * len(blobs), offsets=good_offsets + 1)
        return f"{path}: `offsets[0]` must be 0, got 1"
    if how == "not increasing":
        bad = good_offsets.copy()
        bad[2] = bad[1]
        _npz(path, blobs, [0] * len(blobs), offsets=bad)
        return f"{path}: `offsets` must be strictly increasing; image 1 has offsets [{bad[1]}, {bad[2]})"
    if how == "one byte then empty":  # the first empty image is named, not the one-byte one before it
        bad = good_offsets.copy()
        bad[1] = 1
        bad[3] = bad[2]
        _npz(path, blobs, [0] * len(blobs), offsets=bad)
        return f"{path}: `offsets` must be strictly increasing; image 2 has offsets [{bad[2]}, {bad[3]})"
    if how == "last offset":
        bad = good_offsets.copy()
        bad[-1] -= 1
        _npz(path, blobs, [0] * len(blobs), offsets=bad)
        return f"{path}: `offsets[-1]` = {bad[-1]} does not match the {size} bytes of `jpeg`"
    if how == "label 10":
        _npz(path, blobs, [0, 10, 3, -1, 10])
        return f"{path}: label y[1] = 10 is outside [0, 10) for 10 classes (3 bad labels in all)"
    if how == "label -1":
        _npz(path, blobs, [0, 1, 3, -1, 9])
        return f"{path}: label y[3] = -1 is outside [0, 10) for 10 classes (1 bad labels in all)"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how",
    [
        "npy",
        "missing",
        "jpeg int",
        "jpeg 2-D",
        "offsets float",
        "offsets 2-D",
        "offsets one",
        "y float",
        "y 2-D",
        "classes int",
        "classes empty",
        "classes 2-D",
        "count",
        "first offset",
        "not increasing",
        "one byte then empty",
        "last offset",
        "label 10",
        "label -1",
    ],
)
def test_archive_damage_is_named(tmp_path, how):
    folder, train_blobs, _ = _folder(tmp_path)
    expected = _damage(folder, train_blobs, how)
    with pytest.raises(ValueError) as info:
        load_cifar10(folder)
    assert str(info.value) == expected


def test_a_file_that_is_no_archive(tmp_path):
    folder, _, _ = _folder(tmp_path)
    (folder / "train.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(ValueError) as info:
        load_cifar10(folder)
    message = str(info.value)
    assert message.startswith(f"{folder / 'train.npz'}: cannot be read as an .npz archive (")
    assert message.endswith(f"). {HELP}") and isinstance(info.value.__cause__, Exception)


def test_coarse_labels_go_with_their_names_and_are_checked():
    images, labels = torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1])

    def make(coarse, names):
        return ImageSet(images, labels, ("a", "b"), (0.5,), (0.25,), False, coarse, names)

    cases = [
        (
            torch.tensor([0, 1, 0, 1]),
            None,
            ValueError,
            "ImageSet.coarse_labels and ImageSet.coarse_classes go together (both or neither)",
        ),
        (
            None,
            ("x", "y"),
            ValueError,
            "ImageSet.coarse_labels and ImageSet.coarse_classes go together (both or neither)",
        ),
        (
            torch.tensor([0.0, 1, 0, 1]),
            ("x", "y"),
            TypeError,
            "ImageSet.coarse_labels must be an int64 torch.Tensor",
        ),
        ([0, 1, 0, 1], ("x", "y"), TypeError, "ImageSet.coarse_labels must be an int64 torch.Tensor"),
        (
            torch.tensor([0, 1, 0]),
            ("x", "y"),
            ValueError,
            "ImageSet.coarse_labels must have shape (4,) on cpu, got (3,) on cpu",
        ),
        (
            torch.tensor([0, 1, 2, 1]),
            ("x", "y"),
            ValueError,
            "ImageSet.coarse_labels must lie in [0, 2) (one per coarse class name)",
        ),
        (
            torch.tensor([0, -1, 0, 1]),
            ("x", "y"),
            ValueError,
            "ImageSet.coarse_labels must lie in [0, 2) (one per coarse class name)",
        ),
    ]
    for coarse, names, kind, message in cases:
        with pytest.raises(kind) as info:
            make(coarse, names)
        assert str(info.value) == message
    ok = make(torch.tensor([1, 1, 0, 1]), ["x", "y"])
    assert ok.coarse_classes == ("x", "y") and isinstance(ok.coarse_classes, tuple)
    empty = ImageSet(images[:0], labels[:0], ("a",), (0.5,), (0.25,), False, labels[:0], ("x",))
    assert len(empty) == 0


def test_image_set_messages():
    images, labels = torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1])

    def make(**overrides):
        args = dict(images=images, labels=labels, classes=("a", "b"), mean=(0.5,), std=(0.25,))
        return ImageSet(**{**args, **overrides})

    cases = [
        (dict(images=[1]), TypeError, "ImageSet.images must be a torch.Tensor, got list"),
        (dict(labels=[0, 1, 0, 1]), TypeError, "ImageSet.labels must be a torch.Tensor, got list"),
        (
            dict(labels=labels[:3]),
            ValueError,
            "ImageSet.labels must have shape (4,) to match images, got (3,)",
        ),
        (dict(labels=labels.to("meta")), ValueError, "ImageSet.labels is on meta but images are on cpu"),
        (dict(classes=()), TypeError, "ImageSet.classes must be a non-empty sequence of str"),
        (
            dict(labels=torch.tensor([0, -1, 1, 0])),
            ValueError,
            "ImageSet.labels must lie in [0, 2) (one per class name); got values in [-1, 1]",
        ),
        (
            dict(labels=torch.tensor([0, -1, 5, 0]), unlabelled=True),
            ValueError,
            "ImageSet.labels must lie in [0, 2) (one per class name) or -1 (unlabelled); got values in "
            "[-1, 5]",
        ),
        (dict(std=(0.25, 0.5)), ValueError, "ImageSet.std needs one value per channel (1), got 2"),
        (dict(mean=(0.25, 0.5)), ValueError, "ImageSet.mean needs one value per channel (1), got 2"),
    ]
    for overrides, kind, message in cases:
        with pytest.raises(kind) as info:
            make(**overrides)
        assert str(info.value) == message


def test_pickled_arrays_and_one_byte_images_are_refused(tmp_path):
    folder, train_blobs, _ = _folder(tmp_path)
    path = folder / "train.npz"
    _npz(path, train_blobs, [0] * 5, classes=np.asarray(CLASSES, dtype=object))
    with pytest.raises(ValueError) as info:
        load_cifar10(folder)
    assert str(info.value).startswith(
        f"{path}: cannot be read as an .npz archive (Object arrays cannot be loaded"
    )
    blobs = list(train_blobs)
    blobs[2] = b"\xff"  # one byte: a valid offset, not a valid image
    _npz(path, blobs, [0] * 5)
    with pytest.raises(ValueError) as info:
        load_cifar10(folder)
    assert str(info.value).startswith(f"{path}: JPEG image 2 fails to decode (")


def test_the_decoders_notice_is_silenced(tmp_path):
    import warnings

    folder, _, _ = _folder(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, _ = load_cifar10(folder)
    assert len(train) == 5
