"""Tests of distributions.VonMisesFisher against independent oracles.

Oracles: mpmath (30-40 digits) for the Bessel function, the normaliser, the KL and the sampler's implicit
derivative; scipy.stats.vonmises_fisher / vonmises for the density, entropy and the law of samples;
one-dimensional quadrature (scipy.integrate.quad) of the law of w = mu.x for expectations, CDFs and their
derivatives; Monte Carlo for the normalisation, the mean and the KL; gradcheck in float64.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pyro
import pytest
import scipy.integrate
import scipy.stats
import torch
from _distribution_helpers import log_sphere_area, rel_err
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.optim import Adam
from torch.distributions import kl_divergence

from distributions.hyperspherical_uniform import HypersphericalUniform
from distributions.von_mises_fisher import (
    VonMisesFisher,
    _dw_dkappa,
    bessel_iv_ratio,
    log_bessel_iv,
    vmf_log_normalizer,
)

F64 = torch.float64


def unit(d: int, seed: int = 0, dtype=F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, dtype=F64, generator=g)
    return (x / x.norm()).to(dtype)


# ---------------------------------------------------------------------------------------------------------
# mpmath references
# ---------------------------------------------------------------------------------------------------------


def mp_log_iv(nu: float, x: float) -> mpmath.mpf:
    with mpmath.workdps(40):
        return mpmath.log(mpmath.besseli(mpmath.mpf(nu), mpmath.mpf(x), maxterms=10**6))


def mp_ratio(nu: float, x: float) -> mpmath.mpf:
    with mpmath.workdps(40):
        nu, x = mpmath.mpf(nu), mpmath.mpf(x)
        return mpmath.besseli(nu + 1, x, maxterms=10**6) / mpmath.besseli(nu, x, maxterms=10**6)


def mp_log_c(d: int, kappa: float) -> mpmath.mpf:
    """log C_d(kappa) by its definition; the limit -log|S^{d-1}| at kappa = 0."""
    with mpmath.workdps(40):
        half = mpmath.mpf(d) / 2
        if kappa == 0:
            return -(mpmath.log(2) + half * mpmath.log(mpmath.pi) - mpmath.loggamma(half))
        k = mpmath.mpf(kappa)
        return (half - 1) * mpmath.log(k) - half * mpmath.log(2 * mpmath.pi) - mp_log_iv(float(half - 1), k)


def mp_kl_uniform(d: int, kappa: float) -> mpmath.mpf:
    """KL(vMF || U) = log C + kappa A + log|S^{d-1}| (E[mu.x] = A)."""
    with mpmath.workdps(40):
        half = mpmath.mpf(d) / 2
        log_area = mpmath.log(2) + half * mpmath.log(mpmath.pi) - mpmath.loggamma(half)
        return mp_log_c(d, kappa) + kappa * mp_ratio(d / 2 - 1, kappa) + log_area


NUS = [0.0, 0.5, 1.0, 4.5, 15.0, 16.0, 63.0, 2047.0]
XS = [1e-4, 0.3, 7.0, 150.0, 3000.0, 1e5]


@pytest.mark.parametrize("nu", NUS)
def test_log_bessel_and_ratio_against_mpmath(nu):
    x = torch.tensor(XS, dtype=F64)
    log_i = log_bessel_iv(nu, x)
    ratio = bessel_iv_ratio(nu, x)
    for i, xv in enumerate(XS):
        assert rel_err(log_i[i].item(), float(mp_log_iv(nu, xv))) < 1e-14, (nu, xv)
        ref = float(mp_ratio(nu, xv))
        assert abs(ratio[i].item() - ref) / ref < 1e-14, (nu, xv)
    # x = 0: I_nu(0) = 0 for nu > 0 and 1 for nu = 0; the ratio is 0
    at_zero = log_bessel_iv(nu, torch.zeros(1, dtype=F64))
    assert at_zero.item() == (0.0 if nu == 0 else -math.inf)
    assert bessel_iv_ratio(nu, torch.zeros(1, dtype=F64)).item() == 0.0


@pytest.mark.parametrize("d", [2, 3, 5, 128, 4096])
def test_log_normalizer_against_mpmath(d):
    kappas = [0.0, 1e-4, 1.0, 50.0, 1e3, 1e5]
    k = torch.tensor(kappas, dtype=F64, requires_grad=True)
    log_c = vmf_log_normalizer(d, k)
    assert torch.isfinite(log_c).all()
    for i, kv in enumerate(kappas):
        assert rel_err(log_c[i].item(), float(mp_log_c(d, kv))) < 1e-14, (d, kv)
    # kappa -> 0 is the uniform, continuously
    assert log_c[0].item() == pytest.approx(-log_sphere_area(d), rel=1e-15)
    assert abs(log_c[1].item() - log_c[0].item()) < 1e-8
    # d/dkappa log C_d = -A_d, against mpmath's numerical derivative of the definition
    (grad,) = torch.autograd.grad(log_c.sum(), k)
    for i, kv in enumerate(kappas[1:4], start=1):
        with mpmath.workdps(40):
            ref = float(mpmath.diff(lambda t: mp_log_c(d, t), mpmath.mpf(kv), h=mpmath.mpf(kv) * 1e-12))
        assert abs(grad[i].item() - ref) <= 1e-12 * max(1.0, abs(ref)), (d, kv)
    assert grad[0].item() == 0.0  # -A_d(0)
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("d", [2, 7, 4096])
def test_normalizer_second_derivative(d):
    """The custom backward is itself differentiable: gradgradcheck, and A' = 1 - A^2 - (d-1) A / kappa."""
    k = torch.tensor([1e-3, 0.7, 12.0, 900.0], dtype=F64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: vmf_log_normalizer(d, t), (k,))
    torch.autograd.gradgradcheck(lambda t: vmf_log_normalizer(d, t), (k,))


