"""Batched SimCLR augmentation, checked against torchvision's functional ops as the independent oracle."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import RandomResizedCrop

from vprob.data import ImageSet, SimCLRAugment
from vprob.data import augment as A

MEAN3, STD3 = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def _images(n=8, c=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), dtype=torch.uint8, generator=g)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _plain(**kw):
    """No augmentation at all unless switched on by ``kw``; mean 0 / std 1 so outputs are in [0, 1]."""
    args = dict(
        image_size=32,
        channels=3,
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        flip_p=0.0,
        jitter=(0.0, 0.0, 0.0, 0.0),
        jitter_p=0.0,
        grayscale_p=0.0,
    )
    args.update(kw)
    return SimCLRAugment(**args)


# ------------------------------------------------------------------------------------ shapes, RNG


def test_shapes_dtypes_and_memory_format():
    aug = SimCLRAugment(32, 3, MEAN3, STD3)
    x = _images(5)
    out = aug(x, _gen())
    assert out.shape == (5, 3, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()
    bf = aug(x, _gen(), dtype=torch.bfloat16, memory_format=torch.channels_last)
    assert bf.dtype == torch.bfloat16 and bf.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(bf.float(), out, atol=0.05, rtol=0.01)
    ev = aug.normalize(x)
    assert ev.shape == x.shape and ev.dtype == torch.float32
    mean = torch.tensor(MEAN3).view(1, 3, 1, 1)
    std = torch.tensor(STD3).view(1, 3, 1, 1)
    torch.testing.assert_close(ev, (x.float() / 255 - mean) / std)
    small = SimCLRAugment(16, 3, MEAN3, STD3)(x, _gen())
    assert small.shape == (5, 3, 16, 16)


def test_input_checks():
    aug = SimCLRAugment(32, 3, MEAN3, STD3)
    with pytest.raises(ValueError, match="uint8"):
        aug(_images().float(), _gen())
    with pytest.raises(ValueError, match="channels"):
        aug(_images(c=1), _gen())
    with pytest.raises(ValueError, match="3 channels"):
        SimCLRAugment(8, 1, (0.5,), (0.5,), jitter=(0.4, 0.4, 0.4, 0.1))
    with pytest.raises(ValueError, match="crop_scale"):
        SimCLRAugment(32, 3, MEAN3, STD3, crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="hue"):
        SimCLRAugment(32, 3, MEAN3, STD3, jitter=(0.4, 0.4, 0.4, 0.6))


def test_determinism_for_a_fixed_generator():
    aug = SimCLRAugment(32, 3, MEAN3, STD3)
    x = _images(16)
    a, b = aug(x, _gen(3)), aug(x, _gen(3))
    assert torch.equal(a, b)
    assert not torch.allclose(a, aug(x, _gen(4)))
    g = _gen(5)
    assert not torch.allclose(aug(x, g), aug(x, g))  # the generator advances


def test_samples_get_different_parameters():
    aug = SimCLRAugment(32, 3, MEAN3, STD3)
    x = _images(1).expand(64, -1, -1, -1)
    out = aug(x, _gen())
    flat = out.flatten(1)
    distinct = torch.cdist(flat, flat) + torch.eye(64) * 1e3
    assert distinct.min() > 1e-3  # no two views of the same image coincide
    p = aug.sample_params(64, 32, 32, _gen(), "cpu")
    assert p.box.unique(dim=0).shape[0] == 64
    assert 0 < p.flip.sum() < 64 and 0 < p.gray.sum() < 64
    assert p.jitter[:, 0].unique().numel() > 40
    assert p.order.unique(dim=0).shape[0] > 12  # many of the 24 permutations occur
    assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(64, 4))


# ---------------------------------------------------------------------------------- crop and flip


def test_identity_crop_is_exact():
    aug = SimCLRAugment(32, 3, MEAN3, STD3, crop_scale=(1, 1), crop_ratio=(1, 1), flip_p=0.0,
                        jitter=(0, 0, 0, 0), jitter_p=0.0, grayscale_p=0.0)
    x = _images(8)
    torch.testing.assert_close(aug(x, _gen()), aug.normalize(x), atol=1e-5, rtol=0)
    one = SimCLRAugment(8, 1, (0.3,), (0.4,), crop_scale=(1, 1), crop_ratio=(1, 1), flip_p=0.0,
                        jitter=(0, 0, 0, 0), grayscale_p=0.0)
    x1 = _images(4, c=1, size=8)
    torch.testing.assert_close(one(x1, _gen()), one.normalize(x1), atol=1e-5, rtol=0)


def test_flip_equals_torch_flip():
    aug = _plain(flip_p=1.0)
    x = _images(6)
    torch.testing.assert_close(aug(x, _gen()), x.float().flip(-1) / 255, atol=1e-5, rtol=0)


def test_crop_box_resamples_like_torchvision():
    """A box at whole pixels: same size is an exact copy; 2x upsampling matches torchvision's bilinear
    resized_crop inside the box (at the box border we read the true neighbouring pixels where
    torchvision, which crops first, replicates the edge)."""
    x = _images(2, size=32)
    xf = x.float() / 255
    p = _plain().sample_params(2, 32, 32, _gen(), "cpu")
    p.box = torch.tensor([[8.0, 4.0, 16.0, 16.0], [0.0, 10.0, 16.0, 16.0]])
    same = _plain(image_size=16).apply(x, p)
    torch.testing.assert_close(same[0], xf[0, :, 4:20, 8:24], atol=1e-5, rtol=0)
    torch.testing.assert_close(same[1], xf[1, :, 10:26, 0:16], atol=1e-5, rtol=0)
    up = _plain(image_size=32).apply(x, p)
    for i, (left, top) in enumerate([(8, 4), (0, 10)]):
        ref = TF.resized_crop(xf[i], top, left, 16, 16, [32, 32], antialias=False)
        torch.testing.assert_close(up[i, :, 1:-1, 1:-1], ref[:, 1:-1, 1:-1], atol=1e-5, rtol=0)
    # Flipped crop = flip of the crop.
    p.flip[:] = True
    flipped = _plain(image_size=16).apply(x, p)
    torch.testing.assert_close(flipped[0], xf[0, :, 4:20, 8:24].flip(-1), atol=1e-5, rtol=0)


def test_crop_box_statistics():
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    aug = SimCLRAugment(32, 3, MEAN3, STD3, crop_scale=scale, crop_ratio=ratio)
    box = aug.sample_params(20_000, 32, 24, _gen(), "cpu").box
    x0, y0, w, h = box.unbind(1)
    frac = w * h / (32 * 24)
    eps = 1e-5
    fallback = (w == 24) & (h == 24 / 0.75)  # torchvision's fallback box for a 24 / 32 aspect
    assert fallback.float().mean() < 0.01
    frac_ok, aspect = frac[~fallback], (w / h)[~fallback]
    assert frac_ok.min() >= scale[0] - eps and frac_ok.max() <= scale[1] + eps
    assert aspect.min() >= ratio[0] - eps and aspect.max() <= ratio[1] + eps
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + w <= 24 + eps).all() and (y0 + h <= 32 + eps).all()
    # The law matches torchvision's sampler. Compare on a large image: torchvision rounds boxes to whole
    # pixels and accepts round(w) <= W, which on 32-pixel images favours slightly larger crops (mean area
    # fraction 0.55 vs our 0.54 for scale (0.2, 1) on 32x32).
    big = aug.sample_params(20_000, 256, 192, _gen(1), "cpu").box
    big_frac = big[:, 2] * big[:, 3] / (256 * 192)
    torch.manual_seed(0)
    img = torch.zeros(3, 256, 192)
    ref = torch.tensor(
        [math.prod(RandomResizedCrop.get_params(img, list(scale), list(ratio))[2:]) for _ in range(10_000)]
    ) / (256 * 192)
    assert abs(big_frac.mean().item() - ref.mean().item()) < 0.01
    for q in (0.1, 0.5, 0.9):
        assert abs(big_frac.quantile(q).item() - ref.quantile(q).item()) < 0.015
    # Log-uniform aspect: on a square image the log-ratio is symmetric about 0 for a symmetric range.
    sq = aug.sample_params(20_000, 32, 32, _gen(2), "cpu").box
    assert abs(torch.log(sq[:, 2] / sq[:, 3]).mean().item()) < 0.01


def test_crop_fallback_when_nothing_fits():
    aug = _plain(crop_scale=(1.0, 1.0), crop_ratio=(2.0, 3.0))
    box = aug.sample_params(4, 32, 32, _gen(), "cpu").box
    torch.testing.assert_close(box, torch.tensor([[0.0, 8.0, 32.0, 16.0]]).expand(4, 4))


# ---------------------------------------------------------------------------------------- colour


def _float_images(n=12, size=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    x[0] = 0.5  # a gray image
    x[1, :, 0, 0] = torch.tensor([1.0, 1.0, 0.0])  # ties between channel maxima
    x[1, :, 0, 1] = torch.tensor([0.0, 1.0, 1.0])
    x[1, :, 0, 2] = torch.tensor([1.0, 0.0, 1.0])
    return x


@pytest.mark.parametrize(
    "ours, theirs, lo, hi",
    [
        (A.adjust_brightness, TF.adjust_brightness, 0.0, 2.0),
        (A.adjust_contrast, TF.adjust_contrast, 0.0, 2.0),
        (A.adjust_saturation, TF.adjust_saturation, 0.0, 2.0),
        (A.adjust_hue, TF.adjust_hue, -0.5, 0.5),
    ],
)
def test_colour_ops_match_torchvision(ours, theirs, lo, hi):
    x = _float_images()
    factors = torch.linspace(lo, hi, x.shape[0])
    ref = torch.stack([theirs(x[i], float(f)) for i, f in enumerate(factors)])
    torch.testing.assert_close(ours(x, factors), ref, atol=1e-5, rtol=0)


def test_hue_zero_is_identity_and_grayscale_matches():
    x = _float_images()
    torch.testing.assert_close(A.adjust_hue(x, torch.zeros(len(x))), x, atol=1e-6, rtol=0)
    assert torch.equal(SimCLRAugment._jitter_op(x, 3, torch.zeros(len(x))), x)  # exact in the pipeline
    torch.testing.assert_close(A.rgb_to_grayscale(x), TF.rgb_to_grayscale(x), atol=1e-6, rtol=0)
    aug = _plain(grayscale_p=1.0)
    u8 = _images(4)
    out = aug(u8, _gen())
    torch.testing.assert_close(out, TF.rgb_to_grayscale(u8.float() / 255, 3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("random_order", [True, False])
def test_jitter_pipeline_matches_torchvision_per_sample(random_order):
    """The whole jitter block with sampled factors and order equals torchvision's ops applied image by
    image in that order; samples whose block was not drawn are unchanged."""
    aug = _plain(jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.7, random_order=random_order)
    x = _images(32)
    params = aug.sample_params(32, 32, 32, _gen(1), "cpu")
    out = aug.apply(x, params)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    applied = (params.jitter != torch.tensor([1.0, 1.0, 1.0, 0.0])).any(dim=1)
    assert 10 < applied.sum() < 32
    lo = torch.tensor([0.6, 0.6, 0.6, -0.1])
    hi = torch.tensor([1.4, 1.4, 1.4, 0.1])
    assert ((params.jitter >= lo) & (params.jitter <= hi)).all()
    for i in range(32):
        ref = x[i].float() / 255
        order = params.order[i].tolist() if random_order else [0, 1, 2, 3]
        for op in order:
            ref = ops[op](ref, float(params.jitter[i, op]))
        torch.testing.assert_close(out[i], ref, atol=2e-5, rtol=0)
        if not applied[i]:
            torch.testing.assert_close(out[i], x[i].float() / 255, atol=1e-5, rtol=0)


def test_probabilities_are_respected():
    aug = SimCLRAugment(32, 3, MEAN3, STD3, flip_p=0.5, jitter_p=0.8, grayscale_p=0.2)
    p = aug.sample_params(20_000, 32, 32, _gen(), "cpu")
    applied = (p.jitter != torch.tensor([1.0, 1.0, 1.0, 0.0])).any(dim=1)
    assert abs(p.flip.float().mean().item() - 0.5) < 0.02
    assert abs(applied.float().mean().item() - 0.8) < 0.02
    assert abs(p.gray.float().mean().item() - 0.2) < 0.02


# ---------------------------------------------------------------------------------------- recipes


def test_for_dataset_recipes():
    digits = ImageSet(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long),
                      tuple("0123456789"), (0.3,), (0.37,))
    d = SimCLRAugment.for_dataset("digits", digits)
    assert d.image_size == 8 and d.channels == 1 and d.flip_p == 0.0 and d.crop_scale == (0.5, 1.0)
    assert d.jitter[2:] == (0.0, 0.0) and d.grayscale_p == 0.0 and d.mean == (0.3,)
    out = d(torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8), _gen())
    assert out.shape == (10, 1, 8, 8) and torch.isfinite(out).all()
    cifar = ImageSet(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long),
                     tuple("abcdefghij"), MEAN3, STD3)
    c = SimCLRAugment.for_dataset("cifar10", cifar)
    assert c.crop_scale == (0.2, 1.0) and c.flip_p == 0.5 and c.jitter == (0.4, 0.4, 0.4, 0.1)
    assert c.jitter_p == 0.8 and c.grayscale_p == 0.2 and c.image_size == 32
    assert SimCLRAugment.for_dataset("cifar10", cifar, crop_scale=(0.08, 1.0)).crop_scale == (0.08, 1.0)
    with pytest.raises(ValueError, match="digits, cifar10"):
        SimCLRAugment.for_dataset("svhn", cifar)


def test_output_statistics_are_sane():
    """Augmented views of natural-ish images stay near the normalized range, with no NaNs."""
    aug = SimCLRAugment(32, 3, MEAN3, STD3, crop_scale=(0.2, 1.0))
    out = aug(_images(64), _gen())
    assert torch.isfinite(out).all()
    lo = (0 - np.array(MEAN3)) / np.array(STD3)
    hi = (1 - np.array(MEAN3)) / np.array(STD3)
    per_channel = out.transpose(0, 1).reshape(3, -1)
    assert (per_channel.min(1).values >= torch.tensor(lo, dtype=torch.float32) - 1e-4).all()
    assert (per_channel.max(1).values <= torch.tensor(hi, dtype=torch.float32) + 1e-4).all()


@pytest.mark.cuda
def test_cuda_matches_cpu_for_the_same_parameters():
    aug = SimCLRAugment(32, 3, MEAN3, STD3, crop_scale=(0.2, 1.0))
    x = _images(64)
    p = aug.sample_params(64, 32, 32, _gen(), "cpu")
    cpu = aug.apply(x, p)
    p_cuda = type(p)(**{k: v.cuda() for k, v in vars(p).items()})
    gpu = aug.apply(x.cuda(), p_cuda)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
    g = torch.Generator(device="cuda")
    g.manual_seed(0)
    a = aug(x.cuda(), g)
    g.manual_seed(0)
    assert torch.equal(a, aug(x.cuda(), g))
    with pytest.raises(ValueError, match="generator"):
        aug(x.cuda(), _gen())
