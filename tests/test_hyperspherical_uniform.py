"""Tests of distributions.HypersphericalUniform against independent oracles (mpmath, scipy, geomstats)."""

import os
import warnings

import mpmath
import numpy as np
import pyro
import pytest
import scipy.special
import scipy.stats
import torch
from pyro import poutine
from pyro.distributions import constraints

from distributions.hyperspherical_uniform import HypersphericalUniform

DIMS = [2, 3, 10, 512, 4096]


def mp_log_area(d: int) -> float:
    """log |S^{d-1}| = log(2 pi^{d/2} / Gamma(d/2)) in 50-digit arithmetic."""
    with mpmath.workdps(50):
        half = mpmath.mpf(d) / 2
        return float(mpmath.log(2 * mpmath.pi**half / mpmath.gamma(half)))


@pytest.mark.parametrize("d", DIMS)
def test_log_prob_is_minus_log_surface_area(d):
    expected = -mp_log_area(d)
    # scipy as a second, independent formula
    assert expected == pytest.approx(
        -(np.log(2.0) + 0.5 * d * np.log(np.pi) - scipy.special.gammaln(0.5 * d)), rel=1e-13, abs=1e-12
    )
    dist = HypersphericalUniform(d, dtype=torch.float64)
    u = dist.sample((7,))
    lp = dist.log_prob(u)
    assert lp.shape == (7,)
    assert lp.dtype == torch.float64
    torch.testing.assert_close(lp, torch.full((7,), expected, dtype=torch.float64), rtol=1e-13, atol=1e-12)


def test_known_areas():
    assert -HypersphericalUniform(2).log_prob(torch.tensor([1.0, 0.0])).item() == pytest.approx(
        np.log(2 * np.pi), rel=1e-6
    )
    assert -HypersphericalUniform(3).log_prob(torch.tensor([0.0, 0.0, 1.0])).item() == pytest.approx(
        np.log(4 * np.pi), rel=1e-6
    )


@pytest.mark.parametrize("d", DIMS)
def test_entropy(d):
    dist = HypersphericalUniform(d, batch_shape=(2, 3), dtype=torch.float64)
    h = dist.entropy()
    assert h.shape == (2, 3)
    torch.testing.assert_close(h, torch.full((2, 3), mp_log_area(d), dtype=torch.float64), rtol=1e-13, atol=0)
    # entropy = -E[log p]
    torch.testing.assert_close(h, -dist.log_prob(dist.sample()), rtol=1e-13, atol=0)


def test_attributes_and_shapes():
    dist = HypersphericalUniform(5, batch_shape=(4,))
    assert dist.dim == 5
    assert dist.event_shape == (5,)
    assert dist.batch_shape == (4,)
    assert dist.has_rsample
    assert dist.support is constraints.sphere
    assert dist.sample().shape == (4, 5)
    assert dist.rsample((2, 3)).shape == (2, 3, 4, 5)
    assert dist.sample().dtype == torch.get_default_dtype()
    # log_prob broadcasts value's batch dimensions against batch_shape
    assert dist.log_prob(torch.tensor([1.0, 0, 0, 0, 0])).shape == (4,)
    assert dist.log_prob(dist.sample((3,))).shape == (3, 4)
    assert dist.log_prob(torch.eye(5)[:1].expand(6, 1, 5)).shape == (6, 4)
    torch.testing.assert_close(dist.mean, torch.zeros(4, 5))
    assert HypersphericalUniform.infer_shapes(dim=(5,), batch_shape=(4,)) == ((4,), (5,))
    assert HypersphericalUniform(np.int64(3)).event_shape == (3,)
    assert HypersphericalUniform(3, dtype=torch.float64).sample().dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", DIMS)
def test_samples_on_sphere(d, dtype):
    u = HypersphericalUniform(d, dtype=dtype).sample((200,))
    assert u.dtype == dtype
    assert constraints.sphere.check(u).all()


@pytest.mark.parametrize("d", [2, 3, 10])
def test_first_two_moments(d):
    """E[u] = 0 and E[u u^T] = I/d (Monte Carlo, 4 standard errors)."""
    n = 40_000
    dist = HypersphericalUniform(d, dtype=torch.float64)
    u = dist.sample((n,))
    # per-coordinate sd of u_j is 1/sqrt(d); of u_j u_k (j != k) is 1/sqrt(d(d+2)); of u_j^2 about sqrt(2/d^2)
    assert (u.mean(0).abs() < 4.5 / np.sqrt(d * n)).all()
    second = u.T @ u / n
    assert (
        (second - torch.eye(d, dtype=torch.float64) / d).abs() < 4.5 * np.sqrt(2.0) / (d * np.sqrt(n))
    ).all()
    torch.testing.assert_close(dist.variance, torch.full((d,), 1.0 / d, dtype=torch.float64))


@pytest.mark.parametrize("d", [2, 3, 10, 512])
def test_projection_is_beta(d):
    """(u.e + 1) / 2 ~ Beta((d-1)/2, (d-1)/2) for any unit e (one-sample KS, exact law)."""
    u = HypersphericalUniform(d, dtype=torch.float64).sample((3000,))
    e = torch.nn.functional.normalize(torch.randn(d, dtype=torch.float64), dim=0)
    t = ((u @ e + 1) / 2).numpy()
    a = (d - 1) / 2
    assert scipy.stats.kstest(t, scipy.stats.beta(a, a).cdf).pvalue > 1e-3


