"""STL-10's reader (vprob.data.stl10) on a miniature copy in torchvision's ``stl10_binary`` layout, written
here from the format's description (each image's channel planes stored column by column, uint8 labels 1..10,
class_names.txt): where the folder is found, every refusal's whole message, reading in chunks (the chunk size
made small), train + unlabeled or train alone, the statistics of the training set, the resize against
torchvision, and the memory check's arguments. Written for #19 (mutation testing left these unpinned by the
layout tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vprob.data import stl10
from vprob.data.stl10 import STL10_HELP, load_stl10, stl10_classes, stl10_folder

NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def _write(folder: Path, n_train=5, n_unlabeled=3, n_test=2, seed=0) -> dict[str, tuple]:
    """The binary files; returns each split's (images (N, 3, 96, 96) uint8, labels 0..9 or None)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for split, n in (("train", n_train), ("unlabeled", n_unlabeled), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        # STL-10 stores each channel plane column by column: the file's (c, x, y) is the image's (c, y, x)
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        labels = None
        if split != "unlabeled":
            labels = rng.integers(0, 10, n)
            (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        truth[split] = (images, labels)
    (folder / "class_names.txt").write_text("\n".join(NAMES) + "\n\n")
    return truth


def test_the_folder_is_found_by_either_file(tmp_path):
    with pytest.raises(ValueError) as info:
        stl10_folder(None)
    assert str(info.value) == f"data set 'stl10' needs a data folder (--data-dir). {STL10_HELP}"
    with pytest.raises(FileNotFoundError) as info:
        stl10_folder(tmp_path / "nowhere")
    assert str(info.value) == f"STL-10 data folder {str(tmp_path / 'nowhere')!r} does not exist. {STL10_HELP}"
    with pytest.raises(FileNotFoundError) as info:
        stl10_folder(tmp_path)
    assert (
        str(info.value) == f"{tmp_path} holds neither stl10_binary/ nor its files (train_X.bin). {STL10_HELP}"
    )
    only_names = tmp_path / "a" / "stl10_binary"
    only_names.mkdir(parents=True)
    (only_names / "class_names.txt").write_text("x\n")
    assert stl10_folder(tmp_path / "a") == only_names
    only_images = tmp_path / "b"
    only_images.mkdir()
    (only_images / "train_X.bin").write_bytes(b"")
    assert stl10_folder(only_images) == only_images  # the stl10_binary folder itself
    (only_images / "train_X.bin").unlink()
    (only_images / "train_x.bin").write_bytes(b"")  # names are case-sensitive
    with pytest.raises(FileNotFoundError):
        stl10_folder(only_images)


def test_class_names_one_a_line_and_their_refusals(tmp_path):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    (folder / "train_X.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as info:
        stl10_classes(tmp_path)
    assert str(info.value) == f"{folder / 'class_names.txt'} is missing. {STL10_HELP}"
    (folder / "class_names.txt").write_text("\n  \n")
    with pytest.raises(ValueError) as info:
        stl10_classes(tmp_path)
    assert (
        str(info.value)
        == f"{folder / 'class_names.txt'} names no classes (one name a line expected). {STL10_HELP}"
    )
    (folder / "class_names.txt").write_bytes("  caf\u00e9 \n\nbird\n".encode())
    assert stl10_classes(tmp_path) == ("caf\u00e9", "bird")


def test_images_and_labels_read_in_chunks_and_statistics_of_the_training_set(tmp_path, monkeypatch):
    truth = _write(tmp_path / "stl10_binary")
    monkeypatch.setattr(stl10, "_CHUNK", 2)  # 5 train images: chunks of 2, 2 and 1
    fits = []
    monkeypatch.setattr(stl10, "check_fits_device", lambda *args: fits.append(args))
    train, test = load_stl10(tmp_path)
    assert train.images.device == torch.device("cpu")
    images = np.concatenate([truth["train"][0], truth["unlabeled"][0]])
    assert np.array_equal(train.images.numpy(), images)
    assert np.array_equal(test.images.numpy(), truth["test"][0])
    assert (
        train.labels.tolist() == [*truth["train"][1].tolist(), -1, -1, -1]
        and train.labels.dtype == torch.int64
    )
    assert test.labels.tolist() == truth["test"][1].tolist()
    assert train.unlabelled is True and test.unlabelled is False and train.classes == tuple(NAMES)
    pixels = images.astype(np.float64) / 255
    np.testing.assert_allclose(train.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(train.std, pixels.std(axis=(0, 2, 3)), rtol=1e-12)
    assert test.mean == train.mean and test.std == train.std
    assert fits == [(10, 3, 96, torch.device("cpu"), str(tmp_path / "stl10_binary"))]

    alone, _ = load_stl10(tmp_path, unlabeled=False)
    assert np.array_equal(alone.images.numpy(), truth["train"][0]) and alone.unlabelled is False
    assert alone.labels.tolist() == truth["train"][1].tolist()
    np.testing.assert_allclose(alone.mean, (truth["train"][0] / 255).mean(axis=(0, 2, 3)), rtol=1e-12)
    assert fits[-1][0] == 7


def test_resized_in_chunks_like_torchvision(tmp_path, monkeypatch):
    from torchvision.transforms.v2 import functional as TF

    truth = _write(tmp_path / "stl10_binary", n_train=3, n_unlabeled=2, n_test=1)
    monkeypatch.setattr(stl10, "_CHUNK", 2)
    fits = []
    monkeypatch.setattr(stl10, "check_fits_device", lambda *args: fits.append(args))
    train, test = load_stl10(tmp_path, image_size=40)
    images = torch.from_numpy(np.concatenate([truth["train"][0], truth["unlabeled"][0]]))
    ref = TF.resize(images.float(), [40], antialias=True).round()
    assert train.images.shape == (5, 3, 40, 40) and test.images.shape == (1, 3, 40, 40)
    assert (train.images.float() - ref).abs().max() <= 1
    assert fits[0][2] == 40
    pixels = train.images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(train.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-12)


def test_damaged_files_are_refused_by_name(tmp_path):
    folder = tmp_path / "stl10_binary"
    _write(folder)
    (folder / "unlabeled_X.bin").write_bytes(b"")
    with pytest.raises(ValueError) as info:
        load_stl10(tmp_path)
    assert str(info.value) == (
        f"{folder / 'unlabeled_X.bin'}: 0 bytes is not a whole number of 3x96x96 images (27,648 bytes "
        f"each): a truncated or foreign file. {STL10_HELP}"
    )
    (folder / "unlabeled_X.bin").write_bytes(b"\0" * 27_649)
    with pytest.raises(ValueError, match="27,649 bytes is not a whole number"):
        load_stl10(tmp_path)
    assert load_stl10(tmp_path, unlabeled=False)[0].images.shape[0] == 5  # unlabeled not read
    (folder / "test_y.bin").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_stl10(tmp_path, unlabeled=False)
    assert str(info.value) == f"{folder / 'test_y.bin'} is missing. {STL10_HELP}"


def test_a_file_that_ends_while_reading(tmp_path):
    folder = tmp_path / "stl10_binary"
    _write(folder, n_train=2)
    out = np.empty((3, 3, 96, 96), dtype=np.uint8)
    with pytest.raises(ValueError) as info:
        stl10._read_images(folder / "train_X.bin", out)
    assert str(info.value) == f"{folder / 'train_X.bin'}: ends early (read while loading). {STL10_HELP}"
