"""CIFAR-10-C corruptions: contract, determinism, and every severity of every corruption pinned against
make_cifar_c.py's published parameters, written out below (never read from the module), through an
independent oracle: the published formula in numpy/scipy/PIL/colorsys on a few images, with the random
draws reproduced from the same seeded generator in the order the module documents, or (impulse noise) the
published statistics.

Changing any published number in vprob/diagnostics/corruptions.py makes a test here fail: the behaviour
tests catch every change that alters an output, and ``test_tables_are_the_published_ones`` the few that
cannot (e.g. a motion-blur radius beyond where the Gaussian weights vanish, a defocus radius below 1
pixel, where the disk is one pixel either way).
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

import vprob.diagnostics.corruptions as C
from vprob.diagnostics.corruptions import (
    ALL_CORRUPTIONS,
    CIFAR10_C,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    SEVERITIES,
    box_resample_matrix,
    corrupt,
    mean_over_corruptions,
)

NAMES = tuple(ALL_CORRUPTIONS)
RANDOM = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "snow",
    "frost",
    "fog",
    "elastic_transform",
)

# make_cifar_c.py (github.com/hendrycks/robustness, ImageNet-C/create_c/make_cifar_c.py), severities 1..5.
PUBLISHED = {
    "GAUSSIAN_NOISE_STD": (0.04, 0.06, 0.08, 0.09, 0.10),
    "SHOT_NOISE_RATE": (500, 250, 100, 75, 50),
    "IMPULSE_NOISE_AMOUNT": (0.01, 0.02, 0.03, 0.05, 0.07),
    "DEFOCUS_BLUR": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "GLASS_BLUR": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "MOTION_BLUR": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "ZOOM_BLUR_END": (1.06, 1.11, 1.16, 1.21, 1.26),
    "SNOW": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "FROST": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "FOG": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "BRIGHTNESS_SHIFT": (0.05, 0.1, 0.15, 0.2, 0.3),
    "CONTRAST_FACTOR": (0.75, 0.5, 0.4, 0.3, 0.15),
    # IMSIZE * c with IMSIZE = 32, as fractions of the image size
    "ELASTIC_TRANSFORM": (
        (0, 0, 0.08),
        (0.05, 0.2, 0.07),
        (0.08, 0.06, 0.06),
        (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ),
    "PIXELATE_FRACTION": (0.95, 0.9, 0.85, 0.75, 0.65),
    "JPEG_QUALITY": (80, 65, 58, 50, 40),
    "GAUSSIAN_BLUR_SIGMA": (0.4, 0.6, 0.7, 0.8, 1),
}
MOTION_BLUR_ANGLE, SNOW_ANGLE = (-45, 45), (-135, -45)
CIFAR10_C_NAMES = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)


def _textured_images(n: int = 24, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Natural-ish test images: random fields smoothed at two scales, values well inside 0..255."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, size // 4, size // 4, generator=g)
    coarse = F.interpolate(coarse, size=size, mode="bicubic")
    fine = torch.rand(n, channels, size, size, generator=g)
    x = 0.7 * coarse + 0.3 * fine
    return (x.clamp(0, 1) * 200 + 25).round().to(torch.uint8)


def _hwc(images: torch.Tensor) -> np.ndarray:
    return images.permute(0, 2, 3, 1).numpy()


def _ours(images: torch.Tensor, name: str, severity: int, seed: int | None = None) -> np.ndarray:
    g = None if seed is None else torch.Generator().manual_seed(seed)
    return _hwc(corrupt(images, name, severity, generator=g)).astype(np.float64)


def _assert_close(ours: np.ndarray, ref_0_255: np.ndarray, fraction_off: float = 0.01):
    """ours (uint8 values) against the oracle's exact values in 0..255 units: within the rounding's half a
    grey level, except for a few values (float32 against float64 next to a rounding or truncation step
    inside the corruption), and within 1.5 everywhere."""
    error = np.abs(ours - np.clip(ref_0_255, 0, 255))
    off = float((error > 0.5 + 1e-3).mean())
    assert error.max() <= 1.5 and off <= fraction_off, (error.max(), off)


def _per_severity(name: str, images: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
    return [corrupt(images, name, s, generator=torch.Generator().manual_seed(seed)) for s in SEVERITIES]


def _strictly_increasing(values) -> bool:
    return all(b > a for a, b in zip(values, values[1:], strict=False))


def _high_frequency_energy(images: torch.Tensor) -> float:
    x = images.double()
    vertical = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    horizontal = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    return float(vertical + horizontal)


# ------------------------------------------------------------------------------------------ contract


def test_the_registry_is_cifar10c_in_its_order_plus_gaussian_blur():
    assert tuple(CORRUPTIONS) == CIFAR10_C == CIFAR10_C_NAMES
    assert tuple(EXTRA_CORRUPTIONS) == ("gaussian_blur",)
    assert set(ALL_CORRUPTIONS) == set(CIFAR10_C_NAMES) | {"gaussian_blur"}


def test_tables_are_the_published_ones():
    for name, published in PUBLISHED.items():
        assert getattr(C, name) == published, name
    assert C.MOTION_BLUR_ANGLE == MOTION_BLUR_ANGLE and C.SNOW_ANGLE == SNOW_ANGLE
    assert C.ZOOM_BLUR_STEP == 0.01 and C.FROST_SCALE == 0.2


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_contract_shape_dtype_and_purity(name, channels):
    images = _textured_images(4, channels, 8 if channels == 1 else 32)
    before = images.clone()
    out = corrupt(images, name, 3, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and out.shape == images.shape and out.device == images.device
    assert torch.equal(images, before)  # the input is never modified
    assert not torch.equal(out, images)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_with_a_generator(name):
    images = _textured_images(4)
    a = corrupt(images, name, 5, generator=torch.Generator().manual_seed(7))
    b = corrupt(images, name, 5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    if name in RANDOM:
        assert not torch.equal(a, corrupt(images, name, 5, generator=torch.Generator().manual_seed(8)))


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, True, "3"])
def test_severity_outside_1_to_5_is_refused(severity):
    with pytest.raises(ValueError, match="severity"):
        corrupt(_textured_images(2), "contrast", severity)


def test_unknown_name_and_bad_images_are_refused():
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(_textured_images(2), "spatter", 1)  # a CIFAR-10-C extra not implemented here
    with pytest.raises(ValueError, match="uint8"):
        corrupt(_textured_images(2).float(), "contrast", 1)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(_textured_images(2)[0], "contrast", 1)
    with pytest.raises(ValueError, match="frost"):
        corrupt(_textured_images(1, size=64), "frost", 1)  # larger than the smallest overlay (63 rows)


# ------------------------------------------------------------------------ severity is monotone in ...


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise"])
def test_noise_std_of_the_difference_grows_with_severity(name):
    images = _textured_images()
    stds = [float((out.double() - images.double()).std()) for out in _per_severity(name, images)]
    assert _strictly_increasing(stds), stds


@pytest.mark.parametrize("name", ["gaussian_blur", "defocus_blur", "zoom_blur"])
def test_blur_high_frequency_energy_falls_with_severity(name):
    images = _textured_images()
    energy = [_high_frequency_energy(out) for out in _per_severity(name, images)]
    assert _high_frequency_energy(images) > energy[0]
    assert _strictly_increasing(energy[::-1]), energy


def test_contrast_std_falls_with_severity():
    images = _textured_images()
    stds = [float(out.double().std(dim=(2, 3)).mean()) for out in _per_severity("contrast", images)]
    assert _strictly_increasing(stds[::-1]), stds


def test_brightness_mean_rises_with_severity():
    images = _textured_images()
    means = [float(out.double().mean()) for out in _per_severity("brightness", images)]
    assert float(images.double().mean()) < means[0]
    assert _strictly_increasing(means), means


@pytest.mark.parametrize("name", ["jpeg_compression", "pixelate"])
def test_error_grows_with_severity(name):
    images = _textured_images(48)
    errors = [float((out.double() - images.double()).abs().mean()) for out in _per_severity(name, images)]
    assert _strictly_increasing(errors), errors


# --------------------------------------------------------------------------------- oracles: noise


def test_gaussian_noise_is_the_published_formula_with_the_same_draw():
    images = _textured_images(3)
    x = images.double().numpy() / 255
    for severity, c in zip(SEVERITIES, PUBLISHED["GAUSSIAN_NOISE_STD"], strict=True):
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(severity)).double().numpy()
        ref = np.clip(x + noise * c, 0, 1) * 255
        ours = corrupt(images, "gaussian_noise", severity, generator=torch.Generator().manual_seed(severity))
        _assert_close(ours.double().numpy(), ref)


def test_gaussian_noise_has_the_published_std_on_mid_grey():
    grey = torch.full((64, 3, 32, 32), 128, dtype=torch.uint8)  # no clipping within +-5 sigma
    for severity, std in zip(SEVERITIES, PUBLISHED["GAUSSIAN_NOISE_STD"], strict=True):
        out = corrupt(grey, "gaussian_noise", severity, generator=torch.Generator().manual_seed(severity))
        measured = float((out.double() - 128).std()) / 255
        # rounding to integers adds variance 1/12 grey level^2; 196608 samples: the std to 0.2 %
        expected = (std**2 + 1 / 12 / 255**2) ** 0.5
        assert measured == pytest.approx(expected, rel=0.01)


def test_shot_noise_is_the_published_formula_with_the_same_draw():
    images = _textured_images(3)
    x = images.double().numpy() / 255
    for severity, rate in zip(SEVERITIES, PUBLISHED["SHOT_NOISE_RATE"], strict=True):
        counts = torch.poisson(images.float() / 255 * rate, generator=torch.Generator().manual_seed(severity))
        ref = np.clip(counts.double().numpy() / rate, 0, 1) * 255
        ours = corrupt(images, "shot_noise", severity, generator=torch.Generator().manual_seed(severity))
        _assert_close(ours.double().numpy(), ref)
        assert abs(float(ours.double().mean()) / 255 - x.mean()) < 0.01


def test_shot_noise_has_poisson_variance():
    level = 128
    grey = torch.full((64, 3, 32, 32), level, dtype=torch.uint8)
    for severity, rate in zip(SEVERITIES, PUBLISHED["SHOT_NOISE_RATE"], strict=True):
        out = corrupt(grey, "shot_noise", severity, generator=torch.Generator().manual_seed(severity))
        x = out.double() / 255
        # Var(Poisson(x c) / c) = x / c, plus the rounding's 1/12 grey level^2.
        assert float(x.var()) == pytest.approx(level / 255 / rate + 1 / 12 / 255**2, rel=0.05)
        assert float(x.mean()) == pytest.approx(level / 255, abs=2e-3)


def test_impulse_noise_flips_the_published_fraction_half_to_salt_half_to_pepper():
    grey = torch.full((64, 3, 32, 32), 128, dtype=torch.uint8)
    n = grey.numel()
    for severity, amount in zip(SEVERITIES, PUBLISHED["IMPULSE_NOISE_AMOUNT"], strict=True):
        out = corrupt(grey, "impulse_noise", severity, generator=torch.Generator().manual_seed(severity))
        salt, pepper = int((out == 255).sum()), int((out == 0).sum())
        assert salt + pepper + int((out == 128).sum()) == n
        standard_error = math.sqrt(amount * (1 - amount) / n)
        assert abs((salt + pepper) / n - amount) < 4 * standard_error
        assert abs(salt / (salt + pepper) - 0.5) < 4 * 0.5 / math.sqrt(salt + pepper)
        # every channel is drawn on its own: a flipped pixel rarely has all three channels flipped
        flipped = out != 128
        assert float(flipped.all(dim=1).double().mean()) < 2 * amount**2 + 1e-4


# ---------------------------------------------------------------------------------- oracles: blur


def _defocus_kernel_reference(radius: float, alias_blur: float) -> np.ndarray:
    """make_cifar_c.py's disk: a 17 x 17 grid for radius <= 8, then cv2.GaussianBlur 3 x 3 (a separable
    normalized Gaussian over offsets -1, 0, 1)."""
    grid = np.arange(-8, 9)
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    g = np.exp(-np.array([1.0, 0.0, 1.0]) / (2 * alias_blur**2))
    g /= g.sum()
    return ndimage.correlate(disk, np.outer(g, g), mode="mirror")


def test_defocus_blur_is_the_published_disk_filter():
    images = _textured_images(3)
    x = _hwc(images) / 255.0
    for severity, (radius, alias) in zip(SEVERITIES, PUBLISHED["DEFOCUS_BLUR"], strict=True):
        kernel = _defocus_kernel_reference(radius, alias)
        ref = (
            np.stack(
                [
                    np.stack([ndimage.correlate(im[..., d], kernel, mode="mirror") for d in range(3)], -1)
                    for im in x
                ]
            )
            * 255
        )  # cv2.filter2D: BORDER_REFLECT_101 = scipy "mirror"
        _assert_close(_ours(images, "defocus_blur", severity), ref)


def _skimage_gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    """skimage.filters.gaussian(image, sigma, channel_axis=-1): scipy's, per channel, edges "nearest"."""
    return np.stack(
        [
            ndimage.gaussian_filter(image[..., d], sigma, mode="nearest", truncate=4)
            for d in range(image.shape[-1])
        ],
        -1,
    )


