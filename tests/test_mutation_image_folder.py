"""Image folders (vprob.data.image_folder) built here from tiny PNG files whose one colour encodes the file:
which files count (hidden names and folders, nested folders, suffixes), the class names, the val / test
choice, every refusal's whole message, an unlabelled train folder with a val folder beside it, the cache's
file per split and its invalidation when a new train class shifts the val labels, the defaults and the memory
check's arguments. Written for #19 (mutation testing left these unpinned by the layout tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vprob.data import image_folder
from vprob.data.image_folder import IMAGE_FOLDER_HELP, image_folder_classes, load_image_folder


def _png(path: Path, value: int, size: int = 4) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)
    return path


def _values(image_set) -> list[int]:
    """Each image's colour (the images are flat)."""
    return [int(v) for v in image_set.images[:, 0, 0, 0]]


def test_which_files_are_images_and_the_class_names(tmp_path):
    root = tmp_path / "data"
    _png(root / "train" / "cat" / "a.png", 10)
    _png(root / "train" / "cat" / "images" / "b.PNG", 20)  # any depth, any case of the suffix
    _png(root / "train" / "cat" / ".c.png", 30)  # hidden file
    _png(root / "train" / "cat" / ".thumbs" / "d.png", 40)  # inside a hidden folder
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    _png(root / "train" / "ant" / "e.jpg.png", 50)
    _png(root / "train" / ".hidden" / "f.png", 60)  # a hidden class folder
    (root / "train" / "README").write_text("a file beside the class folders")
    assert image_folder_classes(root) == ("ant", "cat")
    train, test = load_image_folder(root, image_size=4, cache_dir=tmp_path / "cache")
    assert train.classes == ("ant", "cat") and _values(train) == [50, 10, 20]
    assert train.labels.tolist() == [0, 1, 1] and train.unlabelled is False
    assert len(test) == 0 and test.images.shape == (0, 3, 4, 4) and test.classes == ("ant", "cat")


def test_unlabelled_folder_names_its_one_class_and_ignores_a_val_folder(tmp_path):
    root = tmp_path / "data"
    _png(root / "train" / "a.png", 1)
    _png(root / "train" / "b.png", 2)
    _png(root / "val" / "cat" / "c.png", 3)  # nothing to label it with: ignored
    assert image_folder_classes(root) == ("unlabelled",)
    train, test = load_image_folder(root, image_size=4, cache_dir=tmp_path / "cache")
    assert train.unlabelled is True and train.labels.tolist() == [-1, -1] and train.classes == ("unlabelled",)
    assert len(test) == 0


def test_val_is_preferred_and_test_is_the_fallback(tmp_path):
    root = tmp_path / "data"
    _png(root / "train" / "cat" / "a.png", 1)
    _png(root / "train" / "dog" / "b.png", 2)
    _png(root / "test" / "dog" / "c.png", 3)
    _, test = load_image_folder(root, image_size=4, cache_dir=tmp_path / "c1")
    assert _values(test) == [3] and test.labels.tolist() == [1]
    _png(root / "val" / "cat" / "d.png", 4)
    _, test = load_image_folder(root, image_size=4, cache_dir=tmp_path / "c2")
    assert _values(test) == [4] and test.labels.tolist() == [0]


