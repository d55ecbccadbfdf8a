"""The per-sample Gaussian blur of SimCLRAugment against torchvision's per-image blur, and the recipes per
data set and resolution."""

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from vprob.data import SimCLRAugment, get_dataset
from vprob.data.augment import _N_DRAWS, gaussian_blur
from vprob.data.datasets import ImageSet
from vprob.data.registry import CIFAR_RECIPE, IMAGENET_RECIPE, STL10_RECIPE, augmentation_for


@pytest.mark.parametrize("kernel, size", [(3, 8), (7, 20), (9, 33)])
def test_batched_blur_matches_per_image_torchvision(kernel, size):
    x = torch.rand(5, 3, size, size + 3, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.7, 2.0, 0.0, 1.3], dtype=torch.float64)
    got = gaussian_blur(x, sigma, kernel)
    for i in range(5):
        if sigma[i] == 0:
            assert torch.equal(got[i], x[i])  # no blur drawn: the image unchanged, bit for bit
            continue
        ref = TF.gaussian_blur(x[i], kernel_size=[kernel, kernel], sigma=[float(sigma[i])] * 2)
        torch.testing.assert_close(got[i], ref, rtol=0, atol=1e-12)


def test_blur_off_by_default_keeps_the_random_stream():
    """Recipes without blur draw exactly the numbers they drew before the blur existed."""
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    plain = SimCLRAugment(16, 3, (0.5,) * 3, (0.25,) * 3)
    explicit = SimCLRAugment(16, 3, (0.5,) * 3, (0.25,) * 3, blur_p=0.0, blur_sigma=(0.5, 1.0))
    a = plain(images, torch.Generator().manual_seed(3))
    b = explicit(images, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # It consumes exactly the pre-blur number of draws (one torch.rand of 51 per image).
    g, ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    plain(images, g)
    torch.rand(6, _N_DRAWS, generator=ref)
    assert _N_DRAWS == 51 and torch.equal(g.get_state(), ref.get_state())


def test_blur_probability_and_sigma_range():
    aug = SimCLRAugment(64, 3, (0.5,) * 3, (0.25,) * 3, blur_p=0.5, blur_sigma=(0.1, 2.0))
    assert aug.blur_kernel == 7  # about 10 % of 64, odd
    params = aug.sample_params(20_000, 64, 64, torch.Generator().manual_seed(0), "cpu")
    blurred = params.blur > 0
    assert abs(blurred.double().mean().item() - 0.5) < 0.02
    assert params.blur[blurred].min() >= 0.1 and params.blur[blurred].max() <= 2.0
    # With blur_p = 1 and every other op off, the output is the blurred (normalized) crop of the identity.
    still = SimCLRAugment(
        16,
        3,
        (0.0,) * 3,
        (1.0,) * 3,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_p=0.0,
        jitter_p=0.0,
        grayscale_p=0.0,
        blur_p=1.0,
        blur_kernel=5,
    )
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    p = still.sample_params(3, 16, 16, torch.Generator().manual_seed(1), "cpu")
    out = still.apply(images, p, dtype=torch.float64)
    for i in range(3):
        ref = TF.gaussian_blur(images[i].double() / 255, kernel_size=[5, 5], sigma=[float(p.blur[i])] * 2)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="blur_kernel"):
        SimCLRAugment(16, 3, (0.5,) * 3, (0.25,) * 3, blur_kernel=4)
    with pytest.raises(ValueError, match="blur_p"):
        SimCLRAugment(16, 3, (0.5,) * 3, (0.25,) * 3, blur_p=1.5)


def _rgb_set(size):
    images = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    return ImageSet(images, torch.tensor([0, 1]), ("a", "b"), (0.4,) * 3, (0.2,) * 3)


@pytest.mark.parametrize(
    "name, size, recipe",
    [
        ("cifar10", 32, CIFAR_RECIPE),
        ("cifar100", 32, CIFAR_RECIPE),
        ("stl10", 96, STL10_RECIPE),
        ("imagefolder", 32, CIFAR_RECIPE),
        ("imagefolder", 64, IMAGENET_RECIPE),
        ("imagefolder", 224, IMAGENET_RECIPE),
    ],
)
def test_recipe_per_data_set_and_resolution(name, size, recipe):
    aug = augmentation_for(name, _rgb_set(size))
    assert aug.image_size == size and aug.crop_scale == recipe["crop_scale"]
    assert aug.blur_p == recipe.get("blur_p", 0.0) and aug.mean == (0.4,) * 3
    assert get_dataset(name).far_ood == "digits"