def _geomstats_uniform(d: int, n: int) -> np.ndarray:
    """n points of geomstats' uniform on S^{d-1} (geomstats counts the manifold dimension d - 1)."""
    os.environ.setdefault("GEOMSTATS_BACKEND", "numpy")
    dtype = torch.get_default_dtype()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportWarning)
            from geomstats.geometry.hypersphere import Hypersphere

        np.random.seed(1)  # noqa: NPY002 (geomstats' numpy backend draws from the global generator)
        x = Hypersphere(dim=d - 1).random_uniform(n_samples=n)
        return np.asarray(x, dtype=np.float64)
    finally:
        torch.set_default_dtype(dtype)


@pytest.mark.parametrize("d", [3, 10])
def test_two_sample_against_geomstats(d):
    """KS two-sample tests on projections onto random directions (Bonferroni over directions)."""
    n = 2000
    theirs = _geomstats_uniform(d, n)
    assert theirs.shape == (n, d)
    ours = HypersphericalUniform(d, dtype=torch.float64).sample((n,)).numpy()
    rng = np.random.default_rng(2)
    dirs = rng.standard_normal((8, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    pvalues = [scipy.stats.ks_2samp(ours @ e, theirs @ e).pvalue for e in dirs]
    assert min(pvalues) > 1e-3 / len(dirs)
    # a coordinate's absolute value, whose law depends on d (a wrong dimension convention would show)
    assert scipy.stats.ks_2samp(np.abs(ours[:, 0]), np.abs(theirs[:, 0])).pvalue > 1e-3


def test_two_sample_detects_a_wrong_law():
    """Sanity check of the projection test's power: a uniform on S^2 vs a projected normal with mean."""
    n = 2000
    ours = HypersphericalUniform(3, dtype=torch.float64).sample((n,)).numpy()
    x = np.random.default_rng(3).standard_normal((n, 3)) + np.array([0.3, 0.0, 0.0])
    other = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert scipy.stats.ks_2samp(ours[:, 0], other[:, 0]).pvalue < 1e-4


def test_expand_keeps_class():
    dist = HypersphericalUniform(4, dtype=torch.float64)
    big = dist.expand((3, 2))
    assert type(big) is HypersphericalUniform
    assert big.batch_shape == (3, 2)
    assert big.event_shape == (4,)
    assert big.dim == 4
    assert big.sample().dtype == torch.float64
    torch.testing.assert_close(big.entropy(), torch.full((3, 2), mp_log_area(4), dtype=torch.float64))


def test_inside_pyro_plate():
    d, n = 6, 5

    def model():
        with pyro.plate("data", n):
            return pyro.sample("z", HypersphericalUniform(d))

    tr = poutine.trace(model).get_trace()
    site = tr.nodes["z"]
    assert type(site["fn"]) is HypersphericalUniform
    assert site["fn"].batch_shape == (n,)
    assert site["value"].shape == (n, d)
    tr.compute_log_prob()
    torch.testing.assert_close(
        site["log_prob"], torch.full((n,), -mp_log_area(d), dtype=site["log_prob"].dtype)
    )
    # and with an observation
    obs = torch.nn.functional.normalize(torch.randn(n, d), dim=-1)
    cond = poutine.trace(poutine.condition(model, data={"z": obs})).get_trace()
    assert cond.log_prob_sum().item() == pytest.approx(-n * mp_log_area(d), rel=1e-6)


@pytest.mark.parametrize("dim", [1, 0, -3, 2.5, 3.0, "3", "three", True, None])
def test_bad_dim(dim):
    with pytest.raises(ValueError, match="dim"):
        HypersphericalUniform(dim)


def test_infer_shapes_takes_shapes_only():
    # Pyro's protocol: shapes in, (batch_shape, event_shape) out; a generic caller passes () for the shape
    # of a non-tensor argument such as dim, which cannot determine d.
    assert HypersphericalUniform.infer_shapes(dim=(3,)) == (torch.Size(), torch.Size([3]))
    with pytest.raises(NotImplementedError, match="value of dim"):
        HypersphericalUniform.infer_shapes(dim=(), batch_shape=())
    with pytest.raises(TypeError, match="takes shapes"):
        HypersphericalUniform.infer_shapes(dim=5)
    with pytest.raises(ValueError, match="dim must be"):
        HypersphericalUniform.infer_shapes(dim=(1,))


@pytest.mark.parametrize(
    "old,new,ok",
    [
        ((), (4, 3), True),
        ((2, 1), (2, 4), True),
        ((2, 1), (5, 2, 7), True),
        ((3,), (3,), True),
        ((2, 1), (4, 3), False),
        ((3,), (4,), False),
        ((2, 3), (3,), False),
        ((2,), (2, 0), False),
    ],
)
def test_expand_follows_torch_rules(old, new, ok):
    # The oracle is torch's own Tensor.expand.
    try:
        torch.empty(old).expand(new)
        torch_ok = True
    except RuntimeError:
        torch_ok = False
    assert torch_ok == ok
    dist = HypersphericalUniform(3, batch_shape=old)
    if ok:
        assert dist.expand(new).batch_shape == new
    else:
        with pytest.raises(ValueError, match="cannot expand"):
            dist.expand(new)


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype"):
        HypersphericalUniform(3, dtype=torch.int64)


def test_value_validation():
    dist = HypersphericalUniform(3, validate_args=True)
    with pytest.raises(ValueError, match="value"):
        dist.log_prob(torch.tensor([1.0, 0.0]))  # wrong event shape
    with pytest.raises(ValueError, match="value"):
        dist.log_prob(torch.tensor([1.0, 1.0, 0.0]))  # off the sphere
    with pytest.raises(ValueError, match="value"):
        dist.expand((2,)).log_prob(torch.tensor([[1.0, 1.0, 0.0]]))  # validation survives expand
    # without validation, no error
    off = HypersphericalUniform(3, validate_args=False).log_prob(torch.tensor([1.0, 1.0, 0.0]))
    assert torch.isfinite(off)
