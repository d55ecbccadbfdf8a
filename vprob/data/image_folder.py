"""A folder of JPEG/PNG images in torchvision's ``ImageFolder`` layout: Tiny-ImageNet (after the usual
reorganisation of its val folder), ImageNet-100, a user's own.

- ``ROOT/train/<class>/...`` and ``ROOT/val/<class>/...`` (or ``ROOT/test/<class>/...``): classes are the
  sub-folder names of ``train`` in sorted order (as torchvision's ``ImageFolder``), images are found at any
  depth inside a class folder (Tiny-ImageNet keeps them in ``<class>/images/``). Files ending in ``.jpg``,
  ``.jpeg`` or ``.png`` (any case) are images; other files and names starting with ``.`` are ignored.
- ``ROOT/train/*.png`` (images directly in ``train``, no class folders): an unlabelled set; it trains
  self-supervised methods and evaluation is skipped (no labelled split).

Conversions (documented, not errors): grayscale, palette and RGBA images become RGB (alpha dropped); images
of any size are resized (shorter side to the image size, centre crop). Errors: a missing ``train`` folder, a
class folder with no images, a ``val`` class that ``train`` does not have, ``train`` mixing class folders
with loose images, an unreadable or corrupt image (naming the file).

Decoding happens once: the decoded uint8 arrays are cached (:mod:`vprob.data.cache`), keyed by every file's
path, size and modification time, so a second run reads one file instead of decoding every image.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vprob.data.cache import cached_arrays, fingerprint
from vprob.data.datasets import UNLABELLED, ImageSet, channel_stats
from vprob.data.decode import check_fits_device, decode_files

__all__ = ["IMAGE_FOLDER_HELP", "IMAGE_SUFFIXES", "image_folder_classes", "load_image_folder"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
UNLABELLED_CLASSES = ("unlabelled",)  # the class list of a set without classes (an ImageSet needs one)
IMAGE_FOLDER_HELP = (
    "An image folder is read from DIR/train/<class>/* and DIR/val/<class>/* (or DIR/test/<class>/*) of JPEG "
    "or PNG files, as torchvision's ImageFolder reads it, or from DIR/train/* images without classes "
    "(self-supervised training only; evaluation is skipped); pass DIR with --data-dir. Tiny-ImageNet "
    "(http://cs231n.stanford.edu/tiny-imagenet-200.zip) needs its val/images sorted into val/<class>/ "
    "folders by val/val_annotations.txt first; ImageNet-100 is a 100-class subset of ImageNet's train/val "
    "folders. vprob never downloads."
)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _images_under(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and all(_visible(part) for part in p.relative_to(folder).parents)  # "." has the name "": visible
        and _visible(p)
    )


def _split_files(folder: Path) -> tuple[tuple[str, ...] | None, list[Path], list[int]]:
    """(class names or None for an unlabelled folder, image paths, labels) of one split folder."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))
    loose = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and _visible(p)
    )
    if class_dirs and loose:
        raise ValueError(
            f"{folder} mixes class folders ({class_dirs[0].name}/, ...) with images directly "
            f"in it ({loose[0].name}, ...): put every image in a class folder, or none. "
            f"{IMAGE_FOLDER_HELP}"
        )
    if not class_dirs:
        if not loose:
            raise ValueError(
                f"{folder} holds no JPEG or PNG images and no class folders. {IMAGE_FOLDER_HELP}"
            )
        return None, loose, [UNLABELLED] * len(loose)
    paths, labels = [], []
    for label, class_dir in enumerate(class_dirs):
        files = _images_under(class_dir)
        if not files:
            raise ValueError(
                f"class folder {class_dir} holds no JPEG or PNG images (an empty class). {IMAGE_FOLDER_HELP}"
            )
        paths += files
        labels += [label] * len(files)
    return tuple(p.name for p in class_dirs), paths, labels


