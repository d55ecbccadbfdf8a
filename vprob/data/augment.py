"""Batched SimCLR augmentation on the device, with per-sample random parameters (airbench style).

The whole batch goes through one random-resized-crop (+ flip) as a single ``affine_grid`` /
``grid_sample`` call, then colour jitter, grayscale and normalization, all as tensor ops over the batch.
Every random number comes from one ``torch.rand`` call on the passed generator, so a fixed generator
state gives a fixed result, and after the first call on a device nothing in ``__call__`` waits for
the device (no host syncs).

Semantics follow torchvision's ``RandomResizedCrop -> RandomHorizontalFlip -> RandomApply(ColorJitter, p)
-> RandomGrayscale -> Normalize`` with two deliberate differences:

- crop boxes are continuous (sub-pixel position and size) rather than rounded to whole pixels; and
- the crop is resampled bilinearly without antialiasing, which only matters when a crop is larger than
  the output (``image_size`` below the input size; our recipes keep the input size, so crops are upsampled).

Constants are Python scalars or cached per device: building a tensor from a Python list on CUDA would be
a synchronous host-to-device copy in the hot path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vprob.data.datasets import check_image_batch

__all__ = [
    "AugmentParams",
    "SimCLRAugment",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "gaussian_blur",
    "rgb_to_grayscale",
]

# ITU-R 601-2 luma weights, as torchvision's rgb_to_grayscale uses them.
_LUMA = (0.2989, 0.587, 0.114)
_CROP_ATTEMPTS = 10  # as torchvision's RandomResizedCrop.get_params
# Layout of the per-sample uniform draws: 4 per crop attempt, then flip, jitter gate, 4 jitter factors,
# 4 order keys, grayscale gate.
_N_CROP = 4 * _CROP_ATTEMPTS
_N_DRAWS = _N_CROP + 1 + 1 + 4 + 4 + 1
_NEUTRAL = (1.0, 1.0, 1.0, 0.0)  # brightness, contrast, saturation, hue factors that change nothing


# --------------------------------------------------------------------------- batched colour functionals
# Each takes float images (N, C, H, W) in [0, 1] and a per-sample factor (N,), and matches the torchvision
# functional of the same name applied image by image (torchvision.transforms.functional).


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma; a 1-channel input is returned as it is."""
    if x.shape[-3] == 1:
        return x
    r, g, b = x.unbind(dim=-3)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(-3)


