"""CIFAR-10 and CIFAR-100 in torchvision's on-disk layout (the "python version" archives, unpacked), read
directly: the batch files are pickled dicts, read with :func:`vprob.safe_io.load_pickle_restricted` (plain
data only), and no md5 is checked, so a real download and a miniature in the same format both load.

- CIFAR-10: ``ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``; each batch holds
  ``b"data"`` uint8 (N, 3072) (the 1024 red, then green, then blue values of a 32x32 image in row-major
  order) and ``b"labels"`` (N ints); ``batches.meta`` holds ``b"label_names"``.
- CIFAR-100: ``ROOT/cifar-100-python/{train, test, meta}``; each split holds ``b"data"``,
  ``b"fine_labels"`` and ``b"coarse_labels"``; ``meta`` holds ``b"fine_label_names"`` and
  ``b"coarse_label_names"``. Training uses the 100 fine labels; the 20 coarse ones ride along on the
  ImageSet (``coarse_labels``) for diagnostics.

``ROOT`` is what one passes to torchvision's ``CIFAR10(root=...)``; the ``cifar-*`` folder itself is
accepted too. For CIFAR-10, a folder of ``train.npz`` / ``test.npz`` JPEG archives (the project's own
format, :func:`vprob.data.datasets.load_cifar10`) is recognised by content and read by that loader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vprob.data.datasets import CIFAR10_FORMAT_HELP, ImageSet, channel_stats, load_cifar10
from vprob.data.decode import check_fits_device
from vprob.safe_io import load_pickle_restricted

__all__ = [
    "CIFAR100_HELP",
    "CIFAR10_HELP",
    "cifar100_classes",
    "cifar10_classes",
    "cifar10_layout",
    "load_cifar10_any",
    "load_cifar100",
]

_WHERE = (
    "the CIFAR python archives come from https://www.cs.toronto.edu/~kriz/cifar.html, or from "
    "torchvision.datasets.{name}(root=DIR, download=True) run once on a machine with network access; "
    "vprob never downloads"
)
CIFAR10_HELP = (
    "CIFAR-10 is read from torchvision's layout DIR/cifar-10-batches-py/{data_batch_1..data_batch_5, "
    "test_batch, batches.meta} (pass DIR, or the cifar-10-batches-py folder itself, with --data-dir; "
    f"{_WHERE.format(name='CIFAR10')}), or from a folder of train.npz / test.npz JPEG archives. "
    + CIFAR10_FORMAT_HELP
)
CIFAR100_HELP = (
    "CIFAR-100 is read from torchvision's layout DIR/cifar-100-python/{train, test, meta} (pass DIR, or the "
    f"cifar-100-python folder itself, with --data-dir; {_WHERE.format(name='CIFAR100')})."
)
_PIXELS = 3 * 32 * 32
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def _field(batch: Any, name: str, path: Path, help_text: str) -> Any:
    """``batch[b"name"]`` (the files' own bytes keys; str keys, as a latin1 re-pickle has, are accepted)."""
    if not isinstance(batch, dict):
        raise ValueError(
            f"{path}: holds a {type(batch).__name__}, not the dict of a CIFAR batch file. {help_text}"
        )
    for key in (name.encode(), name):
        if key in batch:
            return batch[key]
    found = sorted(k.decode("latin1") if isinstance(k, bytes) else str(k) for k in batch)
    raise ValueError(f"{path}: no entry {name!r} (found {found}). {help_text}")


def _names(values: Any, path: Path, name: str, help_text: str) -> tuple[str, ...]:
    if not isinstance(values, list | tuple) or not values:
        raise ValueError(f"{path}: {name!r} must be a non-empty list of names. {help_text}")
    return tuple(v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values)


def _load(path: Path, help_text: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. {help_text}")
    try:
        return load_pickle_restricted(path)
    except ValueError as err:  # a truncated or foreign file; UnsafePickleError is a ValueError too
        raise ValueError(f"{err}. {help_text}") from err


def _batch(
    path: Path, label_keys: tuple[str, ...], num_classes: tuple[int, ...], help_text: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    """(images (N, 3, 32, 32) uint8, [labels (N,) int64 per key]) of one batch file, checked."""
    batch = _load(path, help_text)
    data = _field(batch, "data", path, help_text)
    array = isinstance(data, np.ndarray)
    if not array or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        got = f"{data.dtype} {data.shape}" if array else type(data).__name__
        raise ValueError(f"{path}: 'data' must be a uint8 array (N, {_PIXELS}), got {got}. {help_text}")
    n = data.shape[0]
    labels = []
    for key, count in zip(label_keys, num_classes, strict=True):
        y = np.asarray(_field(batch, key, path, help_text))
        if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"{path}: {key!r} must hold {n} integer labels (one per image), got "
                f"{y.dtype} {y.shape}. {help_text}"
            )
        bad = np.flatnonzero((y < 0) | (y >= count))
        if bad.size:
            raise ValueError(
                f"{path}: {key}[{bad[0]}] = {y[bad[0]]} is outside the {count} classes of the "
                f"meta file (labels 0..{count - 1}; {bad.size} bad labels in all)"
            )
        labels.append(y.astype(np.int64))
    return data.reshape(n, 3, 32, 32), labels


def _folder(data_dir: str | os.PathLike | None, sub: str, marker: str, name: str, help_text: str) -> Path:
    """The ``sub`` folder under ``data_dir``, or ``data_dir`` itself when it holds ``marker``."""
    if data_dir is None:
        raise ValueError(f"data set {name!r} needs a data folder (--data-dir). {help_text}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{name} data folder {str(root)!r} does not exist. {help_text}")
    if (root / sub).is_dir():
        return root / sub
    if (root / marker).is_file():
        return root
    raise FileNotFoundError(
        f"{root} holds neither {sub}/ nor the files of that folder ({marker}). {help_text}"
    )


def _image_sets(
    train_x: np.ndarray,
    train_y: list[np.ndarray],
    test_x: np.ndarray,
    test_y: list[np.ndarray],
    classes: tuple[str, ...],
    coarse: tuple[str, ...] | None,
    device: torch.device,
    what: str,
) -> tuple[ImageSet, ImageSet]:
    check_fits_device(len(train_x) + len(test_x), 3, 32, device, what)
    tx = torch.from_numpy(np.ascontiguousarray(train_x)).to(device)
    mean, std = channel_stats(tx)
    sets = []
    for x, ys in ((tx, train_y), (torch.from_numpy(np.ascontiguousarray(test_x)).to(device), test_y)):
        extra = (torch.from_numpy(ys[1]).to(device), coarse) if coarse is not None else (None, None)
        sets.append(ImageSet(x, torch.from_numpy(ys[0]).to(device), classes, mean, std, False, *extra))
    return sets[0], sets[1]


# ------------------------------------------------------------------------------------------------ CIFAR-10


def cifar10_layout(data_dir: str | os.PathLike | None) -> tuple[str, Path]:
    """("torchvision", batches folder) or ("npz", folder of train.npz / test.npz), told apart by content
    (an npz is a zip archive, a batch file a pickle); FileNotFoundError / ValueError naming the layouts."""
    if data_dir is None:
        raise ValueError(f"data set 'cifar10' needs a data folder (--data-dir). {CIFAR10_HELP}")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 data folder {str(root)!r} does not exist. {CIFAR10_HELP}")
    for folder in (root / "cifar-10-batches-py", root):
        if (folder / "batches.meta").is_file() or (folder / "data_batch_1").is_file():
            return "torchvision", folder
    npz = root / "train.npz"
    if npz.is_file():
        with npz.open("rb") as f:
            magic = f.read(4)
        if magic[:2] == b"PK":
            return "npz", root
        raise ValueError(f"{npz} is not an npz (zip) archive (it starts with {magic!r}). {CIFAR10_HELP}")
    raise FileNotFoundError(
        f"{root} holds no CIFAR-10 files (neither cifar-10-batches-py/ nor train.npz). {CIFAR10_HELP}"
    )


def cifar10_classes(data_dir: str | os.PathLike | None) -> tuple[str, ...]:
    """CIFAR-10's class names from ``batches.meta`` (or the npz archives' ``classes``), without the images."""
    layout, folder = cifar10_layout(data_dir)
    if layout == "npz":
        path = folder / "test.npz"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing. {CIFAR10_HELP}")
        with np.load(path, allow_pickle=False) as npz:  # reads the small `classes` array only
            if "classes" not in npz.files:
                raise ValueError(f"{path}: missing array 'classes'. {CIFAR10_HELP}")
            return tuple(str(c) for c in npz["classes"])
    path = folder / "batches.meta"
    return _names(
        _field(_load(path, CIFAR10_HELP), "label_names", path, CIFAR10_HELP),
        path,
        "label_names",
        CIFAR10_HELP,
    )


def load_cifar10_any(
    data_dir: str | os.PathLike | None,
    device: torch.device | str = "cpu",
    cache_dir: str | os.PathLike | None = None,
) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10 (train 50,000, test 10,000 in the real set) as uint8 (N, 3, 32, 32) on ``device``, from
    torchvision's layout or the JPEG npz archives (``cache_dir``: where the npz reader keeps decoded
    arrays; the pickled batches need no decoding)."""
    device = torch.device(device)
    layout, folder = cifar10_layout(data_dir)
    if layout == "npz":
        return load_cifar10(folder, device=device, cache_dir=cache_dir)
    classes = cifar10_classes(folder)
    parts = [_batch(folder / name, ("labels",), (len(classes),), CIFAR10_HELP) for name in _CIFAR10_TRAIN]
    train_x = np.concatenate([x for x, _ in parts])
    train_y = [np.concatenate([ys[0] for _, ys in parts])]
    test_x, test_y = _batch(folder / "test_batch", ("labels",), (len(classes),), CIFAR10_HELP)
    return _image_sets(train_x, train_y, test_x, test_y, classes, None, device, str(folder))


# ----------------------------------------------------------------------------------------------- CIFAR-100


def _cifar100_folder(data_dir: str | os.PathLike | None) -> Path:
    return _folder(data_dir, "cifar-100-python", "meta", "cifar100", CIFAR100_HELP)


def _cifar100_meta(folder: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    path = folder / "meta"
    meta = _load(path, CIFAR100_HELP)
    return tuple(
        _names(_field(meta, key, path, CIFAR100_HELP), path, key, CIFAR100_HELP)
        for key in ("fine_label_names", "coarse_label_names")
    )


def cifar100_classes(data_dir: str | os.PathLike | None) -> tuple[str, ...]:
    """CIFAR-100's 100 fine class names from ``meta``, without the images."""
    return _cifar100_meta(_cifar100_folder(data_dir))[0]


def load_cifar100(
    data_dir: str | os.PathLike | None, device: torch.device | str = "cpu"
) -> tuple[ImageSet, ImageSet]:
    """CIFAR-100 (train, test) as uint8 (N, 3, 32, 32) on ``device``, labelled with the fine classes; the
    coarse (superclass) labels are in ``coarse_labels`` / ``coarse_classes``."""
    folder = _cifar100_folder(data_dir)
    fine, coarse = _cifar100_meta(folder)
    keys, counts = ("fine_labels", "coarse_labels"), (len(fine), len(coarse))
    train_x, train_y = _batch(folder / "train", keys, counts, CIFAR100_HELP)
    test_x, test_y = _batch(folder / "test", keys, counts, CIFAR100_HELP)
    return _image_sets(train_x, train_y, test_x, test_y, fine, coarse, torch.device(device), str(folder))