def _root(data_dir: str | os.PathLike | None) -> Path:
    if data_dir is None:
        raise ValueError(f"data set 'imagefolder' needs a data folder (--data-dir). {IMAGE_FOLDER_HELP}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist. {IMAGE_FOLDER_HELP}")
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"{root / 'train'} is missing. {IMAGE_FOLDER_HELP}")
    return root


def _eval_folder(root: Path) -> Path | None:
    for name in ("val", "test"):
        if (root / name).is_dir():
            return root / name
    return None


def image_folder_classes(data_dir: str | os.PathLike | None) -> tuple[str, ...]:
    """The class names (sorted sub-folders of ``train``), or ``("unlabelled",)`` for an unlabelled folder."""
    train = _root(data_dir) / "train"
    names = tuple(sorted(p.name for p in train.iterdir() if p.is_dir() and _visible(p)))
    return names or UNLABELLED_CLASSES


def _decoded(
    root: Path,
    split: str,
    paths: list[Path],
    labels: list[int],
    image_size: int,
    cache_dir: str | os.PathLike | None,
) -> tuple[np.ndarray, np.ndarray]:
    if not paths:  # no such split: nothing to decode or cache
        return np.empty((0, 3, image_size, image_size), np.uint8), np.empty(0, np.int64)
    key = fingerprint(root, paths, image_size=image_size, labels=labels)

    def build() -> dict[str, np.ndarray]:
        return {"images": decode_files(paths, image_size).numpy(), "labels": np.asarray(labels, np.int64)}

    arrays, _ = cached_arrays("imagefolder", split, root, image_size, key, build, cache_dir)
    return arrays["images"], arrays["labels"]


def load_image_folder(
    data_dir: str | os.PathLike | None,
    device: torch.device | str = "cpu",
    image_size: int = 64,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[ImageSet, ImageSet]:
    """(train, test) uint8 (N, 3, image_size, image_size) on ``device`` from an image folder.

    ``test`` is the ``val`` (else ``test``) split, labelled with train's classes; when there is none, or
    train is unlabelled, ``test`` is an empty set and ``train.labelled()`` may be empty: evaluation is then
    skipped (:func:`vprob.data.registry.evaluation_sets` says why).
    """
    device = torch.device(device)
    root = _root(data_dir)
    classes, paths, labels = _split_files(root / "train")
    eval_dir = _eval_folder(root)
    eval_paths: list[Path] = []
    eval_labels: list[int] = []
    if eval_dir is not None and classes is not None:
        eval_classes, eval_paths, local = _split_files(eval_dir)
        if eval_classes is None:
            raise ValueError(
                f"{eval_dir} holds images without class folders, but train has classes: sort "
                f"them into {eval_dir.name}/<class>/ folders. {IMAGE_FOLDER_HELP}"
            )
        unknown = [c for c in eval_classes if c not in classes]
        if unknown:
            raise ValueError(
                f"{eval_dir}: class folder(s) {unknown} are not classes of {root / 'train'} "
                f"(labels outside the class list {list(classes)[:10]}...). {IMAGE_FOLDER_HELP}"
            )
        index = {name: classes.index(name) for name in eval_classes}
        eval_labels = [index[eval_classes[y]] for y in local]
    check_fits_device(len(paths) + len(eval_paths), 3, image_size, device, str(root))
    train_x, train_y = _decoded(root, "train", paths, labels, image_size, cache_dir)
    test_x, test_y = _decoded(root, "test", eval_paths, eval_labels, image_size, cache_dir)
    tx = torch.from_numpy(train_x).to(device)
    mean, std = channel_stats(tx)
    names = classes or UNLABELLED_CLASSES
    train = ImageSet(tx, torch.from_numpy(train_y).to(device), names, mean, std, unlabelled=classes is None)
    test = ImageSet(
        torch.from_numpy(test_x).to(device), torch.from_numpy(test_y).to(device), names, mean, std
    )
    return train, test
