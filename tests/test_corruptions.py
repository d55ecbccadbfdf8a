"""CIFAR-10-C-style corruptions: contract, determinism, severity monotone in a measurable statistic, and
independent oracles (scipy.ndimage, PIL, colorsys, closed-form noise statistics)."""

from __future__ import annotations

import colorsys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.ndimage import gaussian_filter

from vprob.diagnostics import CORRUPTIONS, SEVERITIES, corrupt
from vprob.diagnostics.corruptions import (
    BRIGHTNESS_SHIFT,
    CONTRAST_FACTOR,
    GAUSSIAN_BLUR_SIGMA,
    GAUSSIAN_NOISE_STD,
    JPEG_QUALITY,
    PIXELATE_FRACTION,
    SHOT_NOISE_RATE,
    box_resample_matrix,
)

NAMES = tuple(CORRUPTIONS)


def _textured_images(n: int = 24, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Natural-ish test images: random fields smoothed at two scales, values well inside 0..255."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, size // 4, size // 4, generator=g)
    coarse = F.interpolate(coarse, size=size, mode="bicubic")
    fine = torch.rand(n, channels, size, size, generator=g)
    x = 0.7 * coarse + 0.3 * fine
    return (x.clamp(0, 1) * 200 + 25).round().to(torch.uint8)


def _high_frequency_energy(images: torch.Tensor) -> float:
    x = images.double()
    vertical = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()
    horizontal = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()
    return float(vertical + horizontal)


def _per_severity(name: str, images: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
    return [corrupt(images, name, s, generator=torch.Generator().manual_seed(seed)) for s in SEVERITIES]


def _strictly_increasing(values) -> bool:
    return all(b > a for a, b in zip(values, values[1:], strict=False))


# ------------------------------------------------------------------------------------------ contract


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
    if name in ("gaussian_noise", "shot_noise"):
        assert not torch.equal(a, corrupt(images, name, 5, generator=torch.Generator().manual_seed(8)))


@pytest.mark.parametrize("severity", [0, 6, -1, 2.0, True, "3"])
def test_severity_outside_1_to_5_is_refused(severity):
    with pytest.raises(ValueError, match="severity"):
        corrupt(_textured_images(2), "contrast", severity)


def test_unknown_name_and_bad_images_are_refused():
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(_textured_images(2), "fog", 1)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(_textured_images(2).float(), "contrast", 1)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(_textured_images(2)[0], "contrast", 1)


# ------------------------------------------------------------------------ severity is monotone in ...


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise"])
def test_noise_std_of_the_difference_grows_with_severity(name):
    images = _textured_images()
    stds = [float((out.double() - images.double()).std()) for out in _per_severity(name, images)]
    assert _strictly_increasing(stds), stds


def test_blur_high_frequency_energy_falls_with_severity():
    images = _textured_images()
    energy = [_high_frequency_energy(out) for out in _per_severity("gaussian_blur", images)]
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


@pytest.mark.parametrize("name", ["jpeg", "pixelate"])
def test_error_grows_with_severity(name):
    images = _textured_images(48)
    errors = [float((out.double() - images.double()).abs().mean()) for out in _per_severity(name, images)]
    assert _strictly_increasing(errors), errors


# ---------------------------------------------------------------------------------------- oracles


def test_gaussian_noise_has_the_table_std_on_mid_grey():
    grey = torch.full((64, 3, 32, 32), 128, dtype=torch.uint8)  # no clipping within +-5 sigma
    for severity, std in zip(SEVERITIES, GAUSSIAN_NOISE_STD, strict=True):
        out = corrupt(grey, "gaussian_noise", severity, generator=torch.Generator().manual_seed(severity))
        measured = float((out.double() - 128).std()) / 255
        # rounding to integers adds variance 1/12 grey level^2
        expected = (std**2 + 1 / 12 / 255**2) ** 0.5
        assert measured == pytest.approx(expected, rel=0.02)


def test_shot_noise_has_poisson_variance():
    level = 128
    grey = torch.full((64, 3, 32, 32), level, dtype=torch.uint8)
    for severity, rate in zip(SEVERITIES, SHOT_NOISE_RATE, strict=True):
        out = corrupt(grey, "shot_noise", severity, generator=torch.Generator().manual_seed(severity))
        x = out.double() / 255
        # Var(Poisson(x c) / c) = x / c, plus the rounding's 1/12 grey level^2.
        assert float(x.var()) == pytest.approx(level / 255 / rate + 1 / 12 / 255**2, rel=0.05)
        assert float(x.mean()) == pytest.approx(level / 255, abs=2e-3)


def test_gaussian_blur_matches_scipy_ndimage():
    images = _textured_images(3)
    for severity, sigma in zip(SEVERITIES, GAUSSIAN_BLUR_SIGMA, strict=True):
        out = corrupt(images, "gaussian_blur", severity).double().numpy()
        ref = np.stack([[gaussian_filter(channel / 255.0, sigma, mode="nearest", truncate=4.0)
                         for channel in image] for image in images.double().numpy()])
        diff = np.abs(out - np.clip(ref, 0, 1) * 255)
        assert diff.max() <= 0.5 + 1e-3  # rounding, plus float32 arithmetic at the .5 boundaries


def test_contrast_matches_the_closed_form():
    images = _textured_images(3)
    x = images.double().numpy() / 255
    for severity, c in zip(SEVERITIES, CONTRAST_FACTOR, strict=True):
        means = x.mean(axis=(2, 3), keepdims=True)
        ref = np.round(np.clip((x - means) * c + means, 0, 1) * 255)
        assert np.abs(corrupt(images, "contrast", severity).double().numpy() - ref).max() <= 1


def test_brightness_matches_an_hsv_round_trip():
    images = _textured_images(2, size=8)
    images[0, :, 0, 0] = 0  # a black pixel: V = 0, S = 0
    images[0, :, 0, 1] = 250  # a near-white pixel: V saturates
    x = images.double().numpy() / 255
    for severity, shift in zip(SEVERITIES, BRIGHTNESS_SHIFT, strict=True):
        out = corrupt(images, "brightness", severity).double().numpy()
        ref = np.empty_like(x)
        for n in range(x.shape[0]):
            for i in range(x.shape[2]):
                for j in range(x.shape[3]):
                    h, s, v = colorsys.rgb_to_hsv(*x[n, :, i, j])
                    ref[n, :, i, j] = colorsys.hsv_to_rgb(h, s, min(v + shift, 1.0))
        assert np.abs(out - np.round(np.clip(ref, 0, 1) * 255)).max() <= 1


def _pil_round_trip(images: torch.Tensor, fn) -> torch.Tensor:
    out = []
    for image in images:
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        out.append(torch.from_numpy(np.array(fn(pil))).permute(2, 0, 1))
    return torch.stack(out)


def test_pixelate_matches_pil_box_resizes():
    images = _textured_images(6)
    for severity, c in zip(SEVERITIES, PIXELATE_FRACTION, strict=True):
        small = int(32 * c)
        ref = _pil_round_trip(images,
                              lambda p, s=small: p.resize((s, s), Image.BOX).resize((32, 32), Image.BOX))
        out = corrupt(images, "pixelate", severity)
        assert (out.int() - ref.int()).abs().max() <= 1  # PIL's fixed-point arithmetic vs float


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_matches_torchvision_at_the_table_quality(channels):
    from torchvision.io import decode_jpeg, encode_jpeg

    images = _textured_images(6, channels)
    for severity, quality in zip(SEVERITIES, JPEG_QUALITY, strict=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 deprecates its codec
            ref = torch.stack(decode_jpeg(encode_jpeg(list(images), quality=quality)))
        out = corrupt(images, "jpeg", severity)
        diff = (out.int() - ref.int()).abs()
        # Both are libjpeg with the same quantization tables; different builds may round differently.
        assert float(diff.double().mean()) < 0.5 and int(diff.max()) <= 4


def test_box_resample_matrix_is_an_average_and_the_identity_at_equal_size():
    assert torch.equal(box_resample_matrix(7, 7), torch.eye(7))
    down = box_resample_matrix(32, 16)
    assert torch.allclose(down.sum(dim=1), torch.ones(16))
    assert torch.allclose(down[0, :2], torch.tensor([0.5, 0.5]))
    up = box_resample_matrix(4, 8)  # nearest neighbour: each row a one-hot
    assert torch.equal(up.argmax(dim=1), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]))