def test_refusals_name_the_folder(tmp_path):
    with pytest.raises(ValueError) as info:
        load_image_folder(None)
    assert str(info.value) == f"data set 'imagefolder' needs a data folder (--data-dir). {IMAGE_FOLDER_HELP}"
    with pytest.raises(FileNotFoundError) as info:
        image_folder_classes(tmp_path / "nowhere")
    assert (
        str(info.value) == f"image folder {str(tmp_path / 'nowhere')!r} does not exist. {IMAGE_FOLDER_HELP}"
    )
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(FileNotFoundError) as info:
        load_image_folder(root)
    assert str(info.value) == f"{root / 'train'} is missing. {IMAGE_FOLDER_HELP}"
    (root / "train").mkdir()
    with pytest.raises(ValueError) as info:
        load_image_folder(root)
    assert str(info.value) == (
        f"{root / 'train'} holds no JPEG or PNG images and no class folders. {IMAGE_FOLDER_HELP}"
    )
    _png(root / "train" / "b" / "x.png", 1)
    _png(root / "train" / "c" / "y.png", 1)
    _png(root / "train" / "z.png", 1)
    with pytest.raises(ValueError) as info:
        load_image_folder(root)
    assert str(info.value) == (
        f"{root / 'train'} mixes class folders (b/, ...) with images directly in it (z.png, ...): put every "
        f"image in a class folder, or none. {IMAGE_FOLDER_HELP}"
    )
    (root / "train" / "z.png").unlink()
    (root / "train" / "e").mkdir()
    with pytest.raises(ValueError) as info:
        load_image_folder(root)
    assert str(info.value) == (
        f"class folder {root / 'train' / 'e'} holds no JPEG or PNG images (an empty class). "
        f"{IMAGE_FOLDER_HELP}"
    )


def test_val_refusals(tmp_path):
    root = tmp_path / "data"
    for k in range(11):
        _png(root / "train" / f"c{k:02d}" / "a.png", k)
    _png(root / "val" / "loose.png", 1)
    with pytest.raises(ValueError) as info:
        load_image_folder(root, image_size=4)
    assert str(info.value) == (
        f"{root / 'val'} holds images without class folders, but train has classes: sort them into "
        f"val/<class>/ folders. {IMAGE_FOLDER_HELP}"
    )
    (root / "val" / "loose.png").unlink()
    _png(root / "val" / "zebra" / "z.png", 1)
    _png(root / "val" / "c03" / "z.png", 1)
    with pytest.raises(ValueError) as info:
        load_image_folder(root, image_size=4)
    first_ten = [f"c{k:02d}" for k in range(10)]
    assert str(info.value) == (
        f"{root / 'val'}: class folder(s) ['zebra'] are not classes of {root / 'train'} (labels outside the "
        f"class list {first_ten}...). {IMAGE_FOLDER_HELP}"
    )


def test_defaults_device_size_and_the_memory_check(tmp_path, monkeypatch):
    root = tmp_path / "data"
    _png(root / "train" / "cat" / "a.png", 7, size=8)
    _png(root / "train" / "dog" / "b.png", 9, size=8)
    _png(root / "val" / "dog" / "c.png", 11, size=8)
    fits = []
    monkeypatch.setattr(image_folder, "check_fits_device", lambda *args: fits.append(args))
    monkeypatch.setenv("VPROB_CACHE_DIR", str(tmp_path / "env-cache"))
    train, test = load_image_folder(root)
    assert train.images.shape == (2, 3, 64, 64) and test.images.shape == (1, 3, 64, 64)
    assert train.images.device == torch.device("cpu") and test.labels.tolist() == [1]
    assert fits == [(3, 3, 64, torch.device("cpu"), str(root))]
    names = sorted(
        p.name.split("-")[:3] == ["imagefolder", "test", "64px"] for p in (tmp_path / "env-cache").iterdir()
    )
    assert names == [False, True]  # one cache file per split: train and test
    assert train.mean == pytest.approx((8 / 255,) * 3) and test.mean == train.mean  # train's statistics


def test_the_val_cache_follows_a_shift_of_its_labels(tmp_path):
    """A new train class sorted first shifts every val label by one while val's files stay the same: the
    val cache must not serve the old labels."""
    root = tmp_path / "data"
    _png(root / "train" / "cat" / "a.png", 1)
    _png(root / "train" / "dog" / "b.png", 2)
    _png(root / "val" / "dog" / "c.png", 3)
    cache = tmp_path / "cache"
    _, test = load_image_folder(root, image_size=4, cache_dir=cache)
    assert test.labels.tolist() == [1]
    _png(root / "train" / "ant" / "d.png", 4)
    train, test = load_image_folder(root, image_size=4, cache_dir=cache)
    assert train.classes == ("ant", "cat", "dog") and test.labels.tolist() == [2]
    assert test.labels.dtype == torch.int64
