"""Batched SimCLR augmentation, checked against torchvision's functional ops as the independent oracle."""

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from scipy import stats
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
    aug = SimCLRAugment(
        32,
        3,
        MEAN3,
        STD3,
        crop_scale=(1, 1),
        crop_ratio=(1, 1),
        flip_p=0.0,
        jitter=(0, 0, 0, 0),
        jitter_p=0.0,
        grayscale_p=0.0,
    )
    x = _images(8)
    torch.testing.assert_close(aug(x, _gen()), aug.normalize(x), atol=1e-5, rtol=0)
    one = SimCLRAugment(
        8,
        1,
        (0.3,),
        (0.4,),
        crop_scale=(1, 1),
        crop_ratio=(1, 1),
        flip_p=0.0,
        jitter=(0, 0, 0, 0),
        grayscale_p=0.0,
    )
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
    digits = ImageSet(
        torch.zeros(4, 1, 8, 8, dtype=torch.uint8),
        torch.zeros(4, dtype=torch.long),
        tuple("0123456789"),
        (0.3,),
        (0.37,),
    )
    d = SimCLRAugment.for_dataset("digits", digits)
    assert d.image_size == 8 and d.channels == 1 and d.flip_p == 0.0 and d.crop_scale == (0.5, 1.0)
    assert d.jitter[2:] == (0.0, 0.0) and d.grayscale_p == 0.0 and d.mean == (0.3,)
    out = d(torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8), _gen())
    assert out.shape == (10, 1, 8, 8) and torch.isfinite(out).all()
    cifar = ImageSet(
        torch.zeros(4, 3, 32, 32, dtype=torch.uint8),
        torch.zeros(4, dtype=torch.long),
        tuple("abcdefghij"),
        MEAN3,
        STD3,
    )
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


# ------------------------------------------------------------------------------------ pinned behaviour
# Laws of the sampled parameters pinned at non-default settings (where a one-line change shows), with
# Kolmogorov-Smirnov tests against scipy's uniform law and binomial tolerances of ~5 standard errors.


def _ks_uniform(values, lo, hi):
    """p-value of a KS test of ``values`` against Uniform(lo, hi) (scipy as the oracle)."""
    return stats.kstest(np.asarray(values, dtype=np.float64), stats.uniform(loc=lo, scale=hi - lo).cdf).pvalue


@pytest.mark.parametrize(
    "scale, ratio",
    [((0.5, 0.6), (3 / 4, 4 / 3)), ((0.1, 0.25), (0.5, 2.0)), ((0.3, 0.3), (1.0, 3.0))],
)
def test_crop_area_and_log_aspect_are_uniform_when_every_box_fits(scale, ratio):
    """On a square image, scale <= 1 / max(ratio, 1 / ratio) means the first attempt always fits, so the
    area fraction is exactly Uniform(scale) and log(w / h) exactly Uniform(log ratio), independent."""
    assert scale[1] * max(ratio[1], 1 / ratio[0]) <= 1
    aug = _plain(crop_scale=scale, crop_ratio=ratio)
    box = aug.sample_params(8000, 40, 40, _gen(7), "cpu").box.double()
    x0, y0, w, h = box.unbind(1)
    area = (w * h / 1600).numpy()
    log_aspect = torch.log(w / h).numpy()
    if scale[0] == scale[1]:
        np.testing.assert_allclose(area, scale[0], rtol=1e-5)
    else:
        assert area.min() >= scale[0] - 1e-6 and area.max() <= scale[1] + 1e-6
        assert _ks_uniform(area, *scale) > 1e-3
        assert abs(np.corrcoef(area, log_aspect)[0, 1]) < 0.06
    assert log_aspect.min() >= math.log(ratio[0]) - 1e-5 and log_aspect.max() <= math.log(ratio[1]) + 1e-5
    assert _ks_uniform(log_aspect, math.log(ratio[0]), math.log(ratio[1])) > 1e-3
    # Position: uniform over the free room, independently in x and y.
    fx, fy = (x0 / (40 - w)).numpy(), (y0 / (40 - h)).numpy()
    assert _ks_uniform(fx, 0, 1) > 1e-3 and _ks_uniform(fy, 0, 1) > 1e-3
    assert abs(np.corrcoef(fx, fy)[0, 1]) < 0.06