@pytest.mark.parametrize("d", [3, 64, 4096])
def test_kl_to_uniform_against_mpmath(d):
    """Relative accuracy down to kappa = 1e-4, where the KL (about kappa^2 / (2d)) is far below log|S|."""
    kappas = [1e-4, 0.5, 1.0, 30.0, 1e5]
    q = VonMisesFisher(unit(d).expand(len(kappas), d), torch.tensor(kappas, dtype=F64))
    kl = kl_divergence(q, HypersphericalUniform(d, dtype=F64))
    assert kl.shape == (len(kappas),)
    for i, kv in enumerate(kappas):
        ref = float(mp_kl_uniform(d, kv))
        assert abs(kl[i].item() - ref) <= 1e-12 * abs(ref), (d, kv)


# ---------------------------------------------------------------------------------------------------------
# scipy
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3, 5, 10, 64])
def test_log_prob_and_entropy_against_scipy(d):
    kappas = torch.tensor([0.1, 2.0, 30.0, 300.0], dtype=F64)
    mu = unit(d, seed=d)
    dist = VonMisesFisher(mu.expand(4, d), kappas)
    x = torch.cat([dist.sample((5,)), mu.expand(1, 4, d), -mu.expand(1, 4, d)])  # mode and antipode too
    lp = dist.log_prob(x)
    h = dist.entropy()
    assert lp.shape == (7, 4) and lp.dtype == F64
    for j, kv in enumerate(kappas.tolist()):
        ref = scipy.stats.vonmises_fisher(mu.numpy(), kv)
        expected = ref.logpdf(x[:, j].numpy())
        np.testing.assert_allclose(lp[:, j].numpy(), expected, rtol=1e-10, atol=1e-10)
        assert rel_err(h[j].item(), ref.entropy()) < 1e-10