def test_glass_blur_is_the_published_loop_with_the_same_draws():
    # Pixel noise, not smooth images: at sigma 0.25 the blur's side weights are ~3e-4, visible only
    # next to large steps, and a 10 % change of sigma must show.
    images = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    for severity, (sigma, delta, iterations) in zip(SEVERITIES, PUBLISHED["GLASS_BLUR"], strict=True):
        g = torch.Generator().manual_seed(severity)
        draws = [
            torch.randint(-delta, delta, (3, 2, 32 - 2 * delta, 32 - 2 * delta), generator=g).numpy()
            for _ in range(iterations)
        ]
        refs = []
        for n, image in enumerate(_hwc(images)):
            x = np.uint8(_skimage_gaussian(image / 255.0, sigma) * 255)
            for i in range(iterations):
                for h in range(32 - delta, delta, -1):
                    for w in range(32 - delta, delta, -1):
                        dy, dx = draws[i][n, :, h - delta - 1, w - delta - 1]
                        hp, wp = h + dy, w + dx
                        x[h, w], x[hp, wp] = x[hp, wp], x[h, w]  # numpy views: a copy, as published
            refs.append(_skimage_gaussian(x / 255.0, sigma) * 255)
        _assert_close(_ours(images, "glass_blur", severity, seed=severity), np.stack(refs))


