"""Pinned facts of the bundled digits data (issue #19): split sizes, dtypes, label range, determinism.

Numbers written out by hand from scikit-learn's digits (1,797 images; class counts 178, 182, 177, 183, 181,
182, 181, 179, 174, 180), so that a change to the split, the rescaling or the seed handling fails here.
"""

import numpy as np
import pytest
import torch

from vprob.data import load_digits

CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


@pytest.fixture(scope="module")
def split():
    return load_digits()


def test_digits_split_sizes_by_hand(split):
    train, test = split
    # round(0.2 * n_c) per class: 36, 36, 35, 37, 36, 36, 36, 36, 35, 36.
    assert test.labels.bincount(minlength=10).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    assert (len(train), len(test)) == (1438, 359)
    assert train.labels.bincount(minlength=10).tolist() == [
        n - t for n, t in zip(CLASS_COUNTS, [36, 36, 35, 37, 36, 36, 36, 36, 35, 36], strict=True)
    ]
    other_train, other_test = load_digits(test_fraction=0.5)
    # Python's round half to even: 88.5 -> 88, 90.5 -> 90, 91.5 -> 92.
    assert len(other_test) == sum(round(0.5 * n) for n in CLASS_COUNTS) == 898
    assert len(other_train) == 899


def test_digits_dtypes_shapes_and_ranges(split):
    for s in split:
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (1, 8, 8)
        assert s.labels.dtype == torch.int64 and s.images.device.type == "cpu"
        assert int(s.labels.min()) == 0 and int(s.labels.max()) == 9
        assert s.num_classes == 10 and s.channels == 1 and s.image_size == 8
    # 0..16 rescaled by 255 / 16 and rounded: only 17 distinct grey levels occur.
    levels = torch.cat([s.images.flatten() for s in split]).unique().tolist()
    assert levels == [int(np.rint(v * 255 / 16)) for v in range(17)]


def test_digits_split_is_a_deterministic_function_of_the_seed(split):
    train, test = split
    again_train, again_test = load_digits(seed=0)
    assert torch.equal(train.images, again_train.images) and torch.equal(test.labels, again_test.labels)
    other, _ = load_digits(seed=1)
    assert not torch.equal(train.images, other.images)
    assert other.labels.bincount(minlength=10).tolist() == train.labels.bincount(minlength=10).tolist()


def _numpy_nt_xent(z, tau):
    """SimCLR's NT-Xent for two views (2, B, d), written out in float64 numpy."""
    rows = np.concatenate([z[0], z[1]]).astype(np.float64)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    n, b = len(rows), len(z[0])
    sim = rows @ rows.T / tau
    losses = []
    for i in range(n):
        others = np.delete(sim[i], i)
        log_denominator = others.max() + np.log(np.exp(others - others.max()).sum())
        losses.append(log_denominator - sim[i, (i + b) % n])
    return float(np.mean(losses))


def test_info_nce_default_temperature_is_0_07():
    """SimCLR's / MoCo's tau = 0.07 is the default (a changed default would silently change every run)."""
    import inspect

    from vprob.losses import info_nce

    z = torch.randn(2, 6, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert info_nce(z).item() == pytest.approx(_numpy_nt_xent(z.numpy(), 0.07), rel=1e-10)
    assert info_nce(z, tau=0.5).item() == pytest.approx(_numpy_nt_xent(z.numpy(), 0.5), rel=1e-10)
    assert inspect.signature(info_nce).parameters["gather"].default is False


def test_supcon_and_cct_default_temperatures():
    """SupCon's tau = 0.07 (Khosla et al. 2020) and CCT's t_pos = 1, t_neg = 0.9 are the defaults: the
    default call equals the call with those values and differs from nearby ones."""
    from vprob.losses import cct, supcon

    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, 8, 5, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    assert supcon(z, labels).item() == supcon(z, labels, tau=0.07).item() != supcon(z, labels, tau=0.1).item()
    z3 = torch.randn(3, 8, 5, generator=g, dtype=torch.float64)  # t_pos weighs >= 2 positives: 3 views
    base = cct(z3).item()
    assert base == cct(z3, t_pos=1.0, t_neg=0.9).item()
    assert base != cct(z3, t_pos=2.0, t_neg=0.9).item() and base != cct(z3, t_pos=1.0, t_neg=1.9).item()
