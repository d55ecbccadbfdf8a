"""STL-10 in torchvision's on-disk layout (``stl10_binary``, the binary archive unpacked), read directly.

``ROOT/stl10_binary/``: ``{train,test,unlabeled}_X.bin`` hold uint8 images one after another, each 3 x 96 x 96
in column-major order (channel planes, each written column by column); ``{train,test}_y.bin`` one uint8
label per image, 1..10; ``class_names.txt`` one name per line. The real set has 5,000 train, 8,000 test and
100,000 unlabeled images.

Self-supervised training uses train + unlabeled (105,000 images; the unlabeled ones carry the label -1 on
an ``ImageSet(unlabelled=True)`` and come after the labelled ones, so ``train.labelled()`` is the 5,000
labelled train images as a view); kNN and linear evaluation fit on ``train.labelled()`` and score on test.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vprob.data.datasets import UNLABELLED, ImageSet, channel_stats
from vprob.data.decode import check_fits_device, resize_square

__all__ = ["STL10_HELP", "STL10_SIZE", "load_stl10", "stl10_classes", "stl10_folder"]

STL10_SIZE = 96
_IMAGE_BYTES = 3 * STL10_SIZE * STL10_SIZE
_CHUNK = 4096  # images read (and transposed) at a time: bounds the extra host memory to ~110 MB
STL10_HELP = (
    "STL-10 is read from torchvision's layout DIR/stl10_binary/{train_X.bin, train_y.bin, test_X.bin, "
    "test_y.bin, unlabeled_X.bin, class_names.txt} (pass DIR, or the stl10_binary folder itself, with "
    "--data-dir); the binary archive stl10_binary.tar.gz comes from https://cs.stanford.edu/~acoates/stl10/ "
    "or from torchvision.datasets.STL10(root=DIR, download=True) run once on a machine with network access; "
    "vprob never downloads."
)


def stl10_folder(data_dir: str | os.PathLike | None) -> Path:
    """The ``stl10_binary`` folder under ``data_dir`` (or ``data_dir`` itself when it is one)."""
    if data_dir is None:
        raise ValueError(f"data set 'stl10' needs a data folder (--data-dir). {STL10_HELP}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"STL-10 data folder {str(root)!r} does not exist. {STL10_HELP}")
    for folder in (root / "stl10_binary", root):
        if (folder / "train_X.bin").is_file() or (folder / "class_names.txt").is_file():
            return folder
    raise FileNotFoundError(f"{root} holds neither stl10_binary/ nor its files (train_X.bin). {STL10_HELP}")


def stl10_classes(data_dir: str | os.PathLike | None) -> tuple[str, ...]:
    """The class names in ``class_names.txt`` (one a line; blank lines ignored)."""
    path = stl10_folder(data_dir) / "class_names.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. {STL10_HELP}")
    names = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not names:
        raise ValueError(f"{path} names no classes (one name a line expected). {STL10_HELP}")
    return names


def _count(path: Path) -> int:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. {STL10_HELP}")
    size = path.stat().st_size
    if size == 0 or size % _IMAGE_BYTES:
        raise ValueError(
            f"{path}: {size:,} bytes is not a whole number of 3x96x96 images ({_IMAGE_BYTES:,} "
            f"bytes each): a truncated or foreign file. {STL10_HELP}"
        )
    return size // _IMAGE_BYTES


def _read_images(path: Path, out: np.ndarray) -> None:
    """Fill ``out`` (n, 3, 96, 96) from a column-major ``*_X.bin``, a chunk at a time."""
    with path.open("rb") as f:
        for start in range(0, out.shape[0], _CHUNK):
            stop = min(start + _CHUNK, out.shape[0])
            raw = np.fromfile(f, dtype=np.uint8, count=(stop - start) * _IMAGE_BYTES)
            if raw.size != (stop - start) * _IMAGE_BYTES:
                raise ValueError(f"{path}: ends early (read while loading). {STL10_HELP}")
            # Column-major planes: the file's (c, x, y) is our (c, y, x).
            out[start:stop] = raw.reshape(-1, 3, STL10_SIZE, STL10_SIZE).transpose(0, 1, 3, 2)


def _read_labels(path: Path, n: int, num_classes: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. {STL10_HELP}")
    y = np.fromfile(path, dtype=np.uint8)
    if y.size != n:
        raise ValueError(f"{path}: {y.size} labels for {n} images (one uint8 label per image). {STL10_HELP}")
    bad = np.flatnonzero((y < 1) | (y > num_classes))
    if bad.size:
        raise ValueError(
            f"{path}: label {bad[0]} is {y[bad[0]]}, outside 1..{num_classes} (the classes of "
            f"class_names.txt; {bad.size} bad labels in all). {STL10_HELP}"
        )
    return y.astype(np.int64) - 1


def load_stl10(
    data_dir: str | os.PathLike | None,
    device: torch.device | str = "cpu",
    image_size: int = STL10_SIZE,
    unlabeled: bool = True,
) -> tuple[ImageSet, ImageSet]:
    """STL-10 as (train for self-supervised learning, test), uint8 (N, 3, S, S) on ``device``.

    The first set is train followed by unlabeled (labels -1, ``unlabelled=True``) when ``unlabeled``, else
    train alone; its ``labelled()`` is the labelled train split, what evaluation fits on. ``image_size``
    other than 96 resizes every image (shorter side, centre crop: see :mod:`vprob.data.decode`).
    Statistics are those of the whole first set.
    """
    device = torch.device(device)
    folder = stl10_folder(data_dir)
    classes = stl10_classes(folder)
    parts = ["train", "unlabeled"] if unlabeled else ["train"]
    counts = {split: _count(folder / f"{split}_X.bin") for split in [*parts, "test"]}
    n_train = sum(counts[s] for s in parts)
    check_fits_device(n_train + counts["test"], 3, image_size, device, str(folder))
    sets = []
    for names in (parts, ["test"]):
        images = np.empty((sum(counts[s] for s in names), 3, STL10_SIZE, STL10_SIZE), dtype=np.uint8)
        labels, start = [], 0
        for split in names:
            _read_images(folder / f"{split}_X.bin", images[start : start + counts[split]])
            start += counts[split]
            labels.append(
                np.full(counts[split], UNLABELLED, np.int64)
                if split == "unlabeled"
                else _read_labels(folder / f"{split}_y.bin", counts[split], len(classes))
            )
        x = torch.from_numpy(images)
        if image_size != STL10_SIZE:
            x = torch.cat([resize_square(x[i : i + _CHUNK], image_size) for i in range(0, len(x), _CHUNK)])
        sets.append((x.to(device), torch.from_numpy(np.concatenate(labels)).to(device)))
    mean, std = channel_stats(sets[0][0])
    train = ImageSet(*sets[0], classes, mean, std, unlabelled=unlabeled)
    return train, ImageSet(*sets[1], classes, mean, std)