def _motion_blur_reference(image: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's MotionBlurImage on an (H, W) or (H, W, C) float image: width 2 ceil(radius) + 1,
    weights exp(-i^2 / 2 sigma^2) normalized, tap i at (x + ceil(i cos a - .5), y + ceil(i sin a - .5)),
    edge pixels beyond the border."""
    width = 2 * math.ceil(radius) + 1
    weights = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    weights /= weights.sum()
    h, w = image.shape[:2]
    rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
    out = np.zeros_like(image, dtype=np.float64)
    for i in range(width):
        dx = math.ceil(i * math.cos(math.radians(angle)) - 0.5)
        dy = math.ceil(i * math.sin(math.radians(angle)) - 0.5)
        out += weights[i] * image[np.clip(rows + dy, 0, h - 1), np.clip(cols + dx, 0, w - 1)]
    return out


def test_motion_blur_is_imagemagicks_kernel_with_the_same_angle():
    images = _textured_images(3)
    for severity, (radius, sigma) in zip(SEVERITIES, PUBLISHED["MOTION_BLUR"], strict=True):
        g = torch.Generator().manual_seed(severity)
        angles = (-45 + 90 * torch.rand(3, generator=g, dtype=torch.float64)).numpy()
        ref = np.stack(
            [
                _motion_blur_reference(im.astype(np.float64), radius, sigma, a)
                for im, a in zip(_hwc(images), angles, strict=True)
            ]
        )
        _assert_close(_ours(images, "motion_blur", severity, seed=severity), ref)


def _clipped_zoom_reference(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    h = img.shape[0]
    ch = int(np.ceil(h / zoom_factor))
    top = (h - ch) // 2
    img = ndimage.zoom(img[top : top + ch, top : top + ch], (zoom_factor, zoom_factor, 1), order=1)
    trim_top = (img.shape[0] - h) // 2
    return img[trim_top : trim_top + h, trim_top : trim_top + h]


def test_zoom_blur_is_the_published_mean_of_clipped_zooms():
    images = _textured_images(2)
    for severity, end in zip(SEVERITIES, PUBLISHED["ZOOM_BLUR_END"], strict=True):
        factors = np.arange(1, end, 0.01)
        refs = []
        for image in _hwc(images):
            x = (image / 255.0).astype(np.float32)
            out = np.zeros_like(x)
            for z in factors:
                out += _clipped_zoom_reference(x, z)
            refs.append((x + out) / (len(factors) + 1) * 255)
        _assert_close(_ours(images, "zoom_blur", severity), np.stack(refs))


# ------------------------------------------------------------------------------- oracles: weather


@pytest.mark.parametrize("channels", [3, 1])
def test_snow_is_the_published_pipeline_with_the_same_draws(channels):
    images = _textured_images(3, channels)
    n, size = 3, 32
    for severity, c in zip(SEVERITIES, PUBLISHED["SNOW"], strict=True):
        g = torch.Generator().manual_seed(severity)
        layers = (c[0] + c[1] * torch.randn(n, 1, size, size, generator=g, dtype=torch.float64)).numpy()
        angles = (-135 + 90 * torch.rand(n, generator=g, dtype=torch.float64)).numpy()
        refs = []
        for k, image in enumerate(_hwc(images)):
            x = image.astype(np.float32) / 255.0
            layer = _clipped_zoom_reference(layers[k, 0][..., None], c[2])
            layer[layer < c[3]] = 0
            layer = (np.clip(layer.squeeze(), 0, 1) * 255).astype(np.uint8)
            # ImageMagick writes the blurred layer as 8 bits, truncated
            blurred = _motion_blur_reference(layer.astype(np.float64), c[4], c[5], angles[k])
            layer = np.floor(blurred)[..., None] / 255.0
            grey = x if channels == 1 else (x @ np.array([0.299, 0.587, 0.114]))[..., None]
            x = c[6] * x + (1 - c[6]) * np.maximum(x, grey * 1.5 + 0.5)
            refs.append(np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255)
        _assert_close(_ours(images, "snow", severity, seed=severity), np.stack(refs))


FROST_DIR = Path(C.__file__).parent / "frost"
FROST_SHA256 = {  # of the decoded RGB pixels; the provenance is in frost/README.md
    "frost1.png": "0feecc052950beb9c4cc826d63c77d3fbe4699f1cb3e25521d326cff89638cb6",
    "frost2.png": "3c026bc788b20cc9949eb8f99a003df08b577a37fc5e22435acb69eaa3e95a23",
    "frost3.png": "3c026bc788b20cc9949eb8f99a003df08b577a37fc5e22435acb69eaa3e95a23",
    "frost4.png": "9e396e6c263329406a8376f0b8bbb0c2b1d8964e7a0fb123adbbd0c821f5ced9",
    "frost5.png": "a0e95c89d75517464e90446e641aefaf9bbd9761504a890521f6a24e379078bc",
}


def _frost_overlays() -> list[np.ndarray]:
    return [np.asarray(Image.open(FROST_DIR / name).convert("RGB")) for name in FROST_SHA256]


def test_frost_overlays_are_the_published_ones_reduced_by_five():
    overlays = _frost_overlays()
    for (name, digest), overlay in zip(FROST_SHA256.items(), overlays, strict=True):
        assert hashlib.sha256(overlay.tobytes()).hexdigest() == digest, name
    # cv2.resize(fx=0.2) of the originals (600 x 900, 315 x 560, 315 x 560, 350 x 527, 495 x 660)
    assert [o.shape[:2] for o in overlays] == [(120, 180), (63, 112), (63, 112), (70, 105), (99, 132)]
    assert sum((FROST_DIR / name).stat().st_size for name in FROST_SHA256) < 1_000_000


@pytest.mark.parametrize("channels", [3, 1])
def test_frost_is_the_published_blend_with_the_same_crop(channels):
    images = _textured_images(6, channels)
    overlays = _frost_overlays()
    for severity, (a, b) in zip(SEVERITIES, PUBLISHED["FROST"], strict=True):
        g = torch.Generator().manual_seed(severity)
        which = torch.randint(5, (6,), generator=g).numpy()
        u = torch.rand(6, 2, generator=g, dtype=torch.float64).numpy()
        refs = []
        for k, image in enumerate(_hwc(images)):
            overlay = overlays[which[k]].astype(np.float64)
            top, left = (int(u[k, i] * (overlay.shape[i] - 32)) for i in range(2))
            crop = overlay[top : top + 32, left : left + 32]
            if channels == 1:
                crop = (crop @ np.array([0.299, 0.587, 0.114]))[..., None]
            refs.append(np.clip(a * image + b * crop, 0, 255))
        _assert_close(_ours(images, "frost", severity, seed=severity), np.stack(refs))


def _plasma_reference(n: int, mapsize: int, decay: float, g: torch.Generator) -> np.ndarray:
    """make_cifar_c.py's plasma_fractal with a batch axis in front; np.random.uniform(-w, w, shape) replaced
    by the same generator's draws."""
    maparray = np.zeros((n, mapsize, mapsize))
    stepsize, wibble = mapsize, 100.0

    def wibbledmean(array):
        u = torch.rand(array.shape, generator=g, dtype=torch.float64).numpy()
        return array / 4 + wibble * (-wibble + 2 * wibble * u)

    while stepsize >= 2:
        half = stepsize // 2
        cornerref = maparray[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=1)
        squareaccum += np.roll(squareaccum, shift=-1, axis=2)
        maparray[:, half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[:, half:mapsize:stepsize, half:mapsize:stepsize]
        ulgrid = maparray[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=2)
        maparray[:, 0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=2) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[:, half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= decay
    maparray -= maparray.min(axis=(1, 2), keepdims=True)
    return maparray / maparray.max(axis=(1, 2), keepdims=True)


@pytest.mark.parametrize("channels, size, mapsize", [(3, 32, 32), (1, 8, 8)])
def test_fog_is_the_published_plasma_blend_with_the_same_draws(channels, size, mapsize):
    images = _textured_images(4, channels, size)
    for severity, (a, decay) in zip(SEVERITIES, PUBLISHED["FOG"], strict=True):
        plasma = _plasma_reference(4, mapsize, decay, torch.Generator().manual_seed(severity))
        x = _hwc(images) / 255.0
        peak = x.max(axis=(1, 2, 3), keepdims=True)
        ref = np.clip((x + a * plasma[:, :size, :size, None]) * peak / (peak + a), 0, 1) * 255
        _assert_close(_ours(images, "fog", severity, seed=severity), ref)


def test_fog_on_a_flat_image_spans_v2_over_v_plus_a_to_v():
    # A flat image v: (v + a P) v / (v + a) runs from v^2 / (v + a) (P = 0) to v (P = 1), exactly.
    v = 204 / 255
    flat = torch.full((8, 3, 32, 32), 204, dtype=torch.uint8)
    for severity, (a, _) in zip(SEVERITIES, PUBLISHED["FOG"], strict=True):
        out = corrupt(flat, "fog", severity, generator=torch.Generator().manual_seed(0)).double()
        assert torch.equal(out.amin(dim=(1, 2, 3)), torch.full((8,), round(v * v / (v + a) * 255.0)).double())
        assert torch.equal(out.amax(dim=(1, 2, 3)), torch.full((8,), 204.0).double())


# ------------------------------------------------------------------------------- oracles: digital


def test_contrast_matches_the_closed_form():
    images = _textured_images(3)
    x = images.double().numpy() / 255
    for severity, c in zip(SEVERITIES, PUBLISHED["CONTRAST_FACTOR"], strict=True):
        means = x.mean(axis=(2, 3), keepdims=True)
        ref = np.clip((x - means) * c + means, 0, 1) * 255
        _assert_close(corrupt(images, "contrast", severity).double().numpy(), ref)


def test_brightness_matches_an_hsv_round_trip():
    images = _textured_images(2, size=8)
    images[0, :, 0, 0] = 0  # a black pixel: V = 0, S = 0
    images[0, :, 0, 1] = 250  # a near-white pixel: V saturates
    x = images.double().numpy() / 255
    for severity, shift in zip(SEVERITIES, PUBLISHED["BRIGHTNESS_SHIFT"], strict=True):
        out = corrupt(images, "brightness", severity).double().numpy()
        ref = np.empty_like(x)
        for n in range(x.shape[0]):
            for i in range(x.shape[2]):
                for j in range(x.shape[3]):
                    h, s, v = colorsys.rgb_to_hsv(*x[n, :, i, j])
                    ref[n, :, i, j] = colorsys.hsv_to_rgb(h, s, min(v + shift, 1.0))
        _assert_close(out, ref * 255)


def test_elastic_transform_is_the_published_warp_with_the_same_draws():
    images = _textured_images(3)
    n, size = 3, 32
    for severity, fractions in zip(SEVERITIES, PUBLISHED["ELASTIC_TRANSFORM"], strict=True):
        alpha, sigma, affine = (size * f for f in fractions)
        g = torch.Generator().manual_seed(severity)
        moves = (-affine + 2 * affine * torch.rand(n, 3, 2, generator=g, dtype=torch.float64)).numpy()
        fields = [
            (-1 + 2 * torch.rand(n, size, size, generator=g, dtype=torch.float64)).numpy() for _ in "xy"
        ]
        refs = []
        for k, image in enumerate(_hwc(images) / 255.0):
            centre, q = size // 2, size // 3
            pts1 = np.array(
                [[centre + q, centre + q], [centre + q, centre - q], [centre - q, centre - q]],
                dtype=np.float64,
            )
            pts2 = pts1 + moves[k]
            # cv2.getAffineTransform(pts1, pts2) then warpAffine: output (x, y) reads input M^-1 (x, y)
            forward = np.linalg.solve(np.c_[pts1, np.ones(3)], pts2).T  # 2 x 3, (x, y) coordinates
            inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))
            swap = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]])  # (x, y) <-> (row, col)
            inverse_rc = swap @ inverse @ swap
            warped = np.stack(
                [
                    ndimage.affine_transform(
                        image[..., d], inverse_rc[:2, :2], inverse_rc[:2, 2], order=1, mode="mirror"
                    )
                    for d in range(3)
                ],
                -1,
            )
            if sigma > 0:
                dx, dy = (
                    alpha * ndimage.gaussian_filter(f[k], sigma, mode="reflect", truncate=3) for f in fields
                )
            else:
                dx = dy = np.zeros((size, size))
            rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
            coordinates = [rows + dy, cols + dx]
            refs.append(
                np.stack(
                    [
                        ndimage.map_coordinates(warped[..., d], coordinates, order=1, mode="reflect")
                        for d in range(3)
                    ],
                    -1,
                )
                * 255
            )
        _assert_close(_ours(images, "elastic_transform", severity, seed=severity), np.stack(refs))