def test_kappa_zero_is_uniform():
    for d in [2, 3, 10, 4096]:
        q = VonMisesFisher(unit(d), torch.tensor(0.0, dtype=F64))
        x = HypersphericalUniform(d, dtype=F64).sample((3,))
        expected = torch.full((3,), -log_sphere_area(d), dtype=F64)
        torch.testing.assert_close(q.log_prob(x), expected, rtol=1e-15, atol=0)
        assert q.entropy().item() == pytest.approx(log_sphere_area(d), rel=1e-15)
        assert q.mean.abs().max().item() == 0.0
        assert kl_divergence(q, HypersphericalUniform(d, dtype=F64)).item() == 0.0
    # samples at kappa = 0: (w + 1)/2 ~ Beta((d-1)/2, (d-1)/2), the uniform's law
    w = VonMisesFisher(unit(6), torch.tensor(0.0, dtype=F64)).sample((3000,)) @ unit(6)
    assert scipy.stats.kstest(((w + 1) / 2).numpy(), scipy.stats.beta(2.5, 2.5).cdf).pvalue > 1e-3


# ---------------------------------------------------------------------------------------------------------
# The law of w = mu.x by quadrature
# ---------------------------------------------------------------------------------------------------------


def w_log_density(d: int, kappa: float):
    """Unnormalised log density of w on (-1, 1) (shifted by kappa to avoid overflow) and its normaliser."""

    def log_f(w):
        return kappa * (w - 1.0) + (d - 3) / 2 * np.log1p(-w * w) if d != 3 else kappa * (w - 1.0)

    # the mass lies within ~40/kappa of w = 1 for large kappa: split there for quad
    cut = max(-1.0, 1.0 - 60.0 / max(kappa, 1e-300)) if kappa > 0 else -1.0
    pts = [c for c in (cut, 1.0 - 1.0 / max(kappa, 1e-3)) if -1.0 < c < 1.0]
    z = scipy.integrate.quad(
        lambda w: np.exp(log_f(w)), -1.0, 1.0, points=pts or None, limit=200, epsabs=0, epsrel=1e-12
    )[0]
    return log_f, z, pts


def w_expectation(d: int, kappa: float, f) -> float:
    log_f, z, pts = w_log_density(d, kappa)
    return (
        scipy.integrate.quad(
            lambda w: f(w) * np.exp(log_f(w)),
            -1.0,
            1.0,
            points=pts or None,
            limit=200,
            epsabs=0,
            epsrel=1e-12,
        )[0]
        / z
    )


def w_cdf(d: int, kappa: float, ws: np.ndarray) -> np.ndarray:
    """CDF of w at sorted points, by quadrature between consecutive points."""
    log_f, z, _ = w_log_density(d, kappa)
    order = np.argsort(ws)
    edges = np.concatenate([[-1.0], ws[order]])
    pieces = [
        scipy.integrate.quad(lambda w: np.exp(log_f(w)), a, b, epsabs=0, epsrel=1e-10)[0]
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    out = np.empty_like(ws)
    out[order] = np.cumsum(pieces) / z
    return np.clip(out, 0.0, 1.0)


@pytest.mark.parametrize(("d", "kappa"), [(2, 1.0), (3, 10.0), (4, 1000.0), (10, 5.0), (128, 50.0)])
def test_sampled_w_has_the_vmf_law(d, kappa):
    n = 2000
    mu = unit(d, seed=1)
    x = VonMisesFisher(mu, torch.tensor(kappa, dtype=F64)).sample((n,))
    assert x.shape == (n, d)
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(n, dtype=F64), rtol=0, atol=1e-14)
    w = (x @ mu).numpy()
    assert scipy.stats.kstest(w_cdf(d, kappa, w), "uniform").pvalue > 1e-3
    # power: the same samples against a law with another concentration are rejected
    assert scipy.stats.kstest(w_cdf(d, 1.25 * kappa + 1.0, w), "uniform").pvalue < 1e-3


