"""The 15 CIFAR-10-C corruptions (and Gaussian blur) as pure functions on uint8 image batches.

Hendrycks & Dietterich (2019), "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR), built CIFAR-10-C with ``make_cifar_c.py`` (github.com/hendrycks/robustness). The
functions here reimplement its 15 standard corruptions, and Gaussian blur (one of its four extra ones), in
PyTorch, batched and on the images' device, with that script's CIFAR parameter tables for severities 1..5
(the module constants below). Every function has the signature ``fn(images, severity, generator=None)``:

- ``images``: uint8 (N, C, H, W), C = 1 (grayscale, e.g. digits) or 3 (RGB), any device;
- returns a new uint8 tensor of the same shape on the same device (the input is never modified);
- the random ones draw from ``generator`` (a ``torch.Generator`` on the images' device) in the order
  their docstrings state, so a seeded generator makes them deterministic; the others ignore it.

``CORRUPTIONS`` holds the 15 in CIFAR-10-C's order (noise, blur, weather, digital), ``EXTRA_CORRUPTIONS``
Gaussian blur, ``ALL_CORRUPTIONS`` both; :func:`corrupt` accepts every name in ``ALL_CORRUPTIONS``.
:func:`mean_over_corruptions` averages per-(corruption, severity) results over the set, as the CIFAR-10-C
literature reports them.

Adaptations, the same for every method that is compared:

- Outputs are **rounded** to the nearest integer before the uint8 cast (the original truncates with
  ``np.uint8``, which darkens every image by half a grey level on average). Intermediate truncations that
  are part of a corruption (glass blur's first blur, snow's layer) are kept.
- Grayscale images are treated as images whose three channels are equal; each corruption then reduces
  to its one-channel form (brightness: V = the grey value; snow: the grey value is the image; frost: the
  overlay's grey value 0.299 R + 0.587 G + 0.114 B, i.e. the grey of the RGB result before clipping).
- Sizes other than 32 px: size parameters that the original ties to 32 px scale with the image.
  ``pixelate`` uses ``int(H * c)`` (on 8x8 digits sizes 7, 7, 6, 6, 5: severities 1-2 and 3-4 coincide);
  ``elastic_transform`` uses ``min(H, W)`` in place of 32 (``IMSIZE``); ``fog``'s plasma fractal has the
  smallest power-of-two size >= max(H, W) (32 for CIFAR); ``frost`` crops H x W from the reduced overlays
  (so at most 62 x 104 px). Everything else is in pixels as in the original.
- ``gaussian_blur`` and the blurs inside ``glass_blur``, ``elastic_transform`` are skimage's ``gaussian``
  (scipy.ndimage: kernel radius ``int(truncate sigma + 0.5)``), separable, with the original's edge modes.
- ``motion_blur`` and ``snow`` use ImageMagick's ``MotionBlurImage`` (through wand) in the original; here
  that kernel is written out (see :func:`motion_blur`).
- ``jpeg_compression`` re-encodes each image with PIL on CPU, as the original does (libjpeg; there is no
  JPEG codec on the GPU that gives the same bytes). An image that is already JPEG-compressed (our CIFAR-10
  copy, quality about 75) changes little at quality 80 (severity 1).
- ``frost`` needs the published frost photographs: five reduced copies ship in ``frost/`` beside this
  module (from the PyPI package ``imagecorruptions`` 1.1.2, Apache-2.0; see ``frost/README.md``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from importlib import resources

import numpy as np
import torch
from torch import Tensor

from vprob.data import check_image_batch

SEVERITIES = (1, 2, 3, 4, 5)

# make_cifar_c.py's CIFAR parameters, indexed by severity - 1.
GAUSSIAN_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)  # additive N(0, c^2) in [0, 1] units
SHOT_NOISE_RATE = (500, 250, 100, 75, 50)  # Poisson(x c) / c: photons at full intensity
IMPULSE_NOISE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)  # fraction of values set to 0 or 1 (half each)
DEFOCUS_BLUR = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))  # (disk radius, alias sigma)
GLASS_BLUR = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))  # (sigma, delta, iters)
MOTION_BLUR = ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5))  # ImageMagick (radius, sigma)
MOTION_BLUR_ANGLE = (-45.0, 45.0)  # degrees, uniform
ZOOM_BLUR_END = (1.06, 1.11, 1.16, 1.21, 1.26)  # zoom factors np.arange(1, end, ZOOM_BLUR_STEP)
ZOOM_BLUR_STEP = 0.01
# (mean, std, zoom, threshold, motion radius, motion sigma, image weight) of the snow layer
SNOW = (
    (0.1, 0.2, 1.0, 0.6, 8, 3, 0.95),
    (0.1, 0.2, 1.0, 0.5, 10, 4, 0.9),
    (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
    (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
)
SNOW_ANGLE = (-135.0, -45.0)  # degrees, uniform
FROST = ((1.0, 0.2), (1.0, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))  # (image weight, frost weight)
FOG = ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75))  # (fog weight, wibble decay)
BRIGHTNESS_SHIFT = (0.05, 0.1, 0.15, 0.2, 0.3)  # added to V in HSV
CONTRAST_FACTOR = (0.75, 0.5, 0.4, 0.3, 0.15)  # (x - per-channel mean) * c + mean
# (alpha, sigma, affine) as fractions of the image size (make_cifar_c.py: IMSIZE * c with IMSIZE = 32)
ELASTIC_TRANSFORM = (
    (0.0, 0.0, 0.08),
    (0.05, 0.2, 0.07),
    (0.08, 0.06, 0.06),
    (0.1, 0.04, 0.05),
    (0.1, 0.03, 0.03),
)
PIXELATE_FRACTION = (0.95, 0.9, 0.85, 0.75, 0.65)  # box-downsample to int(size * c), box-upsample back
JPEG_QUALITY = (80, 65, 58, 50, 40)
GAUSSIAN_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)  # pixels (an extra corruption, not in the 15)

FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.png", "frost5.png")
FROST_SCALE = 0.2  # make_cifar_c.py reduces the frost photographs by this factor (done once, see frost/)

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


def _uniform(shape, low: float, high: float, generator, device) -> Tensor:
    """float64 U(low, high) draws (geometry: angles, offsets)."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return low + (high - low) * u


