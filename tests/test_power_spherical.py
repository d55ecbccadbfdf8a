"""Tests of distributions.PowerSpherical against independent oracles.

Oracles: the density and entropy from the definition in 30-digit mpmath; scipy's Beta law of (1 + mu.x)/2
(pointwise log density, quadrature, Kolmogorov-Smirnov); quadrature over w = mu.x for the normalisation and
for expectations and their derivatives; Monte Carlo; float64 gradcheck; the power-spherical package (0.8.1)
where it is installed.
"""

import functools
import math

import mpmath
import numpy as np
import pyro
import pytest
import scipy.integrate
import scipy.special
import scipy.stats
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.testing.gof import auto_goodness_of_fit
from torch.distributions import kl_divergence

from distributions.hyperspherical_uniform import HypersphericalUniform
from distributions.power_spherical import PowerSpherical

MP_DPS = 30
F64 = torch.float64


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def random_loc(d: int, dtype=F64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return unit(torch.randn(d, dtype=F64, generator=g)).to(dtype)


def mp_log_norm_const(d: int, kappa: float) -> mpmath.mpf:
    """log C_d(kappa) = (alpha + beta) log 2 + beta log pi + log Gamma(alpha) - log Gamma(alpha + beta)."""
    with mpmath.workdps(MP_DPS):
        beta = mpmath.mpf(d - 1) / 2
        alpha = beta + mpmath.mpf(kappa)
        return (
            (alpha + beta) * mpmath.log(2)
            + beta * mpmath.log(mpmath.pi)
            + mpmath.loggamma(alpha)
            - (mpmath.loggamma(alpha + beta))
        )


_SCALE = 1100  # every float64 times 2^1100 is an integer


def exact_dot(a, b) -> mpmath.mpf:
    """The exact dot product of two float64 sequences (Python integers), rounded once to an mpf."""
    ia = [(n << (_SCALE - k.bit_length() + 1)) for n, k in (float(v).as_integer_ratio() for v in a)]
    ib = [(n << (_SCALE - k.bit_length() + 1)) for n, k in (float(v).as_integer_ratio() for v in b)]
    return mpmath.mpf(sum(x * y for x, y in zip(ia, ib, strict=True))) / mpmath.mpf(2) ** (2 * _SCALE)


def mp_log_prob(loc, kappa: float, x) -> mpmath.mpf:
    """kappa log(1 + mu.x) - log C at the points of the sphere nearest to the float inputs.

    Both vectors are normalised in 30-digit arithmetic from their exact binary values (inputs a few ulps
    off the sphere have no density of their own; the nearest point on the sphere is what they stand for).
    """
    with mpmath.workdps(MP_DPS):
        w = exact_dot(loc, x) / mpmath.sqrt(exact_dot(loc, loc) * exact_dot(x, x))
        log_c = mp_log_norm_const(len(loc), kappa)
        if kappa == 0:
            return -log_c
        if 1 + w <= 0:
            return -mpmath.inf
        return mpmath.mpf(kappa) * mpmath.log(1 + w) - log_c


def mp_entropy(d: int, kappa: float) -> mpmath.mpf:
    """H = log C - kappa E[log(1 + w)], E[log(1 + w)] = log 2 + digamma(alpha) - digamma(alpha + beta)."""
    with mpmath.workdps(MP_DPS):
        beta = mpmath.mpf(d - 1) / 2
        alpha = beta + mpmath.mpf(kappa)
        e_log = mpmath.log(2) + mpmath.digamma(alpha) - mpmath.digamma(alpha + beta)
        return mp_log_norm_const(d, kappa) - mpmath.mpf(kappa) * e_log


def mp_log_area(d: int) -> float:
    with mpmath.workdps(MP_DPS):
        return float(mpmath.log(2 * mpmath.pi ** (mpmath.mpf(d) / 2) / mpmath.gamma(mpmath.mpf(d) / 2)))


def rel_err(a: float, e: float) -> float:
    return abs(a - e) / max(1.0, abs(e))


def point_at(loc: torch.Tensor, w: float, seed: int = 0) -> torch.Tensor:
    """A unit vector x with mu.x = w (a random direction orthogonal to loc)."""
    g = torch.Generator().manual_seed(1000 + seed)  # not random_loc's seeds: v would be parallel to loc
    v = torch.randn(loc.shape[-1], dtype=loc.dtype, generator=g)
    v = unit(v - (v @ loc) * loc)
    return w * loc + math.sqrt(max(0.0, 1 - w * w)) * v


def beta_params(d: int, kappa: float) -> tuple[float, float]:
    return (d - 1) / 2 + kappa, (d - 1) / 2


# (d, kappa) grid of the brief: small and high d, concentration 0 to 1e5 (alpha = 20 is where the
# normaliser switches to its Stirling form: 18.99 and 19 straddle it at d = 3).
GRID = [(d, k) for d in (2, 3, 5, 64, 4096) for k in (0.0, 1e-4, 0.5, 3.0, 18.99, 19.0, 100.0, 1e4, 1e5)]
# fewer at d = 4096, where the 30-digit dot products take most of the time
GRID_LOG_PROB = [(d, k) for d, k in GRID if d < 4096 or k in (0.0, 19.0, 1e5)]


# ---------------------------------------------------------------------------------------------------------
# log_prob and entropy against mpmath


# Relative tolerances: (at samples, the mode, random points; 1e-3 from the antipode). d <= 16 evaluates
# log((1 + w)/2) from squared distances, full precision everywhere; higher d from the dot product, whose
# absolute error of an ulp in 1 + w shows near the antipode.
TOLS = {
    (F64, True): (2e-14, 2e-14),
    (torch.float32, True): (2e-5, 2e-5),
    (F64, False): (1e-12, 1e-11),
    (torch.float32, False): (3e-4, 3e-3),
}


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("d,kappa", GRID_LOG_PROB)
def test_log_prob_against_mpmath(d, kappa, dtype):
    loc = random_loc(d, dtype, seed=d)
    p = PowerSpherical(loc, torch.tensor(kappa, dtype=dtype))
    torch.manual_seed(1)
    near_antipode = unit(-loc + 1e-3 * torch.randn(d, dtype=dtype))
    x = torch.cat([p.sample((3,)), loc[None], unit(torch.randn(2, d, dtype=dtype)), near_antipode[None]])
    lp = p.log_prob(x)
    assert lp.dtype == dtype and lp.shape == (7,)
    tol, tol_antipode = TOLS[dtype, d <= 16]
    for i in range(len(x)):
        expected = float(mp_log_prob(loc.tolist(), kappa, x[i].tolist()))
        assert rel_err(lp[i].item(), expected) < (tol if i < 6 else tol_antipode), (i, lp[i].item(), expected)


@pytest.mark.parametrize("d,kappa", GRID)
def test_entropy_against_mpmath(d, kappa):
    loc = random_loc(d).expand(2, d)
    h = PowerSpherical(loc, torch.tensor(kappa, dtype=F64)).entropy()
    assert h.shape == (2,) and h.dtype == F64
    expected = float(mp_entropy(d, kappa))
    assert rel_err(h[0].item(), expected) < 2e-14
    h32 = PowerSpherical(loc.float(), torch.tensor(kappa)).entropy()
    assert h32.dtype == torch.float32
    assert rel_err(h32[0].item(), expected) < 1e-6


@pytest.mark.parametrize("d", [2, 3, 7, 4096])
def test_zero_concentration_is_the_uniform(d):
    """kappa = 0: log_prob, entropy equal HypersphericalUniform's, and the KL is exactly 0."""
    loc = random_loc(d)
    p = PowerSpherical(loc, 0.0)
    u = HypersphericalUniform(d, dtype=F64)
    x = torch.cat([u.sample((5,)), loc[None], -loc[None]])  # the antipode: 0 * log 0 = 0
    torch.testing.assert_close(p.log_prob(x), u.log_prob(x), rtol=0, atol=0)
    torch.testing.assert_close(p.entropy(), u.entropy(), rtol=0, atol=0)
    assert kl_divergence(p, u).item() == 0.0
    assert p.log_prob(x)[0].item() == pytest.approx(-mp_log_area(d), rel=1e-15)
    torch.testing.assert_close(p.mean, torch.zeros(d, dtype=F64))


@pytest.mark.parametrize("d", [2, 3, 4096])
def test_antipode(d):
    """log p(-mu) = -inf for kappa > 0 (exact antipodes: loc with exactly representable unit norm)."""
    loc = torch.full((d,), 1 / math.sqrt(d), dtype=F64) if d == 4096 else torch.eye(d, dtype=F64)[-1]
    assert loc.norm().item() == 1.0
    for kappa in (1e-4, 1.0, 1e5):
        assert PowerSpherical(loc, kappa).log_prob(-loc).item() == -math.inf
    # kappa = 0 at the antipode: finite value and finite gradients (0 * log 0 = 0)
    loc_ = loc.clone().requires_grad_()
    kappa = torch.tensor(0.0, dtype=F64, requires_grad=True)
    lp = PowerSpherical(loc_, kappa).log_prob(-loc)
    lp.backward()
    assert math.isfinite(lp.item())
    assert torch.isfinite(loc_.grad).all() and torch.isfinite(kappa.grad)
    assert (loc_.grad == 0).all()


# ---------------------------------------------------------------------------------------------------------
# normalisation and the law of w = mu.x


def our_log_density_of_angle(p: PowerSpherical, loc: torch.Tensor, theta) -> np.ndarray:
    """log density of the angle theta = arccos(mu.x) implied by p.log_prob:
    |S^{d-2}| sin(theta)^(d-2) p(cos(theta) mu + sin(theta) v) (no cancellation near 0 or pi)."""
    d = loc.shape[-1]
    theta = np.atleast_1d(np.asarray(theta, dtype=np.float64))
    v = point_at(loc, 0.0)
    th = torch.from_numpy(theta)[:, None]
    x = torch.cos(th) * loc + torch.sin(th) * v
    return p.log_prob(x).numpy() + mp_log_area(d - 1) + (d - 2) * np.log(np.sin(theta))


def beta_log_density_of_angle(d: int, kappa: float, theta) -> np.ndarray:
    """The same from the Beta law of t = (1 + cos theta)/2 = cos^2(theta/2): f(t) sin(theta) / 2, with
    log B(alpha, beta) from mpmath (scipy's betaln is off by 5e-11 at alpha = 1e5)."""
    a, b = beta_params(d, kappa)
    theta = np.atleast_1d(np.asarray(theta, dtype=np.float64))
    c, s = np.cos(theta / 2), np.sin(theta / 2)
    # log t and log(1 - t), each from the smaller of cos^2 and sin^2 (no cancellation at either end)
    with np.errstate(divide="ignore"):  # the branch not taken may be log 0
        log_t = np.where(theta < math.pi / 2, np.log1p(-(s**2)), 2 * np.log(c))
        log_1mt = np.where(theta > math.pi / 2, np.log1p(-(c**2)), 2 * np.log(s))
    return (a - 1) * log_t + (b - 1) * log_1mt - mp_log_beta_fn(a, b) + np.log(np.sin(theta)) - math.log(2)


@functools.cache
def mp_log_beta_fn(a: float, b: float) -> float:
    with mpmath.workdps(MP_DPS):
        return float(mpmath.log(mpmath.beta(a, b)))


def angle_quantiles(d: int, kappa: float, qs) -> np.ndarray:
    """Quantiles of theta from the Beta law (theta decreases in t): theta = 2 arcsin(sqrt(1 - t))."""
    a, b = beta_params(d, kappa)
    one_minus_t = scipy.stats.beta(b, a).ppf(np.asarray(qs))  # 1 - t ~ Beta(beta, alpha), no cancellation
    return 2 * np.arcsin(np.sqrt(one_minus_t))


@pytest.mark.parametrize("d,kappa", [(2, 0.0), (2, 5.0), (3, 1.0), (3, 1e5), (10, 30.0), (128, 1e3)])
def test_density_of_w_is_beta(d, kappa):
    """Pointwise: the law of the angle to loc from log_prob is that of scipy's Beta(alpha, beta) law of
    (1 + w)/2, from the far tail near the mode to the far tail near the antipode."""
    loc = random_loc(d)
    p = PowerSpherical(loc, kappa)
    theta = angle_quantiles(d, kappa, [1e-10, 0.01, 0.3, 0.5, 0.7, 0.99, 1 - 1e-10])
    ours, expected = our_log_density_of_angle(p, loc, theta), beta_log_density_of_angle(d, kappa, theta)
    np.testing.assert_allclose(ours, expected, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("d,kappa", [(2, 0.5), (3, 0.0), (3, 7.0), (3, 1e5), (16, 2.0), (4096, 1e5)])
def test_normalisation_by_quadrature(d, kappa):
    """The density of the angle to loc implied by log_prob integrates to 1 over [0, pi] (adaptive
    quadrature, split where the mass is)."""
    loc = random_loc(d)
    p = PowerSpherical(loc, kappa)
    qs = [1e-12, 1e-6, 0.01, 0.5, 0.99, 1 - 1e-6, 1 - 1e-12]
    edges = [0.0, *sorted(angle_quantiles(d, kappa, qs)), math.pi]

    def f(theta):
        return math.exp(our_log_density_of_angle(p, loc, theta)[0]) if 0 < theta < math.pi else 0.0

    total = sum(
        scipy.integrate.quad(f, lo, hi, epsabs=0, epsrel=1e-11, limit=200)[0]
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        if hi > lo
    )
    assert total == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_normalisation_by_monte_carlo(d):
    """E_U[p(u) / u(u)] = 1 under the uniform (4.5 standard errors)."""
    torch.manual_seed(0)
    n = 200_000
    u = unit(torch.randn(n, d, dtype=F64))
    ratio = torch.exp(PowerSpherical(random_loc(d), 3.0).log_prob(u) + mp_log_area(d))
    assert abs(ratio.mean().item() - 1) < 4.5 * ratio.std().item() / math.sqrt(n)


SAMPLER_CASES = [(2, 0.0), (2, 3.0), (3, 0.7), (3, 40.0), (5, 1e5), (16, 10.0), (512, 300.0), (4096, 1e5)]


@pytest.mark.parametrize("d,kappa", SAMPLER_CASES)
def test_sampler_law_of_w(d, kappa):
    """(1 + mu.x) / 2 of samples is Beta(alpha, beta) (scipy, KS) and matches the density of w implied by
    log_prob (Pyro's gof); samples are unit vectors."""
    pyro.set_rng_seed(d + int(kappa))
    loc = random_loc(d)
    p = PowerSpherical(loc, kappa)
    n = 4000 if d < 512 else 2000
    x = p.sample((n,))
    assert x.shape == (n, d)
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(n, dtype=F64), rtol=0, atol=1e-14)
    w = x @ loc
    a, b = beta_params(d, kappa)
    assert scipy.stats.kstest(((1 + w) / 2).numpy(), scipy.stats.beta(a, b).cdf).pvalue > 1e-3
    # Pyro's gof on a subset, with the density of w from our log_prob
    ws = w[:1000]
    probs = torch.exp(
        p.log_prob(x[:1000]) + mp_log_area(d - 1) + 0.5 * (d - 3) * torch.log((1 - ws) * (1 + ws))
    )
    assert auto_goodness_of_fit(ws, probs) > 1e-3


@pytest.mark.parametrize("d,kappa", [(3, 5.0), (4, 50.0), (10, 1.0)])
def test_sampler_tangent_direction_is_uniform(d, kappa):
    """The direction of x - w mu is uniform on the sphere of mu's orthogonal complement: its coordinate
    along a unit e orthogonal to mu has the law of a coordinate on S^{d-2}: (1 + c)/2 ~ Beta((d-2)/2,
    (d-2)/2). A reflection that did not map e1 to loc would fail this."""
    pyro.set_rng_seed(7)
    loc = random_loc(d, seed=3)
    x = PowerSpherical(loc, kappa).sample((4000,))
    w = x @ loc
    tangent = unit(x - w[:, None] * loc)
    e = point_at(loc, 0.0, seed=5)
    c = tangent @ e
    law = scipy.stats.beta((d - 2) / 2, (d - 2) / 2)
    assert scipy.stats.kstest(((1 + c) / 2).numpy(), law.cdf).pvalue > 1e-3


@pytest.mark.parametrize("d,kappa", [(2, 2.0), (3, 0.5), (3, 30.0), (10, 5.0)])
def test_mean_and_variance(d, kappa):
    """Sample mean and per-coordinate variance against mean and variance (4.5 standard errors)."""
    pyro.set_rng_seed(11)
    n = 40_000
    p = PowerSpherical(random_loc(d, seed=2), kappa)
    x = p.sample((n,))
    a, b = beta_params(d, kappa)
    e_w = (a - b) / (a + b)
    torch.testing.assert_close(p.mean, e_w * p.loc)
    assert (x.mean(0) - p.mean).abs().max() < 4.5 * (p.variance.sqrt().max() / math.sqrt(n))
    # variance: the standard error of a sample variance is sqrt(mu4 - sigma^4) / sqrt(n), mu4 <= E|x - m|^4
    centred = x - p.mean
    se = (centred.pow(4).mean(0) - p.variance**2).clamp(min=0).sqrt() / math.sqrt(n)
    assert ((centred.pow(2).mean(0) - p.variance).abs() < 4.5 * se + 1e-12).all()
    # and the trace of the covariance is 1 - |E x|^2 exactly
    assert p.variance.sum().item() == pytest.approx(1 - e_w**2, rel=1e-13)
    torch.testing.assert_close(p.mode, p.loc, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------
# entropy and KL by Monte Carlo; the KL registration


@pytest.mark.parametrize("d,kappa", [(2, 1.0), (3, 10.0), (16, 100.0), (256, 1e4)])
def test_entropy_and_kl_by_monte_carlo(d, kappa):
    pyro.set_rng_seed(5)
    n = 20_000
    p = PowerSpherical(random_loc(d), kappa)
    lp = p.log_prob(p.sample((n,)))
    se = lp.std().item() / math.sqrt(n)
    assert abs(-lp.mean().item() - p.entropy().item()) < 4.5 * se
    kl = kl_divergence(p, HypersphericalUniform(d, dtype=F64))
    assert abs((lp.mean() + mp_log_area(d)).item() - kl.item()) < 4.5 * se
    assert kl.item() == pytest.approx(mp_log_area(d) - float(mp_entropy(d, kappa)), rel=1e-13, abs=1e-13)


def test_kl_shapes_and_dimension_check():
    loc = unit(torch.randn(4, 1, 5, dtype=F64))
    p = PowerSpherical(loc, torch.tensor([0.0, 1.0, 1e3], dtype=F64))
    kl = kl_divergence(p, HypersphericalUniform(5, dtype=F64))
    assert kl.shape == (4, 3) and kl.dtype == F64
    assert (kl[:, 0] == 0).all() and (kl[:, 1:] > 0).all()
    assert kl_divergence(p, HypersphericalUniform(5, batch_shape=(2, 1, 1), dtype=F64)).shape == (2, 4, 3)
    with pytest.raises(ValueError, match="dimension"):
        kl_divergence(p, HypersphericalUniform(6))


def test_trace_mean_field_elbo_uses_the_exact_kl():
    """With no likelihood the mean-field ELBO loss is the registered KL summed over the plate: exact, so
    two evaluations agree (no Monte Carlo fallback, which would happen if expand lost the class)."""
    d, n = 4, 6
    loc = unit(torch.randn(n, d, dtype=F64))
    kappa = torch.linspace(0.0, 50.0, n, dtype=F64)

    def model():
        with pyro.plate("data", n):
            pyro.sample("z", HypersphericalUniform(d, dtype=F64))

    def guide():
        with pyro.plate("data", n):
            pyro.sample("z", PowerSpherical(loc, kappa))

    elbo = pyro.infer.TraceMeanField_ELBO()
    expected = kl_divergence(PowerSpherical(loc, kappa), HypersphericalUniform(d, dtype=F64)).sum().item()
    assert elbo.loss(model, guide) == pytest.approx(expected, rel=1e-12)
    assert elbo.loss(model, guide) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------------------------------------
# gradients


def test_batch_straddling_the_stirling_switch_equals_each_member():
    # On the CPU the normaliser evaluates only the branch every concentration of the batch is on; a batch on
    # both sides of alpha = 20 takes both and merges them. Each member alone (one branch, checked against
    # mpmath above) must give the same values and gradients.
    d = 3
    loc = random_loc(d, seed=3)
    kappas = torch.tensor([0.0, 0.5, 18.99, 19.0, 100.0], dtype=F64, requires_grad=True)
    x = unit(torch.randn(5, d, dtype=F64, generator=torch.Generator().manual_seed(0)))
    uniform = HypersphericalUniform(d, dtype=F64)

    def terms(p, value):
        return p.log_prob(value), p.entropy(), kl_divergence(p, uniform)

    batched = terms(PowerSpherical(loc.expand(5, d), kappas), x)
    grads = torch.autograd.grad(sum(t.sum() for t in batched), kappas)[0]
    for i in range(5):
        kappa = kappas[i].detach().clone().requires_grad_()
        alone = terms(PowerSpherical(loc, kappa), x[i])
        for b, a in zip(batched, alone, strict=True):
            torch.testing.assert_close(b[i], a, rtol=1e-15, atol=1e-15)
        (grad,) = torch.autograd.grad(sum(alone), kappa)
        torch.testing.assert_close(grads[i], grad, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("d,kappa", [(2, 0.0), (3, 0.7), (3, 25.0), (6, 3.0), (6, 1e3), (20, 0.0), (20, 5.0)])
def test_gradcheck_log_prob(d, kappa):
    torch.manual_seed(d)
    loc = random_loc(d, seed=d).requires_grad_()
    conc = torch.tensor(kappa, dtype=F64, requires_grad=True)
    # points on both sides of w = 0 and away from the antipode
    x = torch.stack([point_at(loc.detach(), w, seed=i) for i, w in enumerate((0.9, 0.3, -0.4, -0.95))])
    x.requires_grad_()

    def f(loc, conc, x):
        return PowerSpherical(loc, conc, validate_args=False).log_prob(x)

    assert torch.autograd.gradcheck(f, (loc, conc, x))
    if d <= 16:
        assert torch.autograd.gradgradcheck(f, (loc, conc, x))

    def h(conc):
        p = PowerSpherical(loc.detach(), conc, validate_args=False)
        return p.entropy(), kl_divergence(p, HypersphericalUniform(d, dtype=F64))

    if kappa > 0:
        assert torch.autograd.gradcheck(h, (conc,))


def test_log_prob_tangent_gradient():
    """Along the sphere the gradient w.r.t. value is that of kappa log(1 + mu.x): kappa (mu - w x)/(1 + w)."""
    d, kappa = 5, 7.0
    loc = random_loc(d)
    for w in (0.8, 0.01, -0.01, -0.9):
        x = point_at(loc, w).requires_grad_()
        PowerSpherical(loc, kappa).log_prob(x).backward()
        tangent = x.grad - (x.grad @ x.detach()) * x.detach()
        expected = kappa * (loc - w * x.detach()) / (1 + w)
        torch.testing.assert_close(tangent, expected, rtol=1e-12, atol=1e-12)


def quad_expectation(f, d: int, kappa: float) -> float:
    """E[f(w)] with (1 + w)/2 ~ Beta(alpha, beta), by adaptive quadrature over the angle theta = arccos w
    (its density is smooth at both ends, unlike that of w for d = 2)."""
    edges = [0.0, *sorted(angle_quantiles(d, kappa, [1e-14, 0.01, 0.5, 0.99, 1 - 1e-14])), math.pi]

    def g(theta):
        return f(math.cos(theta)) * math.exp(beta_log_density_of_angle(d, kappa, theta)[0])

    return sum(
        scipy.integrate.quad(g, lo, hi, epsabs=0, epsrel=1e-12, limit=200)[0]
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        if hi > lo
    )


@pytest.mark.parametrize("d,kappa", [(2, 0.5), (3, 2.0), (10, 40.0), (64, 1e4)])
def test_concentration_gradient_against_finite_differences(d, kappa):
    """d/dkappa E[f(w)]: the pathwise estimate with common random numbers (per-sample kappa, so each sample's
    gradient is separate) against central differences of the expectation computed by quadrature."""
    pyro.set_rng_seed(3)
    n = 20_000
    loc = random_loc(d)
    conc = torch.full((n,), kappa, dtype=F64, requires_grad=True)
    x = PowerSpherical(loc, conc).rsample()
    w = x @ loc
    f = lambda w: w + w**3  # noqa: E731
    f(w).sum().backward()
    grads = conc.grad
    h = 1e-4 * max(kappa, 1.0)
    fd = (quad_expectation(f, d, kappa + h) - quad_expectation(f, d, kappa - h)) / (2 * h)
    se = grads.std().item() / math.sqrt(n)
    assert abs(grads.mean().item() - fd) < 4.5 * se + 1e-7 * abs(fd)
    assert abs(fd) > 10 * se  # the test has power


@pytest.mark.parametrize("d,kappa", [(3, 4.0), (8, 20.0)])
def test_loc_gradient_against_the_mean(d, kappa):
    """d/dtheta E[a.x] with loc = theta/|theta|: pathwise estimate vs the gradient of a.mean (exact)."""
    pyro.set_rng_seed(4)
    n = 20_000
    theta = torch.randn(d, dtype=F64, generator=torch.Generator().manual_seed(9)).requires_grad_()
    a = torch.randn(d, dtype=F64, generator=torch.Generator().manual_seed(10))
    thetas = theta.detach().expand(n, d).clone().requires_grad_()  # one copy per sample: per-sample grads
    (PowerSpherical(unit(thetas), kappa).rsample() @ a).sum().backward()
    g_mc = thetas.grad.mean(0)
    (g_exact,) = torch.autograd.grad(PowerSpherical(unit(theta), kappa).mean @ a, theta)
    se = thetas.grad.std(0) / math.sqrt(n)
    assert ((g_mc - g_exact).abs() < 4.5 * se + 1e-10).all(), (g_mc, g_exact, se)


@pytest.mark.parametrize("loc", [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.6, -0.8]])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_rsample_gradients_finite(loc, dtype):
    """Finite gradients w.r.t. loc and concentration, also at loc = +-e1 (where the reflection e1 -> loc
    of a naive Householder sampler is singular) and at kappa = 0 and 1e5."""
    loc = unit(torch.tensor(loc, dtype=dtype)).requires_grad_()
    conc = torch.tensor([0.0, 1.0, 1e5], dtype=dtype, requires_grad=True)
    x = PowerSpherical(loc, conc).rsample((500,))
    (x * torch.arange(1.0, 4.0, dtype=dtype)).sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(conc.grad).all()


# ---------------------------------------------------------------------------------------------------------
# the Pyro contract


def test_shapes_and_attributes():
    loc = unit(torch.randn(2, 1, 5))
    conc = torch.tensor([0.5, 1.0, 2.0])
    p = PowerSpherical(loc, conc)
    assert p.batch_shape == (2, 3) and p.event_shape == (5,)
    assert p.has_rsample and p.support is constraints.sphere
    assert p.loc.shape == (2, 3, 5) and p.concentration.shape == (2, 3)
    assert p.sample().shape == (2, 3, 5)
    assert p.rsample((4,)).shape == (4, 2, 3, 5)
    assert p.log_prob(p.sample((4,))).shape == (4, 2, 3)
    assert p.log_prob(unit(torch.randn(5))).shape == (2, 3)
    assert p.entropy().shape == (2, 3)
    assert p.mean.shape == p.variance.shape == p.mode.shape == (2, 3, 5)
    assert PowerSpherical.infer_shapes(loc=(2, 1, 5), concentration=(3,)) == ((2, 3), (5,))
    assert PowerSpherical.infer_shapes(loc=(5,)) == ((), (5,))
    # Python floats and lists are accepted; dtype follows loc, or the promotion of both tensors
    q = PowerSpherical([0.0, 1.0], 2)
    assert q.loc.dtype == torch.get_default_dtype() and q.concentration.dtype == q.loc.dtype
    assert PowerSpherical(loc, conc.double()).sample().dtype == F64


def test_expand_keeps_class():
    p = PowerSpherical(random_loc(4), torch.tensor(3.0, dtype=F64), validate_args=True)
    big = p.expand((3, 2))
    assert type(big) is PowerSpherical
    assert big.batch_shape == (3, 2) and big.event_shape == (4,)
    assert big.loc.shape == (3, 2, 4) and big.concentration.shape == (3, 2)
    torch.testing.assert_close(big.entropy(), p.entropy().expand(3, 2))
    assert big.rsample().shape == (3, 2, 4)
    with pytest.raises(ValueError, match="value"):
        big.log_prob(torch.ones(4, dtype=F64))  # validation survives expand
    with pytest.raises(RuntimeError):
        PowerSpherical(unit(torch.randn(3, 4)), 1.0).expand((2,))  # what torch's expand refuses


def test_inside_pyro_plate():
    d, n = 3, 5
    loc = unit(torch.randn(d))

    def model():
        with pyro.plate("data", n):
            return pyro.sample("z", PowerSpherical(loc, 4.0))

    tr = poutine.trace(model).get_trace()
    site = tr.nodes["z"]
    assert type(site["fn"]) is PowerSpherical
    assert site["fn"].batch_shape == (n,) and site["value"].shape == (n, d)
    tr.compute_log_prob()
    torch.testing.assert_close(site["log_prob"], PowerSpherical(loc, 4.0).log_prob(site["value"]))


def test_svi_recovers_direction_and_concentration():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    true_loc = unit(torch.tensor([1.0, -2.0, 0.5]))
    data = PowerSpherical(true_loc, 20.0).sample((1000,))

    def model(data):
        loc = pyro.param("loc", torch.tensor([0.0, 0.0, 1.0]), constraint=constraints.sphere)
        kappa = pyro.param("kappa", torch.tensor(1.0), constraint=constraints.positive)
        with pyro.plate("data", len(data)):
            pyro.sample("x", PowerSpherical(loc, kappa), obs=data)

    svi = pyro.infer.SVI(model, lambda data: None, pyro.optim.Adam({"lr": 0.1}), pyro.infer.Trace_ELBO())
    for _ in range(120):
        svi.step(data)
    loc, kappa = pyro.param("loc").detach(), pyro.param("kappa").item()
    assert (loc @ true_loc).item() > math.cos(0.05)
    assert kappa == pytest.approx(20.0, rel=0.1)


def test_validation_messages():
    loc = torch.tensor([0.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="loc must be unit"):
        PowerSpherical(torch.tensor([0.0, 0.0, 1.1]), 1.0, validate_args=True)
    with pytest.raises(ValueError, match="loc must be finite"):
        PowerSpherical(torch.tensor([0.0, float("nan"), 1.0]), 1.0, validate_args=True)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="concentration must be >= 0"):
            PowerSpherical(loc, bad, validate_args=True)
    with pytest.raises(ValueError, match="d >= 2"):
        PowerSpherical(torch.tensor([1.0]), 1.0)
    with pytest.raises(ValueError, match="scalar"):
        PowerSpherical(torch.tensor(1.0), 1.0)
    with pytest.raises(ValueError, match="concentration.shape"):
        PowerSpherical(unit(torch.randn(4, 3)), torch.ones(5))
    p = PowerSpherical(loc, 1.0, validate_args=True)
    with pytest.raises(ValueError, match="event shape"):
        p.log_prob(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="value"):
        p.log_prob(torch.tensor([1.0, 1.0, 0.0]))  # off the sphere
    # without validation, no error
    PowerSpherical(torch.tensor([0.0, 0.0, 1.1]), -1.0, validate_args=False)
    off = PowerSpherical(loc, 1.0, validate_args=False).log_prob(torch.tensor([0.0, 1.0, 1.0]))
    assert torch.isfinite(off)


@pytest.mark.parametrize("d,kappa", [(3, 0.0), (3, 1e5), (128, 50.0), (4096, 1e5)])
def test_float32(d, kappa):
    torch.manual_seed(0)
    p = PowerSpherical(random_loc(d, torch.float32), kappa)
    x = p.rsample((1000,))
    assert x.dtype == torch.float32
    assert constraints.sphere.check(x).all()
    lp = p.log_prob(x)
    assert lp.dtype == torch.float32 and torch.isfinite(lp).all()
    torch.testing.assert_close(lp, p.expand(()).log_prob(x))
    lp64 = PowerSpherical(unit(p.loc.double()), kappa).log_prob(unit(x.double()))
    assert ((lp.double() - lp64).abs() / lp64.abs().clamp(min=1)).max() < 2e-5
    assert p.entropy().dtype == p.mean.dtype == p.variance.dtype == torch.float32


def test_jit_trace():
    """Under torch.jit.trace the event size is a tensor: the shape checks must not break, values equal."""
    loc = unit(torch.randn(4, 3))
    kappa = torch.rand(4) * 10
    x = PowerSpherical(loc, kappa).sample((2,))

    def lp(loc, kappa, x):
        return PowerSpherical(loc, kappa, validate_args=False).log_prob(x)

    def rs(loc, kappa):
        return PowerSpherical(loc, kappa, validate_args=False).rsample((2,))

    with pytest.warns(Warning):  # torch.jit.trace's deprecation warning
        traced = torch.jit.trace(lp, (loc, kappa, x))
        traced_rs = torch.jit.trace(rs, (loc, kappa), check_trace=False)
    torch.testing.assert_close(traced(loc, kappa, x), lp(loc, kappa, x))
    torch.manual_seed(1)
    a = traced_rs(loc, kappa)
    torch.manual_seed(1)
    torch.testing.assert_close(a, rs(loc, kappa))


@pytest.mark.slow
def test_torch_compile_fullgraph():
    loc = unit(torch.randn(4, 3))
    kappa = torch.rand(4) * 10
    x = PowerSpherical(loc, kappa).sample((2,))

    def lp(loc, kappa, x):
        return PowerSpherical(loc, kappa, validate_args=False).log_prob(x)

    def rs(loc, kappa):
        return PowerSpherical(loc, kappa, validate_args=False).rsample((2,))

    torch.testing.assert_close(torch.compile(lp, fullgraph=True)(loc, kappa, x), lp(loc, kappa, x))
    s = torch.compile(rs, fullgraph=True)(loc, kappa)
    assert s.shape == (2, 4, 3) and constraints.sphere.check(s).all()


# ---------------------------------------------------------------------------------------------------------
# the power-spherical package (0.8.1) as an extra oracle, where installed


@pytest.mark.parametrize("d,kappa", [(3, 0.5), (3, 10.0), (16, 100.0), (300, 5.0)])
def test_against_power_spherical_package(d, kappa):
    ps = pytest.importorskip("power_spherical")
    torch.manual_seed(0)
    loc = random_loc(d)
    ours = PowerSpherical(loc, kappa)
    theirs = ps.PowerSpherical(loc, torch.tensor(kappa, dtype=F64))
    x = ours.sample((5,))
    torch.testing.assert_close(ours.log_prob(x), theirs.log_prob(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.entropy(), theirs.entropy(), rtol=1e-12, atol=1e-12)
    # (their uniform's entropy is rounded through float32 even in float64, so their KL is off by ~3e-8:
    # compare ours with their entropy and the exact log area instead)
    kl = kl_divergence(ours, HypersphericalUniform(d, dtype=F64)).item()
    assert kl == pytest.approx(mp_log_area(d) - theirs.entropy().item(), rel=1e-12, abs=1e-12)
