"""CIFAR-10-C-style image corruptions as pure functions on uint8 image batches.

Hendrycks & Dietterich (2019), "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR), built CIFAR-10-C with ``make_cifar_c.py`` (github.com/hendrycks/robustness). The
functions here reimplement seven of its corruptions in PyTorch, batched and on the images' device, with
that script's CIFAR parameter table for severities 1..5 (the module constants below). Every function has
the signature ``fn(images, severity, generator=None) -> images``:

- ``images``: uint8 (N, C, H, W), C = 1 (grayscale, e.g. digits) or 3 (RGB), any H, W, any device;
- returns a new uint8 tensor of the same shape on the same device (the input is never modified);
- the random ones (noise) draw from ``generator`` (a ``torch.Generator`` on the images' device), so a
  seeded generator makes them deterministic; the others ignore it.

Adaptations, the same for every method that is compared:

- Outputs are **rounded** to the nearest integer before the uint8 cast (the original truncates with
  ``np.uint8``, which darkens every image by half a grey level on average).
- Grayscale images are treated as images whose three channels are equal; each corruption then reduces
  to its one-channel form (brightness: V = the grey value).
- ``pixelate`` scales the image by the table's fraction of *its own* size, ``int(H * c)`` (the original
  hard-codes 32). On 8x8 digits this gives sizes 7, 7, 6, 6, 5: severities 1-2 and 3-4 coincide there.
- ``gaussian_blur`` is skimage's ``gaussian`` (scipy.ndimage: kernel radius ``int(4 sigma + 0.5)``,
  edges extended by the nearest pixel) as a separable convolution.
- ``jpeg`` re-encodes each image with PIL on CPU, as the original does (Pillow is a dependency of
  matplotlib and torchvision; torchvision.io's JPEG codec gives the same bytes here but is deprecated
  since torchvision 0.29). Note that an image that is already JPEG-compressed (our CIFAR-10 copy, quality
  about 75) changes little at quality 80 (severity 1).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vprob.data import check_image_batch

SEVERITIES = (1, 2, 3, 4, 5)

# make_cifar_c.py's CIFAR parameters, indexed by severity - 1.
GAUSSIAN_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)  # additive N(0, c^2) in [0, 1] units
SHOT_NOISE_RATE = (500, 250, 100, 75, 50)  # Poisson(x c) / c: photons at full intensity
GAUSSIAN_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)  # pixels
CONTRAST_FACTOR = (0.75, 0.5, 0.4, 0.3, 0.15)  # (x - per-channel mean) * c + mean
BRIGHTNESS_SHIFT = (0.05, 0.1, 0.15, 0.2, 0.3)  # added to V in HSV
JPEG_QUALITY = (80, 65, 58, 50, 40)
PIXELATE_FRACTION = (0.95, 0.9, 0.85, 0.75, 0.65)  # box-downsample to int(size * c), box-upsample back

Corruption = Callable[..., Tensor]


# ------------------------------------------------------------------------------------------- helpers


def _check(images: Tensor, severity: int) -> None:
    check_image_batch(images)
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")


def _to_unit(images: Tensor) -> Tensor:
    return images.float() / 255.0


def _to_uint8(x: Tensor) -> Tensor:
    return (x.clamp(0.0, 1.0) * 255.0).round_().to(torch.uint8)


# ----------------------------------------------------------------------------------------- corruptions


def gaussian_noise(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Additive white Gaussian noise, std ``GAUSSIAN_NOISE_STD[severity - 1]`` in [0, 1] units, clipped."""
    _check(images, severity)
    std = GAUSSIAN_NOISE_STD[severity - 1]
    x = _to_unit(images)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return _to_uint8(x + std * noise)