def extend_index(index: Tensor, size: int, mode: str) -> Tensor:
    """Map integer positions (any tensor) into ``0..size-1`` by extending the signal beyond its edges.

    ``mode``: ``"edge"`` (a a a | a b c | c c c: scipy "nearest", ImageMagick's default virtual pixels),
    ``"mirror"`` (c b | a b c | b a: OpenCV's default BORDER_REFLECT_101, scipy "mirror"), ``"symmetric"``
    (b a | a b c | c b: scipy/skimage "reflect"). Works for offsets of any size (repeated reflection).
    """
    if mode == "edge":
        return index.clamp(0, size - 1)
    if size == 1:
        return torch.zeros_like(index)
    if mode == "mirror":
        period = 2 * (size - 1)
        index = index.remainder(period)
        return torch.where(index >= size, period - index, index)
    if mode == "symmetric":
        period = 2 * size
        index = index.remainder(period)
        return torch.where(index >= size, period - 1 - index, index)
    raise ValueError(f"mode must be 'edge', 'mirror' or 'symmetric', got {mode!r}")


def _correlate(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """2-D cross-correlation of every (H, W) plane of x (..., H, W) with an odd-sized kernel (kh, kw),
    the borders extended by ``mode`` (see :func:`extend_index`); "same" output size."""
    *lead, h, w = x.shape
    kh, kw = kernel.shape
    rows = extend_index(torch.arange(-(kh // 2), h + kh // 2, device=x.device), h, mode)
    cols = extend_index(torch.arange(-(kw // 2), w + kw // 2, device=x.device), w, mode)
    padded = x.index_select(-2, rows).index_select(-1, cols)
    # A sum of shifted copies: these kernels are small (at most 9 taps a side here) and often sparse,
    # and a one-channel conv2d over N * C planes is several times slower on CPU.
    out = torch.zeros_like(x)
    for (i, j), weight in zip(torch.nonzero(kernel).tolist(), kernel[kernel != 0].tolist(), strict=True):
        out += weight * padded[..., i : i + h, j : j + w]
    return out


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, device=None) -> Tensor:
    """Normalized 1-D Gaussian kernel of radius ``int(truncate * sigma + 0.5)`` (scipy.ndimage's)."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_filter(x: Tensor, sigma: float, mode: str, truncate: float = 4.0) -> Tensor:
    """skimage.filters.gaussian / scipy.ndimage.gaussian_filter over the last two axes of x (..., H, W),
    separable, borders extended by ``mode``; sigma ~ 0 returns x, as scipy does."""
    if sigma <= 1e-15:
        return x
    kernel = gaussian_kernel1d(sigma, truncate, device=x.device).to(x.dtype)
    x = _correlate(x, kernel.view(1, -1), mode)
    return _correlate(x, kernel.view(-1, 1), mode)


def _bilinear(x: Tensor, rows: Tensor, cols: Tensor, mode: str) -> Tensor:
    """Sample x (N, C, H, W) at real positions rows, cols (N, H', W') (pixel centres at integers) by
    bilinear interpolation of the signal extended beyond its edges by ``mode``: (N, C, H', W')."""
    n, c, h, w = x.shape
    r0, c0 = rows.floor(), cols.floor()
    fr, fc = (rows - r0).to(x.dtype), (cols - c0).to(x.dtype)
    r0, c0 = r0.long(), c0.long()
    flat = x.reshape(n, c, h * w)
    out = torch.zeros(n, c, *rows.shape[1:], dtype=x.dtype, device=x.device)
    for dr, wr in ((0, 1 - fr), (1, fr)):
        for dc, wc in ((0, 1 - fc), (1, fc)):
            index = extend_index(r0 + dr, h, mode) * w + extend_index(c0 + dc, w, mode)
            values = flat.gather(2, index.reshape(n, 1, -1).expand(n, c, -1)).reshape(out.shape)
            out += (wr * wc).unsqueeze(1) * values
    return out


def _gather_shifted(x: Tensor, row_offset: Tensor, col_offset: Tensor, mode: str) -> Tensor:
    """x (N, C, H, W) shifted by integer offsets per image (N,): out[y, x] = x[y + dy, x + dx]."""
    n, c, h, w = x.shape
    rows = extend_index(torch.arange(h, device=x.device) + row_offset[:, None], h, mode)  # (N, H)
    cols = extend_index(torch.arange(w, device=x.device) + col_offset[:, None], w, mode)  # (N, W)
    index = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, -1)
    return x.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)


def _grey(x: Tensor) -> Tensor:
    """OpenCV's RGB2GRAY weights (N, 1, H, W); a one-channel image is its own grey."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return torch.einsum("nchw,c->nhw", x, weights).unsqueeze(1)


def motion_blur_kernel(radius: float, sigma: float) -> Tensor:
    """ImageMagick's one-sided motion-blur weights (float64, length ``2 ceil(radius) + 1``): tap i (0 =
    the pixel itself) weighs ``exp(-i^2 / (2 sigma^2))``, normalized to sum 1."""
    width = 2 * math.ceil(radius) + 1
    i = torch.arange(width, dtype=torch.float64)
    kernel = torch.exp(-(i**2) / (2.0 * sigma * sigma))
    return kernel / kernel.sum()


def motion_blur_offsets(width: int, angle_deg: Tensor) -> tuple[Tensor, Tensor]:
    """ImageMagick's tap offsets (dx, dy), each (N, width) int64, for angles (N,) in degrees:
    ``dx_i = ceil(i cos(angle) - 0.5)``, ``dy_i = ceil(i sin(angle) - 0.5)`` (y points down)."""
    theta = torch.deg2rad(angle_deg.to(torch.float64))[:, None]
    i = torch.arange(width, dtype=torch.float64, device=angle_deg.device)
    dx = torch.ceil(i * torch.cos(theta) - 0.5).long()
    dy = torch.ceil(i * torch.sin(theta) - 0.5).long()
    return dx, dy


def _motion_blur(x: Tensor, radius: float, sigma: float, angle_deg: Tensor) -> Tensor:
    kernel = motion_blur_kernel(radius, sigma).to(device=x.device, dtype=x.dtype)
    dx, dy = motion_blur_offsets(kernel.numel(), angle_deg)
    out = torch.zeros_like(x)
    for i in range(kernel.numel()):
        out += kernel[i] * _gather_shifted(x, dy[:, i], dx[:, i], "edge")
    return out


def clipped_zoom_matrix(size: int, factor: float, device=None) -> Tensor:
    """(size, size) float64 matrix of make_cifar_c.py's ``clipped_zoom`` along one axis: crop the central
    ``ceil(size / factor)`` pixels, zoom them by ``factor`` with ``scipy.ndimage.zoom(order=1)`` (output
    ``round(crop * factor)`` pixels, output j at input ``j (crop - 1) / (out - 1)``), keep the central
    ``size``."""
    crop = int(math.ceil(size / factor))
    top = (size - crop) // 2
    out = int(round(crop * factor))
    trim = (out - size) // 2
    j = torch.arange(trim, trim + size, dtype=torch.float64)
    position = j * (crop - 1) / (out - 1) if out > 1 else torch.zeros_like(j)
    low = position.floor().clamp(0, crop - 1)
    frac = position - low
    high = (low + 1).clamp(max=crop - 1)
    matrix = torch.zeros(size, size, dtype=torch.float64)
    rows = torch.arange(size)
    matrix.index_put_((rows, top + low.long()), 1 - frac, accumulate=True)
    matrix.index_put_((rows, top + high.long()), frac, accumulate=True)
    return matrix.to(device)


def _clipped_zoom(x: Tensor, factor: float) -> Tensor:
    rows = clipped_zoom_matrix(x.shape[-2], factor, x.device).to(x.dtype)
    cols = clipped_zoom_matrix(x.shape[-1], factor, x.device).to(x.dtype)
    return torch.einsum("oh,nchw,pw->ncop", rows, x, cols)


# ----------------------------------------------------------------------------------------- noise


def gaussian_noise(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Additive white Gaussian noise, std ``GAUSSIAN_NOISE_STD[severity - 1]`` in [0, 1] units, clipped.
    Draws: ``randn(images.shape)`` (float32)."""
    _check(images, severity)
    std = GAUSSIAN_NOISE_STD[severity - 1]
    x = _to_unit(images)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return _to_uint8(x + std * noise)


def shot_noise(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Poisson (photon) noise: ``Poisson(x c) / c`` with ``c = SHOT_NOISE_RATE[severity - 1]``, clipped.
    Draws: ``torch.poisson(x c)`` (float32)."""
    _check(images, severity)
    rate = float(SHOT_NOISE_RATE[severity - 1])
    x = _to_unit(images)
    return _to_uint8(torch.poisson(x * rate, generator=generator) / rate)


def impulse_noise(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Salt-and-pepper noise (skimage's ``random_noise(mode="s&p")``): each value independently (every
    channel on its own) is replaced with probability ``IMPULSE_NOISE_AMOUNT[severity - 1]``, by 1 (salt)
    or 0 (pepper) with equal odds. Draws: ``rand(shape) < amount``, then ``rand(shape) < 0.5`` (salt)."""
    _check(images, severity)
    amount = IMPULSE_NOISE_AMOUNT[severity - 1]
    x = _to_unit(images)
    flipped = torch.rand(x.shape, generator=generator, device=x.device) < amount
    salted = torch.rand(x.shape, generator=generator, device=x.device) < 0.5
    return _to_uint8(torch.where(flipped, salted.to(x.dtype), x))


# ------------------------------------------------------------------------------------------- blur


def defocus_kernel(radius: float, alias_blur: float) -> Tensor:
    """make_cifar_c.py's ``disk``: the pixels of a 17 x 17 grid (``(2 radius + 1)^2`` beyond radius 8)
    with ``x^2 + y^2 <= radius^2``, normalized, then blurred by OpenCV's GaussianBlur (3 x 3, 5 x 5
    beyond radius 8, sigma ``alias_blur``). Returned cut to its nonzero support (zeros add nothing), as
    float64 (k, k), k odd."""
    if radius <= 8:
        grid, ksize = torch.arange(-8, 9, dtype=torch.float64), 3
    else:
        grid, ksize = torch.arange(-radius, radius + 1, dtype=torch.float64), 5
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).to(torch.float64)
    disk = disk / disk.sum()
    taps = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    gauss = torch.exp(-(taps**2) / (2 * alias_blur**2))
    gauss = gauss / gauss.sum()
    kernel = _correlate(disk, gauss.view(1, -1), "mirror")
    kernel = _correlate(kernel, gauss.view(-1, 1), "mirror")
    centre = kernel.shape[0] // 2
    nonzero = kernel.abs() > 0
    reach = int(max(abs(i - centre) for i in range(kernel.shape[0]) if nonzero[i].any()))
    return kernel[centre - reach : centre + reach + 1, centre - reach : centre + reach + 1]


def defocus_blur(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Defocus: correlation with :func:`defocus_kernel` of ``DEFOCUS_BLUR[severity - 1]`` = (radius,
    alias_blur), borders mirrored (OpenCV filter2D's default BORDER_REFLECT_101)."""
    _check(images, severity)
    radius, alias_blur = DEFOCUS_BLUR[severity - 1]
    kernel = defocus_kernel(radius, alias_blur).to(images.device)
    return _to_uint8(_correlate(_to_unit(images), kernel, "mirror"))


def glass_blur(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Frosted-glass blur, ``GLASS_BLUR[severity - 1]`` = (sigma, delta, iterations): Gaussian blur
    (sigma, edges extended), truncated to uint8 as in the original, ``iterations`` rounds of local pixel
    shuffling, and the same Gaussian blur again.

    The shuffle: the original visits h = H - delta ... delta + 1 (descending) and likewise w, draws
    ``dx, dy = np.random.randint(-delta, delta)`` (so in -delta..delta-1) and "swaps" ``x[h, w]`` with
    ``x[h + dy, w + dx]`` by a tuple assignment of two numpy row views, which copies ``x[h + dy, w + dx]``
    into ``x[h, w]`` and leaves the other pixel as it was. CIFAR-10-C was made with that, so it is what
    is reproduced here. With delta = 1 (every CIFAR severity) the source pixel is never one that was
    written before in the same round, so a round is a single gather. Draws, per round: ``randint(-delta,
    delta, (N, 2, H - 2 delta, W - 2 delta))``, [:, 0] the row shift dy and [:, 1] the column shift dx,
    indexed by (h - delta - 1, w - delta - 1).
    """
    _check(images, severity)
    sigma, delta, iterations = GLASS_BLUR[severity - 1]
    if delta != 1:  # the single-gather round below needs it (see the docstring)
        raise NotImplementedError("glass_blur's shuffle is implemented for delta = 1")
    n, c, h, w = images.shape
    x = torch.floor(gaussian_filter(_to_unit(images), sigma, "edge") * 255.0).clamp(0, 255)
    nh, nw = h - 2 * delta, w - 2 * delta
    if nh > 0 and nw > 0:
        rows = torch.arange(delta + 1, h - delta + 1, device=x.device)
        cols = torch.arange(delta + 1, w - delta + 1, device=x.device)
        for _ in range(iterations):
            shifts = torch.randint(-delta, delta, (n, 2, nh, nw), generator=generator, device=x.device)
            source = (rows[:, None] + shifts[:, 0]) * w + (cols[None, :] + shifts[:, 1])  # (N, nh, nw)
            values = x.reshape(n, c, h * w).gather(2, source.reshape(n, 1, -1).expand(n, c, -1))
            x = x.clone()
            x[:, :, delta + 1 :, delta + 1 :] = values.reshape(n, c, nh, nw)
    return _to_uint8(gaussian_filter(x / 255.0, sigma, "edge"))


def motion_blur(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Motion blur as ImageMagick's ``MotionBlurImage(radius, sigma, angle)`` with ``MOTION_BLUR[severity
    - 1]`` = (radius, sigma) and an angle uniform in ``MOTION_BLUR_ANGLE`` degrees per image.

    The kernel is one-sided: out(y, x) = sum_i k_i in(y + dy_i, x + dx_i), i = 0 .. 2 ceil(radius), with
    :func:`motion_blur_kernel` weights and :func:`motion_blur_offsets`, pixels beyond the border taken from
    the nearest edge (ImageMagick's default virtual pixels). Written out from ImageMagick 6's source and
    checked against ImageMagick 6.9.11 ``convert -motion-blur``: equal before the 8-bit output, which
    ImageMagick truncates (floor) and this module rounds, as every output here (the adaptation above).
    Draws: ``rand(N, float64)`` for the angles.
    """
    _check(images, severity)
    radius, sigma = MOTION_BLUR[severity - 1]
    low, high = MOTION_BLUR_ANGLE
    angle = _uniform((images.shape[0],), low, high, generator, images.device)
    return _to_uint8(_motion_blur(_to_unit(images), radius, sigma, angle))


def zoom_blur_factors(severity: int) -> tuple[float, ...]:
    """The zoom factors of zoom_blur, ``np.arange(1, ZOOM_BLUR_END[severity - 1], 0.01)`` as published.

    numpy's float steps matter: the ends 1.06 and 1.11 are included but 1.16, 1.21 and 1.26 are not
    (7, 12, 16, 21, 26 factors), and 1.25 is 1.2500000000000002, which makes scipy's zoomed size
    ``round(26 * 1.25...)`` 33 rather than 32.
    """
    return tuple(float(z) for z in np.arange(1.0, ZOOM_BLUR_END[severity - 1], ZOOM_BLUR_STEP))


def zoom_blur(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Zoom blur: the mean of the image and its :func:`clipped_zoom_matrix` zooms by every factor of
    :func:`zoom_blur_factors` (factor 1, the image itself, included, as in the original)."""
    _check(images, severity)
    x = _to_unit(images)
    factors = zoom_blur_factors(severity)
    h, w = x.shape[-2:]
    rows = torch.stack([clipped_zoom_matrix(h, f) for f in factors]).to(device=x.device, dtype=x.dtype)
    cols = torch.stack([clipped_zoom_matrix(w, f) for f in factors]).to(device=x.device, dtype=x.dtype)
    # sum over the factors inside one contraction: a loop of einsums is ~10x slower on CPU
    zoomed = torch.einsum("zoh,nchw,zpw->ncop", rows, x, cols)
    return _to_uint8((x + zoomed) / (len(factors) + 1))


# ---------------------------------------------------------------------------------------- weather


def snow(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Snow, ``SNOW[severity - 1]`` = (mean, std, zoom, threshold, radius, sigma, weight):

    a layer ~ N(mean, std^2) per pixel, :func:`clipped_zoom_matrix` by ``zoom``, zeroed below
    ``threshold``, clipped and truncated to 8 bits, motion-blurred (radius, sigma, an angle uniform in
    ``SNOW_ANGLE``; truncated to 8 bits as ImageMagick writes it); the image is whitened,
    ``weight x + (1 - weight) max(x, 1.5 grey(x) + 0.5)``, and the layer and its 180-degree rotation
    added, clipped. Draws: ``randn(N, 1, H, W)`` (float64) for the layer, then ``rand(N, float64)`` for
    the angles.
    """
    _check(images, severity)
    mean, std, zoom, threshold, radius, sigma, weight = SNOW[severity - 1]
    n, _, h, w = images.shape
    layer = mean + std * torch.randn(
        n, 1, h, w, generator=generator, device=images.device, dtype=torch.float64
    )
    low, high = SNOW_ANGLE
    angle = _uniform((n,), low, high, generator, images.device)
    layer = _clipped_zoom(layer, zoom)
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0, 1) * 255.0)
    # ImageMagick (6.9.11) writes the blurred layer truncated to 8 bits: an intermediate step, kept.
    layer = torch.floor(_motion_blur(layer, radius, sigma, angle)).float() / 255.0
    x = _to_unit(images)
    x = weight * x + (1 - weight) * torch.maximum(x, _grey(x) * 1.5 + 0.5)
    return _to_uint8(x + layer + layer.flip(-2, -1))


_FROST_CACHE: dict[str, list[Tensor]] = {}


def frost_images(device=None) -> list[Tensor]:
    """The five reduced frost overlays, uint8 (3, h, w) each, on ``device`` (read once, cached)."""
    key = str(torch.device(device) if device is not None else torch.device("cpu"))
    if key not in _FROST_CACHE:
        from PIL import Image

        folder = resources.files("vprob.diagnostics") / "frost"
        overlays = []
        for name in FROST_FILES:
            path = folder / name
            if not path.is_file():
                raise FileNotFoundError(
                    f"frost overlay {name} is missing from {folder}: the frost corruption needs the files "
                    "shipped in vprob/diagnostics/frost/ (see its README.md)"
                )
            with path.open("rb") as handle:
                pixels = np.asarray(Image.open(handle).convert("RGB"))
            overlays.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1).contiguous().to(key))
        _FROST_CACHE[key] = overlays
    return _FROST_CACHE[key]


def frost(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Frost: ``clip(a x + b F, 0, 255)`` in 0..255 units, ``FROST[severity - 1]`` = (a, b), F an H x W
    crop of one of the five frost overlays (:func:`frost_images`; grey for one-channel images), overlay
    and crop uniform per image as in ``np.random.randint(5)`` and ``np.random.randint(0, size - H)``.

    Draws: ``randint(5, (N,))`` for the overlay, then ``rand(N, 2, float64)`` for the crop's top and left,
    ``floor(u (size - H))``. Raises ValueError for images larger than 62 x 104 (the smallest overlay is
    63 x 105).
    """
    _check(images, severity)
    a, b = FROST[severity - 1]
    n, c, h, w = images.shape
    overlays = frost_images(images.device)
    sizes = torch.tensor([o.shape[1:] for o in overlays], device=images.device)  # (5, 2)
    if h >= int(sizes[:, 0].min()) or w >= int(sizes[:, 1].min()):
        raise ValueError(
            f"frost needs images smaller than {int(sizes[:, 0].min())} x "
            f"{int(sizes[:, 1].min())} (the smallest frost overlay), got {h} x {w}"
        )
    which = torch.randint(len(overlays), (n,), generator=generator, device=images.device)
    u = torch.rand(n, 2, generator=generator, device=images.device, dtype=torch.float64)
    room = (sizes[which] - torch.tensor([h, w], device=images.device)).to(torch.float64)
    start = torch.floor(u * room).long()  # (N, 2): top, left
    stacked = torch.zeros(
        len(overlays),
        3,
        int(sizes[:, 0].max()),
        int(sizes[:, 1].max()),
        dtype=torch.uint8,
        device=images.device,
    )
    for i, overlay in enumerate(overlays):
        stacked[i, :, : overlay.shape[1], : overlay.shape[2]] = overlay
    rows = start[:, 0:1] + torch.arange(h, device=images.device)  # (N, H)
    cols = start[:, 1:2] + torch.arange(w, device=images.device)  # (N, W)
    crop = stacked[which[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (N, H, W, 3)
    crop = crop.permute(0, 3, 1, 2).float()
    if c == 1:
        crop = _grey(crop)
    return _to_uint8((a * images.float() + b * crop).clamp(0, 255) / 255.0)


def plasma_fractal(
    n: int, mapsize: int, decay: float, generator: torch.Generator | None = None, device=None
) -> Tensor:
    """make_cifar_c.py's diamond-square height maps, (n, mapsize, mapsize) float64 in [0, 1] (each map's
    min 0 and max 1), ``mapsize`` a power of two, wrapping around the edges.

    At each level (step = mapsize, mapsize / 2, ..., 2; wibble = 100, then divided by ``decay`` per level)
    the square centres, then the two diamond sets get the mean of their 4 neighbours plus
    ``wibble U(-wibble, wibble)``. Draws, per level: ``rand(n, k, k, float64)`` for the squares, then the
    same for the diamonds on the rows of the corners, then those on their columns (k = mapsize / step).
    """
    if mapsize < 1 or mapsize & (mapsize - 1):
        raise ValueError(f"mapsize must be a power of two, got {mapsize}")
    maps = torch.zeros(n, mapsize, mapsize, dtype=torch.float64, device=device)
    step, wibble = mapsize, 100.0

    def wibbled_mean(total: Tensor) -> Tensor:
        return total / 4 + wibble * _uniform(total.shape, -wibble, wibble, generator, device)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, dims=1)
        squares = squares + squares.roll(-1, dims=2)
        maps[:, half::step, half::step] = wibbled_mean(squares)
        centres, corners = maps[:, half::step, half::step], maps[:, 0::step, 0::step]
        left = centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2)
        maps[:, 0::step, half::step] = wibbled_mean(left)
        top = centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1)
        maps[:, half::step, 0::step] = wibbled_mean(top)
        step //= 2
        wibble /= decay
    maps = maps - maps.amin(dim=(1, 2), keepdim=True)
    return maps / maps.amax(dim=(1, 2), keepdim=True)


def fog(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Fog, ``FOG[severity - 1]`` = (a, decay): ``clip((x + a P) m / (m + a), 0, 1)``, P the top-left
    H x W of a :func:`plasma_fractal` with that decay (the same P in every channel) and m the image's
    maximum. Size: the plasma map is the smallest power of two >= max(H, W) (32 for CIFAR, where the
    original's is 32). Draws: those of :func:`plasma_fractal`."""
    _check(images, severity)
    a, decay = FOG[severity - 1]
    n, _, h, w = images.shape
    mapsize = 1 << (max(h, w) - 1).bit_length()
    plasma = plasma_fractal(n, mapsize, decay, generator, images.device)[:, None, :h, :w].float()
    x = _to_unit(images)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return _to_uint8((x + a * plasma) * peak / (peak + a))


# ---------------------------------------------------------------------------------------- digital


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


def elastic_transform(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Elastic transform, ``ELASTIC_TRANSFORM[severity - 1]`` = (alpha, sigma, affine) times the image size
    s = min(H, W) (32 for CIFAR, as the original's IMSIZE):

    1. a random affine warp: the points (c + q, c + q), (c + q, c - q), (c - q, c - q) as (x, y), c the
       centre (W // 2, H // 2), q = s // 3, each coordinate moved by U(-affine, affine), the map from the
       first triple to the moved one applied as OpenCV's warpAffine (bilinear, BORDER_REFLECT_101);
    2. a displacement field: dx, dy = alpha * gaussian(U(-1, 1) per pixel, sigma, mode "reflect",
       truncate 3), each pixel (i, j) read from (i + dy, j + dx) by bilinear interpolation with the image
       extended symmetrically (scipy map_coordinates, order 1, mode "reflect").

    Difference: warpAffine rounds source positions to 1/32 pixel; here they are exact (a change of at
    most a few grey levels at sharp edges). Draws: ``rand(N, 3, 2, float64)`` for the affine moves, then
    ``rand(N, H, W, float64)`` for dx, then for dy.
    """
    _check(images, severity)
    n, _, h, w = images.shape
    size = min(h, w)
    alpha, sigma, affine = (size * f for f in ELASTIC_TRANSFORM[severity - 1])
    device = images.device
    moves = _uniform((n, 3, 2), -affine, affine, generator, device)
    field_x = _uniform((n, h, w), -1.0, 1.0, generator, device)
    field_y = _uniform((n, h, w), -1.0, 1.0, generator, device)

    cx, cy, q = float(w // 2), float(h // 2), float(size // 3)
    source = torch.tensor(
        [[cx + q, cy + q], [cx + q, cy - q], [cx - q, cy - q]], dtype=torch.float64, device=device
    )
    target = source + moves  # (N, 3, 2)
    # warpAffine maps each output pixel p to the input at M^-1 p: solve for the affine map target -> source.
    ones = torch.ones(n, 3, 1, dtype=torch.float64, device=device)
    inverse = torch.linalg.solve(torch.cat([target, ones], dim=2), source.expand(n, 3, 2))  # (N, 3, 2)
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float64, device=device),
        torch.arange(w, dtype=torch.float64, device=device),
        indexing="ij",
    )
    coefficient = inverse[:, :, :, None, None]  # (N, 3, 2, 1, 1): rows x, y, 1; columns x', y'
    src_x = xx * coefficient[:, 0, 0] + yy * coefficient[:, 1, 0] + coefficient[:, 2, 0]
    src_y = xx * coefficient[:, 0, 1] + yy * coefficient[:, 1, 1] + coefficient[:, 2, 1]
    x = _bilinear(_to_unit(images), src_y, src_x, "mirror")

    dx = alpha * gaussian_filter(field_x, sigma, "symmetric", truncate=3.0)
    dy = alpha * gaussian_filter(field_y, sigma, "symmetric", truncate=3.0)
    x = _bilinear(x, yy + dy, xx + dx, "symmetric")
    return _to_uint8(x)


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


def jpeg_compression(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """JPEG re-encoding at quality ``JPEG_QUALITY[severity - 1]`` (PIL's libjpeg with its default 4:2:0
    chroma subsampling for RGB, per image on CPU; 1 or 3 channels)."""
    _check(images, severity)
    from PIL import Image

    channels = images.shape[1]
    if channels not in (1, 3):
        raise ValueError(f"jpeg_compression needs 1 or 3 channels, got {channels}")
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


# ------------------------------------------------------------------------------------------ extra


def gaussian_blur(images: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian blur with sigma ``GAUSSIAN_BLUR_SIGMA[severity - 1]`` pixels, per channel, edges extended
    by the nearest pixel (skimage.filters.gaussian's defaults). One of CIFAR-10-C's extra corruptions."""
    _check(images, severity)
    return _to_uint8(gaussian_filter(_to_unit(images), GAUSSIAN_BLUR_SIGMA[severity - 1], "edge"))


# --------------------------------------------------------------------------------------- registry

CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}
EXTRA_CORRUPTIONS: dict[str, Corruption] = {"gaussian_blur": gaussian_blur}
ALL_CORRUPTIONS: dict[str, Corruption] = {**CORRUPTIONS, **EXTRA_CORRUPTIONS}
CIFAR10_C = tuple(CORRUPTIONS)  # the standard 15, in CIFAR-10-C's order


def corrupt(images: Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """Apply the corruption ``name`` (a key of ``ALL_CORRUPTIONS``) at ``severity`` (1..5) to uint8 images
    (N, C, H, W); see the module docstring. Raises ValueError for an unknown name or severity."""
    if name not in ALL_CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; valid names: {', '.join(ALL_CORRUPTIONS)}")
    return ALL_CORRUPTIONS[name](images, severity, generator=generator)


def mean_over_corruptions(
    results: Mapping[str, float | Mapping[int, float]],
    corruptions: Sequence[str] | None = None,
) -> dict[str, object]:
    """Average results over the corruption set, as the CIFAR-10-C literature reports them (e.g. the mean
    corruption error, or the mean over corruptions of a per-image Spearman).

    Args:
        results: ``{corruption: {severity: value}}`` (severities 1..5; a severity-0 / clean entry is left
            out of every mean) or ``{corruption: value}`` (already one number per corruption).
        corruptions: the set to average over; default: those of the standard 15 (``CIFAR10_C``) present in
            ``results`` (extras such as ``gaussian_blur`` are left out unless named here).

    Returns:
        ``mean``: the mean over the set of each corruption's mean over severities (with the same
        severities for every corruption this is the mean over all (corruption, severity) pairs);
        ``per_corruption``: ``{corruption: mean over its severities}``; ``per_severity``: ``{severity: mean
        over the set}`` (only for nested input); ``corruptions``: the set used; ``missing``: the standard
        names absent from ``results``; ``complete``: whether all 15 are in the set. NaN values propagate.

    Raises:
        ValueError: an empty set, a name not in ``results``, or corruptions with different severities.
    """
    if not isinstance(results, Mapping):
        raise TypeError(
            f"results must be a mapping of corruption names to values, got {type(results).__name__}"
        )
    if corruptions is None:
        corruptions = [name for name in CIFAR10_C if name in results]
    corruptions = list(corruptions)
    if not corruptions:
        raise ValueError("corruptions: no corruption to average over")
    absent = [name for name in corruptions if name not in results]
    if absent:
        raise ValueError(f"corruptions: {', '.join(absent)} not in results")
    nested = [isinstance(results[name], Mapping) for name in corruptions]
    if any(nested) and not all(nested):
        raise ValueError("results mixes per-severity mappings and single values")
    per_corruption: dict[str, float] = {}
    per_severity: dict[int, list[float]] = {}
    for name in corruptions:
        value = results[name]
        if not isinstance(value, Mapping):
            per_corruption[name] = float(value)
            continue
        by_severity = {int(s): float(v) for s, v in value.items() if int(s) != 0}
        if not by_severity:
            raise ValueError(f"results[{name!r}] has no severity 1..5")
        if not per_severity:
            per_severity = {s: [] for s in sorted(by_severity)}
        elif sorted(by_severity) != sorted(per_severity):
            raise ValueError(
                f"results[{name!r}] has severities {sorted(by_severity)}, the others {sorted(per_severity)}"
            )
        for s, v in by_severity.items():
            per_severity[s].append(v)
        per_corruption[name] = float(np.mean(list(by_severity.values())))
    summary: dict[str, object] = {
        "mean": float(np.mean(list(per_corruption.values()))),
        "per_corruption": per_corruption,
        "corruptions": corruptions,
        "missing": [name for name in CIFAR10_C if name not in results],
        "complete": all(name in corruptions for name in CIFAR10_C),
    }
    if per_severity:
        summary["per_severity"] = {s: float(np.mean(v)) for s, v in per_severity.items()}
    return summary
