"""Image data sets held whole as uint8 tensors, ready to live on the training device (airbench style).

Two sources:

- ``load_digits``: scikit-learn's bundled 8x8 digits (no download), the embedded default.
- ``load_cifar10``: CIFAR-10 stored as concatenated JPEG bytes in ``train.npz`` / ``test.npz`` (format in
  ``../shared/data/cifar10/README.md``), decoded in batches by ``torchvision.io.decode_jpeg``, on the GPU
  when ``device`` is a CUDA device.

Nothing here downloads anything and nothing writes into the data folder.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vprob.safe_io import atomic_writer

__all__ = [
    "UNLABELLED",
    "ImageSet",
    "channel_stats",
    "check_image_batch",
    "load_cifar10",
    "load_digits",
]

CIFAR10_FORMAT_HELP = (
    "CIFAR-10 is read from a folder holding train.npz and test.npz (arrays `jpeg` uint8: all JPEG files "
    "concatenated, `offsets` int64 (N+1,), `y` int64 (N,), `classes` str), the format described in "
    "../shared/data/cifar10/README.md of the project checkout; pass that folder with --data-dir "
    "(for example --data-dir ../shared/data/cifar10). Nothing is downloaded at run time."
)

_CIFAR_SHAPE = (3, 32, 32)
_DECODE_CHUNK = 8192  # images per decode_jpeg call: bounds the GPU decoder's scratch memory
UNLABELLED = -1  # the label of an image without a class (ImageSet(unlabelled=True))


def check_image_batch(images: Tensor, name: str = "images", non_empty: bool = False) -> None:
    """Raise a ValueError naming ``name`` unless ``images`` is a uint8 image batch (N, C, H, W) (with
    N > 0 if ``non_empty``): the form every augmentation, corruption and score of vprob takes."""
    valid = isinstance(images, Tensor) and images.dtype == torch.uint8 and images.ndim == 4
    if valid and not (non_empty and images.shape[0] == 0):
        return
    got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
    kind = "a non-empty uint8 image batch" if non_empty else "a uint8 image batch"
    raise ValueError(f"{name} must be {kind} (N, C, H, W), got {got}")


@dataclass
class ImageSet:
    """A labelled image set kept whole in memory (on CPU or on the device).

    Attributes:
        images: (N, C, H, W) uint8, raw pixel values 0..255.
        labels: (N,) int64 in ``[0, len(classes))``, on the same device as ``images``.
        classes: class names; ``classes[y]`` names label ``y``.
        mean, std: per-channel pixel statistics in [0, 1] units of the TRAIN split (both splits of a data
            set carry the train statistics, so normalization never peeks at the test set).
        unlabelled: ``True`` allows the label ``UNLABELLED`` (-1) for images without a class (STL-10's
            unlabeled split, an unlabelled image folder); such images train self-supervised methods only,
            and :meth:`labelled` is what evaluation fits on. ``False`` (the default) refuses -1.
        coarse_labels, coarse_classes: an optional second labelling (CIFAR-100's 20 superclasses), (N,)
            int64 in ``[0, len(coarse_classes))`` on the images' device, for diagnostics; both or neither.
    """

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    unlabelled: bool = False
    coarse_labels: Tensor | None = None
    coarse_classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, Tensor):
            raise TypeError(f"ImageSet.images must be a torch.Tensor, got {type(self.images).__name__}")
        if self.images.dtype != torch.uint8:
            raise TypeError(f"ImageSet.images must have dtype uint8, got {self.images.dtype}")
        if self.images.ndim != 4:
            raise ValueError(f"ImageSet.images must be 4-D (N, C, H, W), got {tuple(self.images.shape)}")
        if not isinstance(self.labels, Tensor):
            raise TypeError(f"ImageSet.labels must be a torch.Tensor, got {type(self.labels).__name__}")
        if self.labels.dtype != torch.int64:
            raise TypeError(f"ImageSet.labels must have dtype int64, got {self.labels.dtype}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"ImageSet.labels must have shape ({self.images.shape[0]},) to match images, "
                f"got {tuple(self.labels.shape)}"
            )
        if self.labels.device != self.images.device:
            raise ValueError(
                f"ImageSet.labels is on {self.labels.device} but images are on {self.images.device}"
            )
        self.classes = tuple(self.classes)
        if not self.classes or not all(isinstance(c, str) for c in self.classes):
            raise TypeError("ImageSet.classes must be a non-empty sequence of str")
        # One host sync at construction time (never in the training loop).
        lowest = UNLABELLED if self.unlabelled else 0
        if self.labels.numel() and not bool(
            ((self.labels >= lowest) & (self.labels < len(self.classes))).all()
        ):
            allowed = " or -1 (unlabelled)" if self.unlabelled else ""
            raise ValueError(
                f"ImageSet.labels must lie in [0, {len(self.classes)}) (one per class name){allowed}; got "
                f"values in [{int(self.labels.min())}, {int(self.labels.max())}]"
            )
        self._check_coarse()
        channels = self.images.shape[1]
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        if len(self.mean) != channels:
            raise ValueError(f"ImageSet.mean needs one value per channel ({channels}), got {len(self.mean)}")
        if len(self.std) != channels:
            raise ValueError(f"ImageSet.std needs one value per channel ({channels}), got {len(self.std)}")
        if not all(s > 0 for s in self.std):
            raise ValueError(f"ImageSet.std must be positive, got {self.std}")

    def _check_coarse(self) -> None:
        if (self.coarse_labels is None) != (self.coarse_classes is None):
            raise ValueError(
                "ImageSet.coarse_labels and ImageSet.coarse_classes go together (both or neither)"
            )
        if self.coarse_labels is None:
            return
        self.coarse_classes = tuple(self.coarse_classes)
        if not isinstance(self.coarse_labels, Tensor) or self.coarse_labels.dtype != torch.int64:
            raise TypeError("ImageSet.coarse_labels must be an int64 torch.Tensor")
        if self.coarse_labels.shape != self.labels.shape or self.coarse_labels.device != self.images.device:
            raise ValueError(
                f"ImageSet.coarse_labels must have shape {tuple(self.labels.shape)} on "
                f"{self.images.device}, got {tuple(self.coarse_labels.shape)} on "
                f"{self.coarse_labels.device}"
            )
        n = len(self.coarse_classes)
        inside = (self.coarse_labels >= 0) & (self.coarse_labels < n)
        if self.coarse_labels.numel() and not bool(inside.all()):
            raise ValueError(f"ImageSet.coarse_labels must lie in [0, {n}) (one per coarse class name)")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        """Height of the (square) images."""
        return self.images.shape[2]

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: torch.device | str) -> ImageSet:
        """The same set with images and labels on ``device``."""
        coarse = None if self.coarse_labels is None else self.coarse_labels.to(device)
        return self._with(self.images.to(device), self.labels.to(device), coarse)

    def _with(self, images: Tensor, labels: Tensor, coarse: Tensor | None) -> ImageSet:
        return ImageSet(
            images, labels, self.classes, self.mean, self.std, self.unlabelled, coarse, self.coarse_classes
        )

    @property
    def num_labelled(self) -> int:
        """How many images have a class (label >= 0); one host sync."""
        return len(self) if not self.unlabelled else int((self.labels >= 0).sum())

    def labelled(self) -> ImageSet:
        """The images with a class (label >= 0), what kNN and linear evaluation fit on; the set itself when
        every image has one. When the labelled images come first (STL-10: train, then unlabeled) this is a
        view, not a copy."""
        if not self.unlabelled:
            return self
        n = self.num_labelled
        if n == len(self) or bool((self.labels[:n] >= 0).all()):
            part = self.subset(slice(0, n))
        else:
            part = self.subset(self.labels >= 0)
        return ImageSet(
            part.images,
            part.labels,
            part.classes,
            part.mean,
            part.std,
            False,
            part.coarse_labels,
            part.coarse_classes,
        )

    def subset(self, mask_or_index: Tensor | Sequence[int] | slice) -> ImageSet:
        """The images selected by a boolean mask (N,) or an index (M,) / slice; keeps the train statistics."""
        if isinstance(mask_or_index, slice):
            return self._with(
                self.images[mask_or_index],
                self.labels[mask_or_index],
                None if self.coarse_labels is None else self.coarse_labels[mask_or_index],
            )
        index = torch.as_tensor(mask_or_index, device=self.images.device)
        if index.dtype == torch.bool:
            if index.shape != (len(self),):
                raise ValueError(f"subset mask must have shape ({len(self)},), got {tuple(index.shape)}")
        elif index.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"subset expects a bool mask or an integer index, got dtype {index.dtype}")
        elif index.ndim != 1:
            raise ValueError(f"subset index must be 1-D, got shape {tuple(index.shape)}")
        else:
            index = index.long()
        return self._with(
            self.images[index],
            self.labels[index],
            None if self.coarse_labels is None else self.coarse_labels[index],
        )


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 images (N, C, H, W), in [0, 1] units.

    Uses a 256-bin histogram per channel, so it needs no float copy of the data set.
    """
    values = torch.arange(256, dtype=torch.float64, device=images.device)
    means, stds = [], []
    for c in range(images.shape[1]):
        hist = torch.bincount(images[:, c].reshape(-1), minlength=256).double()
        n = hist.sum()
        mean = (hist * values).sum() / n
        var = (hist * (values - mean) ** 2).sum() / n
        means.append(mean / 255.0)
        stds.append(var.sqrt() / 255.0)
    stats = torch.stack(means + stds).tolist()  # one host sync
    c = images.shape[1]
    return tuple(stats[:c]), tuple(stats[c:])


# ----------------------------------------------------------------------------------------------- digits


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test), sorted, with round(test_fraction * n_c) test samples from each class c."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = rng.permutation(idx)
        n_test = round(test_fraction * idx.size)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), split stratified by class.

    Pixel values 0..16 are rescaled to 0..255 (round(v * 255 / 16)) and stored as uint8 (N, 1, 8, 8).
    The split is a deterministic function of ``seed`` (numpy's PCG64), independent of scikit-learn's
    splitting code. Returns (train, test) on CPU; both carry the train split's statistics.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    pixels = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    images = torch.from_numpy(pixels).unsqueeze(1)  # (N, 1, 8, 8)
    labels_np = np.asarray(bunch.target, dtype=np.int64)
    labels = torch.from_numpy(labels_np)
    classes = tuple(str(c) for c in bunch.target_names)
    train_idx, test_idx = _stratified_split(labels_np, test_fraction, seed)
    train_idx_t, test_idx_t = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    mean, std = channel_stats(images[train_idx_t])
    train = ImageSet(images[train_idx_t].contiguous(), labels[train_idx_t], classes, mean, std)
    test = ImageSet(images[test_idx_t].contiguous(), labels[test_idx_t], classes, mean, std)
    return train, test


# ----------------------------------------------------------------------------------------------- CIFAR-10


def _read_jpeg_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read and check one split file; returns (jpeg bytes, offsets, labels, class names)."""
    names = ("jpeg", "offsets", "y", "classes")
    try:
        npz = np.load(path, allow_pickle=False)
        # A .npy file loads as an array, which is no context manager: checked before `with`.
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with npz:
            found = sorted(npz.files)
            arrays = {k: npz[k] for k in names if k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        # ValueError: np.load refuses pickled data (a file that is not an npz, or object arrays).
        raise ValueError(f"{path}: cannot be read as an .npz archive ({err}). {CIFAR10_FORMAT_HELP}") from err
    missing = [k for k in names if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing array(s) {missing} (found {found}). {CIFAR10_FORMAT_HELP}")
    jpeg, offsets, y, classes = (arrays[k] for k in names)
    if jpeg.dtype != np.uint8 or jpeg.ndim != 1:
        raise ValueError(f"{path}: `jpeg` must be a 1-D uint8 array, got {jpeg.dtype} {jpeg.shape}")
    if not np.issubdtype(offsets.dtype, np.integer) or offsets.ndim != 1 or offsets.size < 2:
        raise ValueError(
            f"{path}: `offsets` must be a 1-D integer array (N+1,), got {offsets.dtype} {offsets.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise ValueError(f"{path}: `y` must be a 1-D integer array, got {y.dtype} {y.shape}")
    if classes.ndim != 1 or classes.dtype.kind not in "US" or classes.size == 0:
        raise ValueError(f"{path}: `classes` must be a 1-D array of str, got {classes.dtype} {classes.shape}")
    n = y.size
    if offsets.size != n + 1:
        raise ValueError(
            f"{path}: `offsets` has {offsets.size} entries but `y` has {n} labels (need N+1 = {n + 1})"
        )
    if offsets[0] != 0:
        raise ValueError(f"{path}: `offsets[0]` must be 0, got {offsets[0]}")
    sizes = np.diff(offsets)
    if (sizes <= 0).any():
        i = int(np.flatnonzero(sizes <= 0)[0])
        raise ValueError(
            f"{path}: `offsets` must be strictly increasing; image {i} has offsets "
            f"[{offsets[i]}, {offsets[i + 1]})"
        )
    if offsets[-1] != jpeg.size:
        raise ValueError(
            f"{path}: `offsets[-1]` = {offsets[-1]} does not match the {jpeg.size} bytes of `jpeg`"
        )
    bad = np.flatnonzero((y < 0) | (y >= classes.size))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{path}: label y[{i}] = {y[i]} is outside [0, {classes.size}) for {classes.size} classes "
            f"({bad.size} bad labels in all)"
        )
    # Byte-string names (dtype 'S') are decoded: str(b"cat") would be "b'cat'".
    names = tuple(
        c.decode("utf-8", errors="replace") if isinstance(c, bytes) else str(c) for c in classes.tolist()
    )
    return jpeg, offsets.astype(np.int64), y.astype(np.int64), names


def _decode_jpeg(data: Tensor | list[Tensor], device: torch.device) -> Tensor | list[Tensor]:
    """torchvision.io.decode_jpeg without torchvision >= 0.29's deprecation notice on every call."""
    from torchvision.io import decode_jpeg

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*decoding and encoding capabilities", DeprecationWarning)
        return decode_jpeg(data, device=device)


def _decode_one(path: Path, index: int, data: Tensor, device: torch.device) -> Tensor:
    try:
        image = _decode_jpeg(data, device)
    except RuntimeError as err:
        raise ValueError(f"{path}: JPEG image {index} fails to decode ({err})") from err
    if tuple(image.shape) != _CIFAR_SHAPE:
        raise ValueError(
            f"{path}: JPEG image {index} decodes to shape {tuple(image.shape)}, expected {_CIFAR_SHAPE}"
        )
    return image


def _decode_jpegs(path: Path, jpeg: np.ndarray, offsets: np.ndarray, device: torch.device) -> Tensor:
    """Decode every image of one split into (N, 3, 32, 32) uint8 on ``device``.

    Batched ``decode_jpeg`` calls (nvJPEG on CUDA); if a batch fails, its images are decoded one by one
    to name the culprit. Note: JPEG has no checksum, so corrupted entropy-coded data that still parses
    decodes to wrong pixels (libjpeg only prints a warning); truncation and broken headers are caught.
    """
    data = torch.from_numpy(jpeg)
    bounds = offsets.tolist()
    n = len(bounds) - 1
    out = torch.empty((n, *_CIFAR_SHAPE), dtype=torch.uint8, device=device)
    for start in range(0, n, _DECODE_CHUNK):
        stop = min(start + _DECODE_CHUNK, n)
        chunk = [data[bounds[i] : bounds[i + 1]] for i in range(start, stop)]  # views, no copies
        try:
            decoded = _decode_jpeg(chunk, device)
        except RuntimeError:
            decoded = [_decode_one(path, start + j, x, device) for j, x in enumerate(chunk)]
        for j, image in enumerate(decoded):
            if tuple(image.shape) != _CIFAR_SHAPE:
                raise ValueError(
                    f"{path}: JPEG image {start + j} decodes to shape {tuple(image.shape)}, "
                    f"expected {_CIFAR_SHAPE}"
                )
        torch.stack(decoded, out=out[start:stop])
    return out


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def _load_split(
    path: Path, device: torch.device, cache_dir: Path | None
) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    jpeg, offsets, y, classes = _read_jpeg_npz(path)
    n = y.size
    cache_file = None
    if cache_dir is not None:
        # Keyed by the content of the npz, so a changed source never reuses a stale cache.
        cache_file = cache_dir / f"{path.stem}-{_file_digest(path)}-uint8.npy"
        if cache_file.is_file():
            try:
                cached = np.load(cache_file, allow_pickle=False)
            except (OSError, ValueError, EOFError):
                cached = np.empty(0, np.uint8)  # unreadable: decode again and replace it
            if cached.dtype == np.uint8 and cached.shape == (n, *_CIFAR_SHAPE):
                return torch.from_numpy(cached).to(device), torch.from_numpy(y).to(device), classes
    images = _decode_jpegs(path, jpeg, offsets, device)
    if cache_file is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_writer(cache_file) as f:  # a concurrent reader never sees half a file
            np.save(f, images.cpu().numpy())
    return images, torch.from_numpy(y).to(device), classes


def load_cifar10(
    data_dir: str | os.PathLike,
    device: torch.device | str = "cpu",
    cache_dir: str | os.PathLike | None = None,
) -> tuple[ImageSet, ImageSet]:
    """CIFAR-10 (train, test) from ``data_dir/{train,test}.npz``, as uint8 (N, 3, 32, 32) on ``device``.

    Decoding runs on ``device`` (nvJPEG for CUDA). ``cache_dir``, if given, keeps the decoded arrays as
    ``.npy`` files keyed by the npz content (decoding all 60,000 images takes about 2 s on 2 CPU cores,
    so this is rarely worth it). Nothing is written into ``data_dir``.

    Raises FileNotFoundError if the folder or a file is missing, ValueError for malformed contents
    (naming the file and the image index).
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"CIFAR-10 data folder {str(root)!r} does not exist. {CIFAR10_FORMAT_HELP}")
    paths = {split: root / f"{split}.npz" for split in ("train", "test")}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing. {CIFAR10_FORMAT_HELP}")
    device = torch.device(device)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else None
    if cache is not None and cache.resolve() == root.resolve():
        raise ValueError(f"cache_dir must not be the data folder {root} (it is never written to)")
    train_x, train_y, train_classes = _load_split(paths["train"], device, cache)
    test_x, test_y, test_classes = _load_split(paths["test"], device, cache)
    if train_classes != test_classes:
        raise ValueError(
            f"{paths['test']}: classes {test_classes} differ from those of {paths['train']}: {train_classes}"
        )
    mean, std = channel_stats(train_x)
    return (
        ImageSet(train_x, train_y, train_classes, mean, std),
        ImageSet(test_x, test_y, train_classes, mean, std),
    )