def _numpy_crop_sampler(n, height, width, scale, ratio, rng):
    """Continuous RandomResizedCrop.get_params written from torchvision's description: up to 10 attempts
    (area uniform in scale, log-uniform aspect), the first box that fits wins; else the centred fallback."""
    out = np.empty((n, 4))
    for i in range(n):
        for _ in range(10):
            target = height * width * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
            if w <= width and h <= height:
                out[i] = (rng.uniform() * (width - w), rng.uniform() * (height - h), w, h)
                break
        else:
            r = width / height
            fw, fh = (
                (width, width / ratio[0])
                if r < ratio[0]
                else (height * ratio[1], height)
                if r > ratio[1]
                else (width, height)
            )
            out[i] = ((width - fw) / 2, (height - fh) / 2, fw, fh)
    return out


@pytest.mark.parametrize("scale, ratio", [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.6, 1.0), (0.5, 2.0))])
def test_crop_law_matches_a_numpy_sampler_where_boxes_get_rejected(scale, ratio):
    """Where attempts get rejected (large areas, wide ratios) the accepted law is not uniform any more:
    compare area, aspect and position with an independent numpy rejection sampler (two-sample KS)."""
    height, width = 24, 32
    ours = _plain(crop_scale=scale, crop_ratio=ratio).sample_params(6000, height, width, _gen(11), "cpu").box
    ours = ours.double().numpy()
    ref = _numpy_crop_sampler(6000, height, width, scale, ratio, np.random.default_rng(0))
    for name, f in (
        ("area", lambda b: b[:, 2] * b[:, 3]),
        ("log aspect", lambda b: np.log(b[:, 2] / b[:, 3])),
        ("centre x", lambda b: b[:, 0] + b[:, 2] / 2),
        ("centre y", lambda b: b[:, 1] + b[:, 3] / 2),
    ):
        assert stats.ks_2samp(f(ours), f(ref)).pvalue > 1e-3, name


@pytest.mark.parametrize(
    "height, width, ratio, expected",
    [
        (24, 32, (2.0, 3.0), (0.0, 4.0, 32.0, 16.0)),  # input 4/3 below the range: full width
        (32, 24, (0.25, 0.5), (4.0, 0.0, 16.0, 32.0)),  # input 3/4 above the range: full height
        (32, 24, (0.5, 1.0), (0.0, 0.0, 24.0, 32.0)),  # input 3/4 inside the range: whole image
    ],
)
def test_crop_fallback_per_branch(height, width, ratio, expected):
    """scale (1, 1) fits no attempt unless the aspect equals the image's, so every box is the fallback."""
    box = _plain(crop_scale=(1.0, 1.0), crop_ratio=ratio).sample_params(5, height, width, _gen(), "cpu").box
    torch.testing.assert_close(box, torch.tensor([expected]).expand(5, 4))


def test_gate_probabilities_at_asymmetric_values_and_independence():
    """p = 0.1 / 0.3 / 0.65 (at 0.5 a reversed comparison would pass); the three gates use separate draws."""
    n = 40_000
    aug = SimCLRAugment(32, 3, MEAN3, STD3, flip_p=0.1, jitter_p=0.3, grayscale_p=0.65)
    p = aug.sample_params(n, 32, 32, _gen(5), "cpu")
    applied = (p.jitter != torch.tensor([1.0, 1.0, 1.0, 0.0])).any(dim=1)
    gates = {"flip": (p.flip, 0.1), "jitter": (applied, 0.3), "gray": (p.gray, 0.65)}
    for name, (gate, prob) in gates.items():
        assert abs(gate.double().mean().item() - prob) < 5 * math.sqrt(prob * (1 - prob) / n), name
    for (a, pa), (b, pb) in [
        (gates["flip"], gates["gray"]),
        (gates["flip"], gates["jitter"]),
        (gates["jitter"], gates["gray"]),
    ]:
        both = (a & b).double().mean().item()
        assert abs(both - pa * pb) < 5 * math.sqrt(pa * pb * (1 - pa * pb) / n)
    never = SimCLRAugment(32, 3, MEAN3, STD3, flip_p=0.0, jitter_p=0.0, grayscale_p=0.0)
    q = never.sample_params(2000, 32, 32, _gen(), "cpu")
    assert not q.flip.any() and not q.gray.any() and (q.jitter == torch.tensor([1.0, 1.0, 1.0, 0.0])).all()
    always = SimCLRAugment(32, 3, MEAN3, STD3, flip_p=1.0, jitter_p=1.0, grayscale_p=1.0)
    q = always.sample_params(2000, 32, 32, _gen(), "cpu")
    assert q.flip.all() and q.gray.all()


