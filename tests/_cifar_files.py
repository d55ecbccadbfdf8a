"""CIFAR-10 and CIFAR-100 miniatures in torchvision's on-disk layout, written from the format's description
(protocol-2 pickles of dicts with bytes keys; each image row the 1024 red values in row-major order, then
green, then blue): shared by the loaders' layout and mutation tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_pickle(path: Path, obj) -> None:
    """``obj`` pickled as the originals are (Python 2 cPickle, protocol 2)."""
    path.write_bytes(pickle.dumps(obj, protocol=2))


def random_hwc(rng: np.random.Generator, n: int, size: int = 32) -> np.ndarray:
    """``n`` random uint8 images, ``(n, size, size, 3)``."""
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def cifar_rows(images_hwc: np.ndarray) -> np.ndarray:
    """The batch files' row format, built channel by channel with no reshape of the whole array."""
    return np.stack([np.concatenate([img[:, :, c].reshape(-1) for c in range(3)]) for img in images_hwc])


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 8, seed: int = 0) -> dict:
    """``root/cifar-10-batches-py`` with five training batches of ``per_batch`` images and a test batch.

    Returns ``{"train": (5 per_batch, 32, 32, 3) HWC uint8, "train_y": list, "test": ..., "test_y": list}``,
    the training images in batch order."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    truth = {"train": [], "train_y": [], "test": None, "test_y": None}
    for i in range(1, 6):
        x, y = random_hwc(rng, per_batch), rng.integers(0, 10, per_batch).tolist()
        write_pickle(
            folder / f"data_batch_{i}",
            {
                b"batch_label": f"training batch {i} of 5".encode(),
                b"labels": y,
                b"data": cifar_rows(x),
                b"filenames": [b"x.png"] * per_batch,
            },
        )
        truth["train"].append(x)
        truth["train_y"] += y
    x, y = random_hwc(rng, n_test), rng.integers(0, 10, n_test).tolist()
    write_pickle(
        folder / "test_batch",
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": y,
            b"data": cifar_rows(x),
            b"filenames": [b"x.png"] * n_test,
        },
    )
    truth.update(test=x, test_y=y, train=np.concatenate(truth["train"]))
    write_pickle(
        folder / "batches.meta",
        {
            b"num_cases_per_batch": per_batch,
            b"num_vis": 3072,
            b"label_names": [n.encode() for n in CIFAR10_NAMES],
        },
    )
    return truth


def write_cifar100(root: Path, n_train: int = 30, n_test: int = 10, seed: int = 1) -> dict:
    """``root/cifar-100-python`` with ``train``, ``test`` and ``meta`` (names ``fine{i}``, ``coarse{i}``).

    The coarse labels are drawn independently of the fine ones, so a loader that derived one from the other
    would be caught. Returns ``{split: (HWC uint8 images, fine labels, coarse labels)}``."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    truth = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = random_hwc(rng, n)
        fine, coarse = rng.integers(0, 100, n).tolist(), rng.integers(0, 20, n).tolist()
        write_pickle(
            folder / split,
            {
                b"filenames": [b"x.png"] * n,
                b"batch_label": split.encode(),
                b"fine_labels": fine,
                b"coarse_labels": coarse,
                b"data": cifar_rows(x),
            },
        )
        truth[split] = (x, fine, coarse)
    write_pickle(
        folder / "meta",
        {
            b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
        },
    )
    return truth