def test_circle_against_scipy_vonmises():
    """d = 2: the angle of the samples to mu is von Mises (a different parameterisation and code)."""
    mu = unit(2, seed=3)
    x = VonMisesFisher(mu, torch.tensor(2.5, dtype=F64)).sample((3000,))
    perp = torch.stack([-mu[1], mu[0]])
    theta = torch.atan2(x @ perp, x @ mu).numpy()
    assert scipy.stats.kstest(theta, scipy.stats.vonmises(2.5).cdf).pvalue > 1e-3


def test_gof_of_w_with_pyro():
    from pyro.distributions.testing.gof import auto_goodness_of_fit

    d, kappa = 10, 5.0
    mu = unit(d, seed=4)
    w = (VonMisesFisher(mu, torch.tensor(kappa, dtype=F64)).sample((4000,)) @ mu).numpy()
    log_f, z, _ = w_log_density(d, kappa)
    probs = torch.from_numpy(np.exp(log_f(w)) / z)
    assert auto_goodness_of_fit(torch.from_numpy(w), probs, dim=1) > 1e-3


def test_monte_carlo_normalisation():
    """E_U[q(u) |S^{d-1}|] = 1 by importance sampling from the uniform."""
    for d in [3, 5]:
        q = VonMisesFisher(unit(d), torch.tensor(2.0, dtype=F64))
        u = HypersphericalUniform(d, dtype=F64).sample((200_000,))
        ratio = torch.exp(q.log_prob(u) + log_sphere_area(d))
        assert abs(ratio.mean().item() - 1.0) < 4 * ratio.std().item() / math.sqrt(len(u))


def test_mean_variance_and_kl_by_monte_carlo():
    d, kappa, n = 5, 4.0, 100_000
    q = VonMisesFisher(unit(d, seed=5), torch.tensor(kappa, dtype=F64))
    x = q.sample((n,))
    se = x.std(0) / math.sqrt(n)
    assert ((x.mean(0) - q.mean).abs() < 4.5 * se).all()
    assert q.mean.norm().item() == pytest.approx(float(mp_ratio(d / 2 - 1, kappa)), rel=1e-14)
    torch.testing.assert_close(q.variance, x.var(0), rtol=0.03, atol=2e-3)
    torch.testing.assert_close(q.mode, unit(d, seed=5))
    log_ratio = q.log_prob(x) - HypersphericalUniform(d, dtype=F64).log_prob(x)
    kl = kl_divergence(q, HypersphericalUniform(d, dtype=F64)).item()
    assert abs(log_ratio.mean().item() - kl) < 4 * log_ratio.std().item() / math.sqrt(n)


# ---------------------------------------------------------------------------------------------------------
# Reparameterized gradients
# ---------------------------------------------------------------------------------------------------------


def mp_dw_dkappa(d: int, kappa: float, w: float) -> float:
    """-(dF/dkappa)(w) / p(w) = int_w^1 (s - A) p(s) ds / p(w), 30 digits."""
    with mpmath.workdps(30):
        a = mpmath.mpf(d - 1) / 2
        k, w = mpmath.mpf(kappa), mpmath.mpf(w)
        mean = mp_ratio(d / 2 - 1, kappa) if kappa > 0 else mpmath.mpf(0)

        def f(s):
            log_ratio = k * (s - w) + (a - 1) * (mpmath.log1p(-s * s) - mpmath.log1p(-w * w))
            return (s - mean) * mpmath.exp(log_ratio)

        fr = (1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.3, 0.6, 0.9, 0.99)
        if w >= mean:
            return float(mpmath.quad(f, [w] + [w + (1 - w) * c for c in fr] + [1]))
        return float(-mpmath.quad(f, [-1] + [w - (1 + w) * c for c in reversed(fr)] + [w]))