def _pil_round_trip(images: torch.Tensor, fn) -> torch.Tensor:
    out = []
    for image in images:
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        out.append(torch.from_numpy(np.array(fn(pil))).permute(2, 0, 1))
    return torch.stack(out)


def test_pixelate_matches_pil_box_resizes():
    images = _textured_images(6)
    for severity, c in zip(SEVERITIES, PUBLISHED["PIXELATE_FRACTION"], strict=True):
        small = int(32 * c)
        ref = _pil_round_trip(
            images, lambda p, s=small: p.resize((s, s), Image.BOX).resize((32, 32), Image.BOX)
        )
        out = corrupt(images, "pixelate", severity)
        assert (out.int() - ref.int()).abs().max() <= 1  # PIL's fixed-point arithmetic vs float


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_compression_matches_torchvision_at_the_published_quality(channels):
    from torchvision.io import decode_jpeg, encode_jpeg

    images = _textured_images(6, channels)
    for severity, quality in zip(SEVERITIES, PUBLISHED["JPEG_QUALITY"], strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 deprecates its codec
            ref = torch.stack(decode_jpeg(encode_jpeg(list(images), quality=quality)))
        out = corrupt(images, "jpeg_compression", severity)
        diff = (out.int() - ref.int()).abs()
        # Both are libjpeg with the same quantization tables; different builds may round differently.
        assert float(diff.double().mean()) < 0.5 and int(diff.max()) <= 4


def test_gaussian_blur_matches_scipy_ndimage():
    images = _textured_images(3)
    for severity, sigma in zip(SEVERITIES, PUBLISHED["GAUSSIAN_BLUR_SIGMA"], strict=True):
        out = corrupt(images, "gaussian_blur", severity).double().numpy()
        ref = np.stack(
            [
                [
                    ndimage.gaussian_filter(channel / 255.0, sigma, mode="nearest", truncate=4.0)
                    for channel in image
                ]
                for image in images.double().numpy()
            ]
        )
        _assert_close(out, ref * 255)


def test_box_resample_matrix_is_an_average_and_the_identity_at_equal_size():
    assert torch.equal(box_resample_matrix(7, 7), torch.eye(7))
    down = box_resample_matrix(32, 16)
    assert torch.allclose(down.sum(dim=1), torch.ones(16))
    assert torch.allclose(down[0, :2], torch.tensor([0.5, 0.5]))
    up = box_resample_matrix(4, 8)  # nearest neighbour: each row a one-hot
    assert torch.equal(up.argmax(dim=1), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))


