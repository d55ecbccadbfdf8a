"""Decoding image files once, in threads, to one uint8 array of a fixed size; and whether it fits a device.

- :func:`decode_files`: JPEG/PNG files -> (N, 3, S, S) uint8 with ``torchvision.io.decode_image`` in a
  thread pool (the decoder releases the GIL). Grayscale, palette and RGBA images are converted to RGB
  (alpha is dropped, not composited); 16-bit PNGs are reduced to 8 bits; an image that is not S x S is
  resized so that its shorter side is S (bilinear, antialiased) and centre-cropped to S x S. An unreadable
  or corrupt file raises a ValueError naming it.
- :func:`resize_square`: the same resize for a batch already in memory.
- :func:`bytes_needed`, :func:`largest_image_size`, :func:`check_fits`: the memory an image set takes on
  the device and the largest square size that fits a budget (the engine can call these with
  ``torch.cuda.mem_get_info()``; the registry's loaders call :func:`check_fits` before moving a set to CUDA).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DEVICE_FRACTION",
    "bytes_needed",
    "check_fits",
    "check_fits_device",
    "decode_files",
    "largest_image_size",
    "resize_square",
]

# At most this share of the free device memory goes to the uint8 image set: the rest is for the model, its
# activations and the augmented float views.
DEVICE_FRACTION = 0.5


def bytes_needed(num_images: int, channels: int, image_size: int) -> int:
    """Bytes of a uint8 image set (N, C, S, S) (labels, 8 bytes an image, included)."""
    return int(num_images) * (int(channels) * int(image_size) ** 2 + 8)


def largest_image_size(num_images: int, channels: int, budget_bytes: int) -> int:
    """The largest square size S with ``bytes_needed(num_images, channels, S) <= budget_bytes`` (0: none)."""
    if num_images <= 0:
        raise ValueError(f"num_images must be positive, got {num_images}")
    # In integers, exactly: n (c S^2 + 8) <= B  <=>  c S^2 <= floor(B / n) - 8  <=>  S^2 <= floor(that / c).
    # (A float B / n rounded up by one size for budgets above about 10^16 bytes.)
    per_image = int(budget_bytes) // int(num_images) - 8
    if per_image < channels:
        return 0
    return math.isqrt(per_image // int(channels))


def check_fits(
    num_images: int,
    channels: int,
    image_size: int,
    free_bytes: int,
    what: str,
    fraction: float = DEVICE_FRACTION,
) -> None:
    """ValueError unless the set fits in ``fraction`` of ``free_bytes``; the message gives the bytes it needs
    and the largest image size that fits. ``what`` names the set (for example its folder)."""
    need = bytes_needed(num_images, channels, image_size)
    budget = int(free_bytes * fraction)
    if need <= budget:
        return
    fits = largest_image_size(num_images, channels, budget)
    hint = (
        f"the largest image size that fits is {fits} px"
        if fits
        else "no image size fits: use fewer images or a device with more memory"
    )
    raise ValueError(
        f"{what}: {num_images:,} images of {channels}x{image_size}x{image_size} take {need:,} bytes "
        f"({need / 2**30:.2f} GiB) on the device, more than {fraction:.0%} of its {free_bytes:,} free bytes "
        f"(the rest is for the model and its activations); {hint}"
    )


def check_fits_device(
    num_images: int, channels: int, image_size: int, device: torch.device, what: str
) -> None:
    """:func:`check_fits` against the free memory of a CUDA ``device``; nothing for other devices."""
    if device.type != "cuda":
        return
    free, _ = torch.cuda.mem_get_info(device)
    check_fits(num_images, channels, image_size, free, what)


def resize_square(images: Tensor, size: int) -> Tensor:
    """uint8 (N, C, H, W) -> (N, C, size, size): shorter side to ``size`` (bilinear, antialiased, as
    torchvision's ``Resize(size)``), then the centre ``size`` x ``size`` crop (``CenterCrop(size)``)."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(
        images.float(), size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
    )
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[..., top : top + size, left : left + size]
    return x.round_().clamp_(0, 255).to(torch.uint8)


def _decode_path(path: Path, size: int) -> Tensor:
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        data = read_file(str(path))
    except (OSError, RuntimeError) as err:
        raise ValueError(f"{path}: cannot be read ({err})") from err
    try:
        image = decode_image(data, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{path}: not a readable JPEG or PNG image ({err})") from err
    if image.dtype == torch.uint16:  # a 16-bit PNG
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[1:]) < 1:
        raise ValueError(f"{path}: decodes to shape {tuple(image.shape)}, not an RGB image")
    return resize_square(image.unsqueeze(0), size)[0]


def decode_files(paths: Sequence[Path], size: int, threads: int | None = None) -> Tensor:
    """Decode image files into (N, 3, size, size) uint8 on CPU (see the module notes for conversions).

    ``threads``: worker threads (default: the CPUs this process may use, at most 16). Raises ValueError
    naming the first file (in ``paths`` order) that cannot be read or decoded.
    """
    if size < 1:
        raise ValueError(f"image size must be positive, got {size}")
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    if not paths:
        return out
    if threads is None:
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        threads = min(16, len(usable))
    # Each worker decodes one file and writes its own row: nothing is shared but the output tensor.
    # torch's own intra-op threads would oversubscribe the pool's, so the resize runs single-threaded.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    # torchvision >= 0.29 announces its deprecation on every decode. Warning filters are process-wide and
    # catch_warnings is not thread-safe (one worker leaving it restored the filters while another decoded,
    # letting the notice through), so it is silenced once here, around the whole pool.
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*decoding and encoding capabilities", DeprecationWarning)

            def work(i: int) -> None:
                out[i] = _decode_path(Path(paths[i]), size)

            pool = ThreadPoolExecutor(max_workers=max(1, threads))
            try:
                for _ in pool.map(work, range(len(paths))):  # re-raises the first failure, in path order
                    pass
            finally:
                pool.shutdown(wait=True, cancel_futures=True)  # a failure drops the queued files
    finally:
        torch.set_num_threads(previous)
    return out