def shot_noise(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Poisson (photon) noise: ``Poisson(x c) / c`` with ``c = SHOT_NOISE_RATE[severity - 1]``, clipped."""
    _check(images, severity)
    rate = float(SHOT_NOISE_RATE[severity - 1])
    x = _to_unit(images)
    return _to_uint8(torch.poisson(x * rate, generator=generator) / rate)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, device=None) -> Tensor:
    """Normalized 1-D Gaussian kernel of radius ``int(truncate * sigma + 0.5)`` (scipy.ndimage's)."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian blur with sigma ``GAUSSIAN_BLUR_SIGMA[severity - 1]`` pixels, per channel, edges extended
    by the nearest pixel (skimage.filters.gaussian's defaults)."""
    _check(images, severity)
    n, c, h, w = images.shape
    kernel = gaussian_kernel1d(GAUSSIAN_BLUR_SIGMA[severity - 1], device=images.device)
    radius = kernel.numel() // 2
    x = _to_unit(images).reshape(n * c, 1, h, w)
    # Separable: rows then columns; "replicate" padding is scipy's mode="nearest".
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return _to_uint8(x.reshape(n, c, h, w))


def contrast(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Contrast reduction towards each image's per-channel mean: ``(x - m) c + m``,
    ``c = CONTRAST_FACTOR[severity - 1]``."""
    _check(images, severity)
    factor = CONTRAST_FACTOR[severity - 1]
    x = _to_unit(images)
    mean = x.mean(dim=(2, 3), keepdim=True)
    return _to_uint8((x - mean) * factor + mean)


def brightness(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Brightness increase in HSV space: V <- min(V + c, 1) with hue and saturation kept,
    ``c = BRIGHTNESS_SHIFT[severity - 1]``.

    With H and S fixed, RGB is proportional to V, so the HSV round trip of the original is the exact
    rescaling ``rgb * V' / V`` (black pixels, V = 0 and S = 0, become the grey V'). One channel: V = x.
    """
    _check(images, severity)
    shift = BRIGHTNESS_SHIFT[severity - 1]
    x = _to_unit(images)
    value = x.amax(dim=1, keepdim=True)
    new_value = (value + shift).clamp(max=1.0)
    scaled = x * (new_value / value.clamp(min=1e-12))
    return _to_uint8(torch.where(value > 0, scaled, new_value.expand_as(x)))


def jpeg(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """JPEG re-encoding at quality ``JPEG_QUALITY[severity - 1]`` (PIL's libjpeg with its default 4:2:0
    chroma subsampling for RGB, per image on CPU; 1 or 3 channels)."""
    _check(images, severity)
    from PIL import Image

    channels = images.shape[1]
    if channels not in (1, 3):
        raise ValueError(f"jpeg needs 1 or 3 channels, got {channels}")
    quality = JPEG_QUALITY[severity - 1]
    out = torch.empty_like(images, device="cpu")
    pixels = images.cpu().permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C)
    for i, image in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if channels == 1 else image).save(buffer, "JPEG", quality=quality)
        decoded = np.asarray(Image.open(buffer))
        out[i] = torch.from_numpy(decoded.reshape(image.shape).copy()).permute(2, 0, 1)
    return out.to(images.device)


def box_resample_matrix(in_size: int, out_size: int, device=None) -> Tensor:
    """(out_size, in_size) row-stochastic matrix of PIL's BOX filter along one axis.

    Output pixel i covers the window ``[c - f / 2, c + f / 2)`` of input coordinates, centre
    ``c = (i + 0.5) in / out``, width ``f = max(in / out, 1)``; it averages the input pixels whose centres
    ``j + 0.5`` fall in it (downsampling: a box average; upsampling: nearest neighbour).
    """
    scale = in_size / out_size
    width = max(scale, 1.0)
    centre = (torch.arange(out_size, dtype=torch.float64, device=device) + 0.5) * scale
    pixel = torch.arange(in_size, dtype=torch.float64, device=device) + 0.5
    inside = (pixel >= (centre - width / 2)[:, None]) & (pixel < (centre + width / 2)[:, None])
    weights = inside.to(torch.float64)
    return (weights / weights.sum(dim=1, keepdim=True)).float()


def _box_resize(x: Tensor, height: int, width: int) -> Tensor:
    rows = box_resample_matrix(x.shape[-2], height, device=x.device)
    cols = box_resample_matrix(x.shape[-1], width, device=x.device)
    return torch.einsum("oh,nchw,pw->ncop", rows, x, cols)


def pixelate(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Pixelation: box-downsample to ``int(size * c)`` (``c = PIXELATE_FRACTION[severity - 1]``), then
    box-upsample back to the original size (PIL BOX filter twice, as in make_cifar_c.py; the small image
    is rounded to integers in between, as PIL stores it)."""
    _check(images, severity)
    fraction = PIXELATE_FRACTION[severity - 1]
    h, w = images.shape[-2:]
    small_h, small_w = max(1, int(h * fraction)), max(1, int(w * fraction))
    small = _box_resize(_to_unit(images), small_h, small_w)
    small = torch.round(small.clamp(0.0, 1.0) * 255.0) / 255.0
    return _to_uint8(_box_resize(small, h, w))


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "jpeg": jpeg,
    "pixelate": pixelate,
}


def corrupt(images: Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Apply the corruption ``name`` (a key of ``CORRUPTIONS``) at ``severity`` (1..5) to uint8 images
    (N, C, H, W); see the module docstring. Raises ValueError for an unknown name or severity."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid names: {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name](images, severity, generator=generator)