@pytest.mark.parametrize(("d", "kappa"), [(2, 0.0), (2, 30.0), (4, 1e3), (10, 2.0), (128, 1e5), (4096, 40.0)])
def test_implicit_derivative_against_mpmath(d, kappa):
    """dw/dkappa of the sampler (quadrature in backward) against 30-digit quadrature, w on both sides of A."""
    from distributions.von_mises_fisher import _bessel_core, _sample_w_wood

    k = torch.full((4,), kappa, dtype=F64)
    tm, tp = _sample_w_wood(k, d)
    _, _, ratio, one_minus_ratio = _bessel_core(d / 2 - 1, k)
    dw = _dw_dkappa((d - 1) / 2, k, tm, tp, ratio, one_minus_ratio)
    for i in range(4):
        w = float(mpmath.mpf(1) - mpmath.mpf(tm[i].item()))
        ref = mp_dw_dkappa(d, kappa, w)
        assert abs(dw[i].item() - ref) <= 1e-9 * abs(ref), (d, kappa, w)


@pytest.mark.parametrize(("d", "kappa"), [(2, 1.5), (3, 4.0), (5, 20.0)])
def test_reparameterized_gradient_of_an_expectation(d, kappa):
    """d/dkappa E[f(mu.x)] by the sampler (pathwise, many samples) vs finite differences of quadrature."""

    def f_np(w):
        return np.exp(2.0 * w) + w**3

    def f_torch(w):
        return torch.exp(2.0 * w) + w**3

    h = 1e-4
    expected = (w_expectation(d, kappa + h, f_np) - w_expectation(d, kappa - h, f_np)) / (2 * h)
    n = 100_000
    mu = unit(d, seed=7)
    k = torch.full((n,), kappa, dtype=F64, requires_grad=True)
    x = VonMisesFisher(mu.expand(n, d), k).rsample()
    (per_sample,) = torch.autograd.grad(f_torch(x @ mu).sum(), k)
    est, se = per_sample.mean().item(), per_sample.std().item() / math.sqrt(n)
    assert abs(est - expected) < 4.5 * se + 1e-6, (est, expected, se)
    assert se < 0.05 * abs(expected)  # the check has power (a zero or straight-through gradient fails)


def test_gradient_with_respect_to_loc_through_householder():
    """E[a.x] = A_d(kappa) a.mu, so d/dp E[a.x] with mu = p/|p| is A (a - (a.mu) mu) / |p|."""
    d, kappa, n = 6, 3.0, 40_000
    p = torch.tensor([0.3, -1.2, 0.5, 2.0, 0.1, -0.7], dtype=F64, requires_grad=True)
    a = unit(d, seed=8)
    mu = p / p.norm()
    x = VonMisesFisher(mu, torch.tensor(kappa, dtype=F64)).rsample((n,))
    (grad,) = torch.autograd.grad((x @ a).mean(), p)
    with torch.no_grad():
        big_a = bessel_iv_ratio(d / 2 - 1, torch.tensor(kappa, dtype=F64))
        m = p / p.norm()
        expected = big_a * (a - (a @ m) * m) / p.norm()
    torch.testing.assert_close(grad, expected, rtol=0, atol=0.02)
    assert (grad - expected).norm() < 0.1 * expected.norm()


def test_gradcheck_log_prob():
    d = 4
    for kappa in [0.3, 40.0]:
        loc = unit(d, seed=9).requires_grad_()
        k = torch.tensor(kappa, dtype=F64, requires_grad=True)
        x = VonMisesFisher(unit(d, seed=9), torch.tensor(kappa, dtype=F64)).sample((3,)).requires_grad_()
        torch.autograd.gradcheck(
            lambda m, c, v: VonMisesFisher(m, c, validate_args=False).log_prob(v), (loc, k, x)
        )


# ---------------------------------------------------------------------------------------------------------
# Pyro contract
# ---------------------------------------------------------------------------------------------------------