def test_jitter_factor_laws():
    """Factors uniform on [max(0, 1 - s), 1 + s] (brightness, contrast, saturation) and [-h, h] (hue),
    with four different strengths so that a swapped index or range fails; each independent of the others."""
    strengths = (0.4, 1.5, 0.2, 0.05)  # contrast 1.5 clips its lower end at 0
    aug = _plain(jitter=strengths, jitter_p=1.0)
    f = aug.sample_params(8000, 32, 32, _gen(9), "cpu").jitter.double().numpy()
    ranges = [(0.6, 1.4), (0.0, 2.5), (0.8, 1.2), (-0.05, 0.05)]
    for i, (lo, hi) in enumerate(ranges):
        assert f[:, i].min() >= lo - 1e-6 and f[:, i].max() <= hi + 1e-6, i
        assert _ks_uniform(f[:, i], lo, hi) > 1e-3, i
    corr = np.corrcoef(f.T)
    assert np.abs(corr - np.eye(4)).max() < 0.06
    # A disabled op keeps its neutral factor for every sample.
    g = _plain(jitter=(0.4, 0.0, 0.0, 0.0), jitter_p=1.0).sample_params(100, 32, 32, _gen(), "cpu").jitter
    assert (g[:, 1:] == torch.tensor([1.0, 1.0, 0.0])).all() and (g[:, 0] != 1.0).all()


def test_jitter_order_is_a_uniform_permutation():
    aug = _plain(jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=1.0)
    order = aug.sample_params(24_000, 8, 8, _gen(4), "cpu").order
    codes = (order * torch.tensor([64, 16, 4, 1])).sum(1)
    counts = torch.bincount(codes, minlength=256)[codes.unique()]
    assert counts.numel() == 24
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3


def test_normalization_uses_the_data_sets_train_statistics():
    """for_dataset normalizes with the ImageSet's train mean and std: for digits these are the population
    statistics of the rescaled train pixels (numpy), the same for the test split."""
    from vprob.data import load_digits

    train, test = load_digits()
    pixels = train.images.numpy().astype(np.float64) / 255
    mean, std = pixels.mean(), pixels.std()
    aug = SimCLRAugment.for_dataset("digits", train)
    assert aug.mean == pytest.approx((mean,), abs=1e-12) and aug.std == pytest.approx((std,), abs=1e-12)
    expected = (test.images.double() / 255 - mean) / std
    torch.testing.assert_close(aug.normalize(test.images).double(), expected, atol=1e-5, rtol=0)
    # Per channel, in channel order (distinct constants per channel).
    aug3 = SimCLRAugment(4, 3, (0.1, 0.5, 0.9), (0.2, 0.4, 0.8))
    out = aug3.normalize(torch.full((1, 3, 4, 4), 255, dtype=torch.uint8))
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([4.5, 1.25, 0.125]))