def _per_sample(factor: Tensor, x: Tensor) -> Tensor:
    return factor.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    f = _per_sample(factor, x)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Scale intensities by ``factor`` (N,) and clip to [0, 1]."""
    return (x * _per_sample(factor, x)).clamp_(0.0, 1.0)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with the mean of its grayscale version (a constant gray image)."""
    mean = rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend each image with its own grayscale version (RGB only)."""
    return _blend(x, rgb_to_grayscale(x), factor)


def adjust_hue(x: Tensor, factor: Tensor) -> Tensor:
    """Rotate the hue by ``factor`` (N,) turns (in [-0.5, 0.5]), keeping HSV saturation and value.

    RGB -> HSV -> RGB in closed form. With M = max, m = min and C = M - m over the three channels, the
    hue in sextants is h6 = (G - B) / C, 2 + (B - R) / C or 4 + (R - G) / C when M is R, G or B (as in
    torchvision's _rgb2hsv); after the shift, HSV -> RGB with V = M and S = C / M is
    ``channel_n = M - C * clamp(min(k_n, 4 - k_n), 0, 1)``, ``k_n = (n + h6) mod 6``, n = 5, 3, 1 for
    R, G, B (the textbook formula, equal to torchvision's sector table). Gray pixels (C = 0) are unchanged.
    """
    maxc = x.amax(dim=-3)
    minc = x.amin(dim=-3)
    chroma = maxc - minc
    safe = torch.where(chroma > 0, chroma, 1.0)
    r, g, b = x.unbind(dim=-3)
    # Hue in sextants (units of 60 degrees), with torchvision's precedence R > G > B among equal maxima.
    h6 = torch.where(
        maxc == r,
        (g - b) / safe,
        torch.where(maxc == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    h6 = torch.remainder(h6 + 6.0 * _per_sample(factor, h6), 6.0)
    # n = 5, 3, 1 for R, G, B; arange builds the constant on the device (no host-to-device copy).
    n = torch.arange(5.0, 0.0, -2.0, dtype=x.dtype, device=x.device).view(3, 1, 1)
    k = torch.remainder(h6.unsqueeze(-3) + n, 6.0)
    return maxc.unsqueeze(-3) - chroma.unsqueeze(-3) * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Blur each image of float ``x`` (N, C, H, W) with its own standard deviation ``sigma`` (N,) (0: none).

    torchvision's ``gaussian_blur`` image by image: the kernel is exp(-t^2 / (2 sigma^2)) at the integer
    offsets t = -(k-1)/2 .. (k-1)/2, normalized to sum 1, with reflection padding; applied as two 1-D passes
    (the 2-D kernel is their outer product) in one grouped convolution per pass over the whole batch.
    """
    n, c, h, w = x.shape
    half = kernel_size // 2
    t = torch.arange(-half, half + 1, dtype=x.dtype, device=x.device)
    s = _per_sample(sigma, t.unsqueeze(0)).clamp_min(1e-6)
    kernel = torch.exp(-0.5 * (t / s) ** 2)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    kernel = torch.where(_per_sample(sigma, kernel) > 0, kernel, (t == 0).to(x.dtype))  # a delta: identity
    weight = kernel.repeat_interleave(c, dim=0)  # (N * C, k): one kernel per image channel
    y = F.pad(x.reshape(1, n * c, h, w), (half, half, half, half), mode="reflect")
    y = F.conv2d(y, weight.view(n * c, 1, 1, kernel_size), groups=n * c)
    y = F.conv2d(y, weight.view(n * c, 1, kernel_size, 1), groups=n * c)
    return y.view(n, c, h, w)


# ------------------------------------------------------------------------------------------- parameters


@dataclass
class AugmentParams:
    """Per-sample augmentation parameters for a batch of N images (all tensors on the images' device).

    Attributes:
        box: (N, 4) crop boxes (x0, y0, w, h) in input pixels (continuous; the image spans [0, W] x [0, H]).
        flip: (N,) bool, horizontal flip.
        jitter: (N, 4) colour factors (brightness, contrast, saturation, hue); neutral (1, 1, 1, 0) for
            samples whose jitter block was not drawn.
        order: (N, 4) int64, per-sample permutation of the four jitter ops (order[i, s] = op in slot s).
        gray: (N,) bool, convert to grayscale.
        blur: (N,) Gaussian blur standard deviation in output pixels, 0 for no blur; ``None`` when the
            recipe has no blur (``blur_p == 0``).
    """

    box: Tensor
    flip: Tensor
    jitter: Tensor
    order: Tensor
    gray: Tensor
    blur: Tensor | None = None


def _factor_range(value: float, name: str, center: float, bound: tuple[float, float]) -> tuple[float, float]:
    if value < 0:
        raise ValueError(f"{name} jitter must be non-negative, got {value}")
    lo, hi = max(center - value, bound[0]), min(center + value, bound[1])
    return lo, hi


class SimCLRAugment:
    """SimCLR augmentation of uint8 image batches on their device.

    Args:
        image_size: output height and width.
        channels: 1 (grayscale data) or 3 (RGB).
        mean, std: per-channel normalization statistics in [0, 1] units (``ImageSet.mean`` / ``.std``).
        crop_scale: range of the crop's area as a fraction of the image area.
        crop_ratio: range of the crop's aspect ratio w/h, sampled log-uniformly.
        flip_p: probability of a horizontal flip.
        jitter: (brightness, contrast, saturation, hue) strengths as in torchvision's ColorJitter:
            factors uniform in [max(0, 1 - s), 1 + s] for the first three, hue shift in [-h, h] turns.
        jitter_p: probability that the colour-jitter block is applied (RandomApply).
        grayscale_p: probability of converting to grayscale (3 channels kept).
        random_order: apply the four jitter ops in a random per-sample order, as ColorJitter does
            (costs four evaluations of each enabled op; ``False`` uses the fixed order b, c, s, h).
        blur_p: probability of a Gaussian blur after grayscale (torchvision's ``RandomApply(GaussianBlur)``
            as SimCLR's ImageNet recipe uses it, p = 0.5); 0 (the default) draws no extra random numbers,
            so recipes without blur are unchanged.
        blur_sigma: range of the blur's standard deviation (uniform), in output pixels.
        blur_kernel: odd kernel size; default about 10 % of ``image_size`` made odd (SimCLR's choice).
    """

    def __init__(
        self,
        image_size: int,
        channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        crop_scale: tuple[float, float] = (0.08, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_p: float = 0.5,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        random_order: bool = True,
        blur_p: float = 0.0,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        blur_kernel: int | None = None,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} values each, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {crop_scale}")
        if not 0 < crop_ratio[0] <= crop_ratio[1]:
            raise ValueError(f"crop_ratio must satisfy 0 < lo <= hi, got {crop_ratio}")
        for name, p in (
            ("flip_p", flip_p),
            ("jitter_p", jitter_p),
            ("grayscale_p", grayscale_p),
            ("blur_p", blur_p),
        ):
            if not 0 <= p <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {p}")
        if len(jitter) != 4:
            raise ValueError(f"jitter needs 4 values (brightness, contrast, saturation, hue), got {jitter}")
        brightness, contrast, saturation, hue = (float(j) for j in jitter)
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue jitter must lie in [0, 0.5], got {hue}")
        if channels == 1 and (saturation > 0 or hue > 0 or grayscale_p > 0):
            raise ValueError("saturation, hue and grayscale augmentations need 3 channels; set them to 0")
        self.image_size = int(image_size)
        self.channels = channels
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))
        self.flip_p = float(flip_p)
        self.jitter = (brightness, contrast, saturation, hue)
        self.jitter_p = float(jitter_p)
        self.grayscale_p = float(grayscale_p)
        self.random_order = bool(random_order)
        if not 0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(f"blur_sigma must satisfy 0 < lo <= hi, got {blur_sigma}")
        if blur_kernel is None:
            blur_kernel = max(3, int(0.1 * self.image_size) // 2 * 2 + 1)
        if blur_kernel < 1 or blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be a positive odd integer, got {blur_kernel}")
        if blur_p > 0 and blur_kernel // 2 >= self.image_size:
            raise ValueError(
                f"blur_kernel {blur_kernel} is too large for {self.image_size}-pixel images "
                "(reflection padding needs kernel // 2 < image_size)"
            )
        self.blur_p = float(blur_p)
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.blur_kernel = int(blur_kernel)
        # (low, high) of each factor; the op is skipped entirely when the range is the neutral point.
        self._ranges = (
            _factor_range(brightness, "brightness", 1.0, (0.0, math.inf)),
            _factor_range(contrast, "contrast", 1.0, (0.0, math.inf)),
            _factor_range(saturation, "saturation", 1.0, (0.0, math.inf)),
            (-hue, hue),
        )
        self._enabled = tuple(j > 0 for j in self.jitter)
        self._affine_cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    @classmethod
    def for_dataset(cls, name: str, image_set, **overrides) -> SimCLRAugment:
        """The recipe of a registered data set (:mod:`vprob.data.registry`, where each recipe is explained),
        with statistics from ``image_set`` (an ImageSet); keyword ``overrides`` replace any argument."""
        from vprob.data.registry import augmentation_for

        return augmentation_for(name, image_set, **overrides)

    # ---------------------------------------------------------------------------------- sampling

    def sample_params(
        self, n: int, height: int, width: int, generator: torch.Generator | None, device: torch.device | str
    ) -> AugmentParams:
        """Draw per-sample parameters for ``n`` images of ``height`` x ``width`` (one RNG call)."""
        device = torch.device(device)
        if generator is not None and generator.device.type != device.type:
            raise ValueError(f"the generator is on {generator.device} but the images are on {device}")
        # Two more draws per sample only when the recipe blurs: recipes without blur keep their random stream.
        u = torch.rand(n, _N_DRAWS + (2 if self.blur_p > 0 else 0), generator=generator, device=device)
        box = self._sample_boxes(u[:, :_N_CROP].view(n, _CROP_ATTEMPTS, 4), height, width)
        flip = u[:, _N_CROP] < self.flip_p
        apply_jitter = u[:, _N_CROP + 1] < self.jitter_p
        jitter = torch.stack(
            [
                torch.where(apply_jitter, lo + (hi - lo) * u[:, _N_CROP + 2 + i], _NEUTRAL[i])
                for i, (lo, hi) in enumerate(self._ranges)
            ],
            dim=1,
        )
        order = u[:, _N_CROP + 6 : _N_CROP + 10].argsort(dim=1)  # a uniform random permutation per sample
        gray = u[:, _N_CROP + 10] < self.grayscale_p
        blur = None
        if self.blur_p > 0:
            lo, hi = self.blur_sigma
            blur = torch.where(u[:, _N_DRAWS] < self.blur_p, lo + (hi - lo) * u[:, _N_DRAWS + 1], 0.0)
        return AugmentParams(box=box, flip=flip, jitter=jitter, order=order, gray=gray, blur=blur)

    def _sample_boxes(self, u: Tensor, height: int, width: int) -> Tensor:
        """torchvision's RandomResizedCrop.get_params, vectorized: (N, attempts, 4) uniforms -> (N, 4) boxes.

        Each attempt draws an area fraction uniform in crop_scale and a log-uniform aspect ratio; the
        first attempt whose box fits inside the image wins; if none fits, the fallback is torchvision's
        (the whole image, its aspect ratio clamped to crop_ratio, centred).
        """
        area = float(height * width)
        log_lo, log_hi = math.log(self.crop_ratio[0]), math.log(self.crop_ratio[1])
        target = area * (self.crop_scale[0] + (self.crop_scale[1] - self.crop_scale[0]) * u[..., 0])
        aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
        w = torch.sqrt(target * aspect)
        h = torch.sqrt(target / aspect)
        fits = (w <= width) & (h <= height)
        first = fits.int().argmax(dim=1, keepdim=True)  # first fitting attempt (0 if none fits)
        any_fit = fits.any(dim=1)
        w = w.gather(1, first).squeeze(1)
        h = h.gather(1, first).squeeze(1)
        x0 = u[..., 2].gather(1, first).squeeze(1) * (width - w)
        y0 = u[..., 3].gather(1, first).squeeze(1) * (height - h)
        # Fallback box, a constant for the image size.
        in_ratio = width / height
        if in_ratio < self.crop_ratio[0]:
            fw, fh = float(width), width / self.crop_ratio[0]
        elif in_ratio > self.crop_ratio[1]:
            fw, fh = height * self.crop_ratio[1], float(height)
        else:
            fw, fh = float(width), float(height)
        fallback = ((width - fw) / 2, (height - fh) / 2, fw, fh)
        box = (x0, y0, w, h)
        return torch.stack([torch.where(any_fit, b, f) for b, f in zip(box, fallback, strict=True)], dim=1)

    # ---------------------------------------------------------------------------------- applying

    def __call__(
        self,
        images: Tensor,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> Tensor:
        """Augment uint8 images (N, C, H, W) -> normalized (N, C, image_size, image_size) of ``dtype``."""
        self._check(images)
        n, _, height, width = images.shape
        params = self.sample_params(n, height, width, generator, images.device)
        return self.apply(images, params, dtype=dtype, memory_format=memory_format)

    def apply(
        self,
        images: Tensor,
        params: AugmentParams,
        dtype: torch.dtype = torch.float32,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> Tensor:
        """Apply given parameters to uint8 images (N, C, H, W); see ``__call__``."""
        self._check(images)
        x = images.float().div_(255.0)
        x = self._crop_flip(x, params.box, params.flip)
        if any(self._enabled) and self.jitter_p > 0:
            x = self._color_jitter(x, params.jitter, params.order)
        if self.grayscale_p > 0:
            x = torch.where(params.gray.view(-1, 1, 1, 1), rgb_to_grayscale(x).expand_as(x), x)
        if self.blur_p > 0 and params.blur is not None:
            x = gaussian_blur(x, params.blur, self.blur_kernel)
        return self._normalize_float(x).to(dtype=dtype, memory_format=memory_format)

    def normalize(
        self,
        images: Tensor,
        dtype: torch.dtype = torch.float32,
        memory_format: torch.memory_format = torch.contiguous_format,
    ) -> Tensor:
        """Evaluation transform: uint8 (N, C, H, W) -> normalized float, no augmentation, no resizing."""
        self._check(images)
        x = images.float().div_(255.0)
        return self._normalize_float(x).to(dtype=dtype, memory_format=memory_format)

    def _check(self, images: Tensor) -> None:
        check_image_batch(images)
        if images.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {images.shape[1]}")

    def _normalize_float(self, x: Tensor) -> Tensor:
        key = (x.device, x.dtype)
        if key not in self._affine_cache:  # built once per device: no host->device copy per batch
            mean = torch.tensor(self.mean, dtype=x.dtype).view(1, -1, 1, 1).to(x.device)
            inv_std = 1.0 / torch.tensor(self.std, dtype=x.dtype).view(1, -1, 1, 1).to(x.device)
            self._affine_cache[key] = (mean, inv_std)
        mean, inv_std = self._affine_cache[key]
        return (x - mean) * inv_std

    def _crop_flip(self, x: Tensor, box: Tensor, flip: Tensor) -> Tensor:
        """Resample each crop box to image_size x image_size (bilinear), mirrored where ``flip``.

        With align_corners=False, normalized coordinates -1 and 1 are the outer edges of the image, so
        the box (x0, w) maps to centre (2 x0 + w) / W - 1 and half-width w / W; output pixel centres then
        land on input pixel centres exactly when the box is the whole image (an exact identity).
        """
        n, c, height, width = x.shape
        x0, y0, w, h = box.unbind(dim=1)
        sx = w / width
        sy = h / height
        tx = (2.0 * x0 + w) / width - 1.0
        ty = (2.0 * y0 + h) / height - 1.0
        sx = torch.where(flip, -sx, sx)  # a flip negates the x scale about the box centre
        zero = torch.zeros_like(sx)
        theta = torch.stack([sx, zero, tx, zero, sy, ty], dim=1).view(n, 2, 3)
        size = (n, c, self.image_size, self.image_size)
        grid = F.affine_grid(theta, list(size), align_corners=False)
        # Sample points stay inside the box, so the padding mode only matters for rounding at the edge.
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _color_jitter(self, x: Tensor, factors: Tensor, order: Tensor) -> Tensor:
        """The four ops with per-sample factors (neutral factors make an op the identity for that sample)."""
        enabled = [i for i, on in enumerate(self._enabled) if on]
        if not self.random_order:
            for i in enabled:
                x = self._jitter_op(x, i, factors[:, i])
            return x
        for slot in range(4):
            for i in enabled:
                # Op i acts in this slot only for the samples whose permutation puts it here.
                f = torch.where(order[:, slot] == i, factors[:, i], _NEUTRAL[i])
                x = self._jitter_op(x, i, f)
        return x

    @staticmethod
    def _jitter_op(x: Tensor, i: int, factor: Tensor) -> Tensor:
        if i == 3:
            # A zero hue shift must be an exact identity, not an HSV round trip with rounding.
            return torch.where(_per_sample(factor, x) == 0, x, adjust_hue(x, factor))
        return _JITTER_OPS[i](x, factor)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(image_size={self.image_size}, channels={self.channels}, "
            f"crop_scale={self.crop_scale}, crop_ratio={self.crop_ratio}, flip_p={self.flip_p}, "
            f"jitter={self.jitter}, jitter_p={self.jitter_p}, grayscale_p={self.grayscale_p}, "
            f"random_order={self.random_order}, blur_p={self.blur_p}, blur_sigma={self.blur_sigma}, "
            f"blur_kernel={self.blur_kernel})"
        )