@pytest.mark.parametrize(
    "mode, scipy_mode", [("edge", "nearest"), ("mirror", "mirror"), ("symmetric", "reflect")]
)
def test_extend_index_matches_scipy_modes(mode, scipy_mode):
    signal = np.array([10.0, 20.0, 30.0])
    extended = signal[C.extend_index(torch.arange(-7, 10), 3, mode).numpy()]
    for offset in range(-7, 10):  # scipy's extension, read off a correlation with a shifted one-hot kernel
        kernel = np.zeros(21)
        kernel[10 + offset] = 1.0
        assert ndimage.correlate1d(signal, kernel, mode=scipy_mode)[0] == extended[offset + 7]


# ------------------------------------------------------------------------------- mean over the set


def test_mean_over_corruptions_of_nested_results():
    results = {name: {s: float(i + s / 10) for s in SEVERITIES} for i, name in enumerate(CIFAR10_C_NAMES)}
    results["gaussian_blur"] = {s: 1000.0 for s in SEVERITIES}  # an extra: left out by default
    results["contrast"][0] = -1000.0  # the clean entry: left out of every mean
    summary = mean_over_corruptions(results)
    assert summary["corruptions"] == list(CIFAR10_C_NAMES)
    assert summary["complete"] and summary["missing"] == []
    assert summary["mean"] == pytest.approx(np.mean([i + 0.3 for i in range(15)]))
    assert summary["per_severity"] == pytest.approx({s: 7 + s / 10 for s in SEVERITIES})
    assert summary["per_corruption"]["fog"] == pytest.approx(9.3)
    with_extra = mean_over_corruptions(results, list(CIFAR10_C_NAMES) + ["gaussian_blur"])
    assert with_extra["mean"] == pytest.approx((15 * 7.3 + 1000) / 16)


def test_mean_over_corruptions_of_a_partial_set_and_of_single_values():
    summary = mean_over_corruptions({"fog": 0.5, "snow": 0.1, "gaussian_blur": 9.0})
    assert summary["mean"] == pytest.approx(0.3) and "per_severity" not in summary
    assert not summary["complete"] and len(summary["missing"]) == 13
    assert summary["corruptions"] == ["snow", "fog"]  # CIFAR-10-C's order
    with pytest.raises(ValueError, match="severities"):
        mean_over_corruptions({"fog": {1: 0.1, 2: 0.2}, "snow": {1: 0.3}})
    with pytest.raises(ValueError, match="mixes"):
        mean_over_corruptions({"fog": {1: 0.1}, "snow": 0.3})
    with pytest.raises(ValueError, match="corruptions"):
        mean_over_corruptions({"gaussian_blur": 1.0})
    with pytest.raises(ValueError, match="not in results"):
        mean_over_corruptions({"fog": 1.0}, ["fog", "snow"])
    with pytest.raises(TypeError, match="results"):
        mean_over_corruptions([1.0, 2.0])