def test_recipe_ratios_and_jitter_gates():
    digits = ImageSet(
        torch.zeros(4, 1, 8, 8, dtype=torch.uint8),
        torch.zeros(4, dtype=torch.long),
        tuple("0123456789"),
        (0.3,),
        (0.37,),
    )
    cifar = ImageSet(
        torch.zeros(4, 3, 32, 32, dtype=torch.uint8),
        torch.zeros(4, dtype=torch.long),
        tuple("abcdefghij"),
        MEAN3,
        STD3,
    )
    d = SimCLRAugment.for_dataset("digits", digits)
    c = SimCLRAugment.for_dataset("cifar10", cifar)
    for aug in (d, c):
        assert aug.crop_ratio == pytest.approx((3 / 4, 4 / 3)) and aug.jitter_p == 0.8
    assert d.jitter == (0.2, 0.2, 0.0, 0.0) and d.std == (0.37,)
    assert c.mean == MEAN3 and c.std == STD3 and c.random_order


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(channels=2, mean=(0.5,) * 2, std=(0.5,) * 2), r"^channels must be 1 or 3, got 2$"),
        (dict(image_size=0), r"^image_size must be positive, got 0$"),
        (dict(mean=(0.5, 0.5)), r"^mean and std need 3 values each, got 2 and 3$"),
        (dict(std=(0.5, 0.5)), r"^mean and std need 3 values each, got 3 and 2$"),
        (dict(std=(0.5, 0.0, 0.5)), r"^std must be positive, got \(0\.5, 0\.0, 0\.5\)$"),
        (dict(crop_scale=(0.5, 1.5)), r"^crop_scale must satisfy"),
        (dict(crop_scale=(0.6, 0.5)), r"^crop_scale must satisfy"),
        (dict(crop_ratio=(0.0, 1.0)), r"^crop_ratio must satisfy 0 < lo <= hi, got \(0\.0, 1\.0\)$"),
        (dict(crop_ratio=(2.0, 1.0)), r"^crop_ratio must satisfy"),
        (dict(flip_p=1.5), r"^flip_p must lie in \[0, 1\], got 1\.5$"),
        (dict(jitter_p=-0.1), r"^jitter_p must lie in \[0, 1\]"),
        (dict(grayscale_p=1.01), r"^grayscale_p must lie in \[0, 1\]"),
        (dict(jitter=(0.4, 0.4, 0.4)), r"^jitter needs 4 values \(brightness, contrast, saturation, hue\)"),
        (dict(jitter=(-0.1, 0.4, 0.4, 0.1)), r"^brightness jitter must be non-negative, got -0\.1$"),
        (dict(jitter=(0.4, -0.1, 0.4, 0.1)), r"^contrast jitter must be non-negative"),
        (dict(jitter=(0.4, 0.4, -0.1, 0.1)), r"^saturation jitter must be non-negative"),
        (dict(jitter=(0.4, 0.4, 0.4, 0.51)), r"^hue jitter must lie in \[0, 0\.5\]"),
    ],
)
def test_constructor_rejects_bad_arguments_by_name(kwargs, message):
    args = dict(image_size=32, channels=3, mean=MEAN3, std=STD3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        SimCLRAugment(**args)


@pytest.mark.parametrize(
    "jitter, grayscale_p", [((0, 0, 0.5, 0), 0.0), ((0, 0, 0, 0.3), 0.0), ((0, 0, 0, 0), 0.5)]
)
def test_one_channel_rejects_each_colour_op_alone(jitter, grayscale_p):
    with pytest.raises(ValueError, match="^saturation, hue and grayscale augmentations need 3 channels"):
        SimCLRAugment(8, 1, (0.5,), (0.5,), jitter=jitter, grayscale_p=grayscale_p)


def test_constructor_boundary_values_are_valid():
    SimCLRAugment(1, 3, MEAN3, STD3)  # a 1-pixel output
    SimCLRAugment(32, 3, MEAN3, STD3, jitter=(0.4, 0.4, 0.4, 0.5), crop_scale=(1.0, 1.0), flip_p=1.0)
    SimCLRAugment(8, 1, (0.5,), (0.5,), jitter=(0.4, 0.4, 0.0, 0.0), grayscale_p=0.0)
    text = repr(SimCLRAugment(32, 3, MEAN3, STD3))
    assert text.startswith("SimCLRAugment(image_size=32, channels=3, crop_scale=(0.08, 1.0)")


def test_global_rng_without_a_generator_and_channel_message():
    aug = SimCLRAugment(32, 3, MEAN3, STD3)
    x = _images(4)
    torch.manual_seed(1)
    a = aug(x)
    torch.manual_seed(1)
    assert torch.equal(a, aug(x))
    with pytest.raises(ValueError, match=r"^expected 3 channels, got 1$"):
        aug(_images(2, c=1, size=8))


def test_normalize_dtype_and_memory_format():
    aug = SimCLRAugment(8, 3, MEAN3, STD3)
    x = _images(2, size=8)
    out = aug.normalize(x, dtype=torch.float64, memory_format=torch.channels_last)
    assert out.dtype == torch.float64 and out.is_contiguous(memory_format=torch.channels_last)
    assert not out.is_contiguous()
    torch.testing.assert_close(out, aug.normalize(x).double(), atol=1e-6, rtol=0)


def test_upsampled_crop_reads_the_border_not_zeros():
    """Output pixels within half an input pixel of the image edge sample beyond the last pixel centre:
    they must repeat the edge (padding 'border'), so a constant image stays constant when upsampled."""
    x = torch.full((2, 3, 16, 16), 200, dtype=torch.uint8)
    out = _plain(image_size=40)(x, _gen())
    torch.testing.assert_close(out, torch.full((2, 3, 40, 40), 200 / 255), atol=1e-6, rtol=0)


def test_gates_factors_order_and_crop_are_independent():
    """Each random quantity has its own draw: with every gate at p = 0.5, the colour factors of the jittered
    samples stay uniform on their full ranges, and no factor correlates with a gate, the crop or the order."""
    n = 20_000
    aug = SimCLRAugment(
        32,
        3,
        MEAN3,
        STD3,
        crop_scale=(0.3, 0.5),
        flip_p=0.5,
        jitter=(0.4, 0.3, 0.2, 0.1),
        jitter_p=0.5,
        grayscale_p=0.5,
    )
    p = aug.sample_params(n, 32, 32, _gen(13), "cpu")
    applied = (p.jitter != torch.tensor([1.0, 1.0, 1.0, 0.0])).any(dim=1)
    f = p.jitter[applied].double().numpy()
    for i, (lo, hi) in enumerate([(0.6, 1.4), (0.7, 1.3), (0.8, 1.2), (-0.1, 0.1)]):
        assert _ks_uniform(f[:, i], lo, hi) > 1e-3, i
    slot_of_op = p.order.argsort(dim=1)[applied].double().numpy()  # where each op sits in the order
    box = p.box[applied].double().numpy()
    gates = [p.flip[applied].numpy(), p.gray[applied].numpy()]
    others = np.column_stack([*gates, box, slot_of_op]).astype(float)
    corr = np.corrcoef(np.column_stack([f, others]).T)[:4, 4:]
    assert np.abs(corr).max() < 0.05, np.abs(corr).max()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(blur_p=1.5), r"^blur_p must lie in \[0, 1\], got 1\.5$"),
        (dict(blur_p=0.5, blur_sigma=(0.0, 1.0)), r"^blur_sigma must satisfy 0 < lo <= hi, got \(0\.0, 1\.0"),
        (dict(blur_p=0.5, blur_sigma=(2.0, 1.0)), r"^blur_sigma must satisfy"),
        (dict(blur_p=0.5, blur_kernel=4), r"^blur_kernel must be a positive odd integer, got 4$"),
        (dict(blur_p=0.5, blur_kernel=65), r"^blur_kernel 65 is too large for 32-pixel images \(reflection"),
    ],
)
def test_blur_arguments_are_checked_by_name(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimCLRAugment(32, 3, MEAN3, STD3, **kwargs)


def test_blur_boundary_values_and_sigma_law():
    SimCLRAugment(32, 3, MEAN3, STD3, blur_p=0.5, blur_sigma=(1.0, 1.0), blur_kernel=1)
    SimCLRAugment(32, 3, MEAN3, STD3, blur_p=0.5, blur_kernel=63)  # 63 // 2 = 31 < 32
    SimCLRAugment(32, 3, MEAN3, STD3, blur_p=0.0, blur_kernel=65)  # no blur: no size limit
    assert SimCLRAugment(32, 3, MEAN3, STD3).sample_params(4, 32, 32, _gen(), "cpu").blur is None
    n = 20_000
    aug = SimCLRAugment(32, 3, MEAN3, STD3, grayscale_p=0.5, blur_p=0.3, blur_sigma=(0.5, 1.5))
    p = aug.sample_params(n, 32, 32, _gen(17), "cpu")
    blurred = p.blur > 0
    assert abs(blurred.double().mean().item() - 0.3) < 5 * math.sqrt(0.21 / n)
    sigma = p.blur[blurred].double().numpy()
    assert _ks_uniform(sigma, 0.5, 1.5) > 1e-3
    assert abs(np.corrcoef(sigma, p.gray[blurred].numpy())[0, 1]) < 0.05
    assert abs(np.corrcoef(blurred.numpy(), p.gray.numpy())[0, 1]) < 0.05