def test_shapes_expand_and_infer_shapes():
    loc = torch.nn.functional.normalize(torch.randn(3, 1, 5), dim=-1)
    conc = torch.rand(4) * 5
    q = VonMisesFisher(loc, conc)
    assert q.batch_shape == (3, 4) and q.event_shape == (5,)
    assert q.has_rsample and q.support is constraints.sphere
    assert q.sample().shape == (3, 4, 5)
    assert q.rsample((2, 7)).shape == (2, 7, 3, 4, 5)
    assert q.log_prob(q.sample((6,))).shape == (6, 3, 4)
    assert q.entropy().shape == (3, 4) and q.mean.shape == (3, 4, 5) and q.variance.shape == (3, 4, 5)
    assert VonMisesFisher.infer_shapes((3, 1, 5), (4,)) == (torch.Size([3, 4]), torch.Size([5]))
    assert VonMisesFisher.infer_shapes((5,)) == (torch.Size([]), torch.Size([5]))
    big = q.expand((2, 3, 4))
    assert type(big) is VonMisesFisher and big.batch_shape == (2, 3, 4)
    torch.testing.assert_close(big.entropy(), q.entropy().expand(2, 3, 4))
    x = q.sample()
    torch.testing.assert_close(big.log_prob(x), q.log_prob(x).expand(2, 3, 4))
    with pytest.raises(ValueError, match="expand"):
        VonMisesFisher(loc, conc).expand((2,))  # not a valid expansion of (3, 4)
    # a Python float concentration
    assert VonMisesFisher(unit(3, dtype=torch.float32), 2.0).batch_shape == ()


def test_float32():
    for d in [3, 10, 4096]:
        q = VonMisesFisher(unit(d, dtype=torch.float32), torch.tensor([0.0, 2.0, 1e5]))
        x = q.sample((4,))
        assert x.dtype == torch.float32 and constraints.sphere.check(x).all()
        lp = q.log_prob(x)
        assert lp.dtype == torch.float32 and torch.isfinite(lp).all()
        # the same (float32-rounded) parameters and values, evaluated in float64
        ref64 = VonMisesFisher(q.loc.double(), q.concentration.double(), validate_args=False)
        ref = ref64.log_prob(x.double())
        torch.testing.assert_close(lp.double(), ref, rtol=1e-6, atol=1e-5)
        assert q.entropy().dtype == torch.float32 and q.mean.dtype == torch.float32


@pytest.mark.parametrize("d", [3, 4096])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_extreme_concentrations_are_finite(d, dtype):
    loc = unit(d, dtype=dtype).requires_grad_()
    k = torch.tensor([0.0, 1e-6, 1e5], dtype=dtype, requires_grad=True)
    q = VonMisesFisher(loc, k)
    x = q.rsample((50,))
    assert torch.isfinite(x).all() and constraints.sphere.check(x.detach()).all()
    lp = q.log_prob(x.detach())
    assert torch.isfinite(lp).all()
    loss = (x @ unit(d, seed=11, dtype=dtype)).sum() + lp.sum() + q.entropy().sum() + q.mean.sum()
    g_loc, g_k = torch.autograd.grad(loss, (loc, k))
    assert torch.isfinite(g_loc).all() and torch.isfinite(g_k).all()
    # at kappa = 1e5 the samples sit within ~(d-1)/(2 kappa) of the mode
    w = x[:, 2].detach().double() @ loc.detach().double()
    assert (1 - w).max().item() < 40 * (d - 1) / 1e5
    if dtype == F64:
        for kv, j in [(0.0, 0), (1e5, 2)]:
            # kappa mu.x summed exactly (mpmath) over the sample's float64 coordinates: at kappa = 1e5 a
            # float64 dot product alone carries a rounding error of the tolerance's size.
            with mpmath.workdps(40):
                dot = mpmath.fsum(
                    mpmath.mpf(a) * mpmath.mpf(b) for a, b in zip(x[0, j].tolist(), loc.tolist(), strict=True)
                )
            ref = float(mp_log_c(d, kv) + kv * dot)
            assert rel_err(lp[0, j].item(), ref) < 1e-12


def test_inside_pyro_plate_and_analytic_kl():
    d, n = 4, 6

    def model():
        with pyro.plate("data", n):
            pyro.sample("z", HypersphericalUniform(d))

    def guide():
        loc = torch.nn.functional.normalize(torch.ones(d), dim=0)
        with pyro.plate("data", n):
            pyro.sample("z", VonMisesFisher(loc, torch.tensor(3.0)))

    tr = poutine.trace(guide).get_trace()
    site = tr.nodes["z"]
    assert type(site["fn"]) is VonMisesFisher and site["fn"].batch_shape == (n,)
    assert site["value"].shape == (n, d)
    # TraceMeanField_ELBO uses the registered KL (the plate expands the guide's distribution)
    loss = TraceMeanField_ELBO().differentiable_loss(model, guide)
    loc = torch.nn.functional.normalize(torch.ones(d), dim=0)
    kl = VonMisesFisher(loc, torch.tensor(3.0)).kl_to_uniform()
    assert loss.item() == pytest.approx(n * kl.item(), rel=1e-6)


def test_kl_dimension_mismatch():
    with pytest.raises(ValueError, match="dimension"):
        kl_divergence(VonMisesFisher(unit(3), torch.tensor(1.0, dtype=F64)), HypersphericalUniform(4))


def test_svi_recovers_direction_and_concentration():
    pyro.clear_param_store()
    d, kappa0 = 3, 8.0
    mu0 = unit(d, seed=12, dtype=torch.float32)
    data = VonMisesFisher(mu0, torch.tensor(kappa0)).sample((1000,))

    def model(x):
        mu = pyro.param("mu", torch.tensor([1.0, 0.0, 0.0]), constraint=constraints.sphere)
        kappa = pyro.param("kappa", torch.tensor(1.0), constraint=constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("x", VonMisesFisher(mu, kappa), obs=x)

    svi = SVI(model, lambda x: None, Adam({"lr": 0.1}), Trace_ELBO())
    for _ in range(200):
        svi.step(data)
    mu_hat = pyro.param("mu").detach()
    kappa_hat = pyro.param("kappa").item()
    assert (mu_hat @ mu0).item() > 0.999
    assert kappa_hat == pytest.approx(kappa0, rel=0.1)
    pyro.clear_param_store()


def test_validation_messages():
    with pytest.raises(ValueError, match="loc must be unit vectors"):
        VonMisesFisher(torch.tensor([1.0, 1.0, 0.0]), 1.0, validate_args=True)
    with pytest.raises(ValueError, match="concentration must be non-negative"):
        VonMisesFisher(unit(3), torch.tensor(-1.0, dtype=F64), validate_args=True)
    with pytest.raises(ValueError, match="concentration must be non-negative"):
        VonMisesFisher(unit(3), torch.tensor(math.inf, dtype=F64), validate_args=True)
    with pytest.raises(ValueError, match="d >= 2"):
        VonMisesFisher(torch.tensor([1.0]), 1.0)
    with pytest.raises(ValueError, match="scalar"):
        VonMisesFisher(torch.tensor(1.0), 1.0)
    with pytest.raises(ValueError, match="broadcast"):
        VonMisesFisher(torch.eye(3)[:2], torch.ones(3))
    q = VonMisesFisher(unit(3), torch.tensor(1.0, dtype=F64), validate_args=True)
    with pytest.raises(ValueError, match="value"):
        q.log_prob(torch.tensor([1.0, 0.0], dtype=F64))
    with pytest.raises(ValueError):
        q.expand((2,)).log_prob(torch.tensor([[1.0, 1.0, 0.0]], dtype=F64))  # off the sphere, after expand
    with pytest.raises(ValueError, match="nu"):
        log_bessel_iv(-1.0, torch.ones(1))


def test_jit_trace_matches_eager():
    """Under torch.jit.trace the event size is a tensor; log_prob and rsample must still trace."""
    d = 5
    loc, k = unit(d), torch.tensor([0.5, 7.0], dtype=F64)
    x = VonMisesFisher(loc, k).sample((3,))

    def lp(m, c, v):
        return VonMisesFisher(m, c, validate_args=False).log_prob(v)

    traced = torch.jit.trace(lp, (loc, k, x), check_trace=False)
    torch.testing.assert_close(traced(loc, k, x), lp(loc, k, x))

    def rs(m, c):
        return VonMisesFisher(m, c, validate_args=False).rsample((4,))

    traced_rs = torch.jit.trace(rs, (loc, k), check_trace=False)
    torch.manual_seed(3)
    a = traced_rs(loc, k)
    torch.manual_seed(3)
    b = rs(loc, k)
    assert a.shape == b.shape == (4, 2, d) and constraints.sphere.check(a).all()


@pytest.mark.parametrize("d", [3, 5])
def test_jit_trace_elbo(d):
    """JitTrace_ELBO (event size a tensor under tracing; the d = 3 closed form and Wood's sampler with the
    implicit gradient): SVI turns the guide's direction to the data's."""
    import warnings

    from pyro.infer import JitTrace_ELBO

    pyro.clear_param_store()
    target = torch.nn.functional.normalize(torch.ones(d), dim=0)
    data = VonMisesFisher(target, torch.tensor(5.0)).sample((200,))

    def model(x):
        z = pyro.sample("z", HypersphericalUniform(d))
        with pyro.plate("data", len(x)):
            pyro.sample("x", VonMisesFisher(z, torch.tensor(5.0)), obs=x)

    def guide(x):
        m = pyro.param("m", torch.eye(d)[0], constraint=constraints.sphere)
        k = pyro.param("k", torch.tensor(2.0), constraint=constraints.positive)
        pyro.sample("z", VonMisesFisher(m, k))

    svi = SVI(model, guide, Adam({"lr": 0.1}), JitTrace_ELBO())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        losses = [svi.step(data) for _ in range(60)]
    assert all(math.isfinite(v) for v in losses)
    assert (pyro.param("m").detach() @ target).item() > 0.9  # from 1/sqrt(d) at the start
    assert pyro.param("k").item() > 2.0
    pyro.clear_param_store()


@pytest.mark.slow
def test_torch_compile_fullgraph():
    d = 5
    loc, k = unit(d), torch.tensor([0.5, 7.0], dtype=F64)
    x = VonMisesFisher(loc, k).sample((3,))

    def lp(m, c, v):
        return VonMisesFisher(m, c, validate_args=False).log_prob(v)

    compiled = torch.compile(lp, fullgraph=True)
    torch.testing.assert_close(compiled(loc, k, x), lp(loc, k, x))

    def rs(m, c):
        return VonMisesFisher(m, c, validate_args=False).rsample((4,))

    out = torch.compile(rs, fullgraph=True)(loc, k)
    assert out.shape == (4, 2, d) and constraints.sphere.check(out).all()


@pytest.mark.parametrize("d", [3, 5])
def test_the_gradient_with_respect_to_loc_survives_at_the_pole(d):
    """At loc = e1 (a common starting value) the pathwise gradient of the samples with respect to loc is the
    gradient of the mean A_d(kappa) loc in the tangent directions (a reflection along e1 - loc vanishes there
    and lost it: the gradient came out as 0)."""
    torch.manual_seed(0)
    loc = torch.zeros(d, dtype=F64)
    loc[0] = 1.0
    loc.requires_grad_()
    kappa = torch.tensor(10.0, dtype=F64)
    x = VonMisesFisher(loc, kappa).rsample((200_000,))
    (sampled,) = torch.autograd.grad(x.mean(0).sum(), loc)
    (exact,) = torch.autograd.grad(VonMisesFisher(loc, kappa).mean.sum(), loc)
    torch.testing.assert_close(sampled[1:], exact[1:], rtol=0.01, atol=0.0)
