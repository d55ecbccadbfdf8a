"""Tests of distributions.PolarStudentT (docs/maths.md, Polar Student-t) against independent scipy and Monte
Carlo oracles."""

import numpy as np
import pyro
import pyro.optim
import pytest
import scipy.integrate
import scipy.stats
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from distributions.polar_student_t import PolarStudentT

# ---------------------------------------------------------------------------------------------------
# An independent reference, line by line from the definition, in numpy/scipy:
# an explicit orthonormal basis of m-perp, the angle from arccos, scipy's multivariate t.


def tangent_basis(m: np.ndarray) -> np.ndarray:
    """(d, d-1) orthonormal basis of the plane orthogonal to the unit vector m."""
    d = len(m)
    q, _ = np.linalg.qr(np.column_stack([m, np.eye(d)]))
    basis = q[:, 1:d]
    assert np.allclose(basis.T @ m, 0.0, atol=1e-12)
    return basis


def log_map(m: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Geodesic Log_m(u) on the sphere: the arc length times the unit tangent towards u."""
    cos = np.clip(m @ u, -1.0, 1.0)
    w = u - cos * m
    return np.arccos(cos) * w / np.linalg.norm(w)


def tangent_shape(m: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Basis B of m-perp and the t's shape matrix in B-coordinates: inverse of B^T diag(1/s) B."""
    basis = tangent_basis(m)
    return basis, np.linalg.inv(basis.T @ np.diag(1.0 / s) @ basis)


def ref_directional(u, m, df, s):
    basis, shape = tangent_shape(m, s)
    coords = basis.T @ log_map(m, u)
    if len(m) == 2:
        return scipy.stats.t.logpdf(coords[0], df, scale=np.sqrt(shape[0, 0]))
    return scipy.stats.multivariate_t(loc=np.zeros(len(m) - 1), shape=shape, df=df).logpdf(coords)


def ref_euclidean(u, m, df, s):
    return scipy.stats.multivariate_t(loc=m, shape=np.diag(s), df=df).logpdf(u)


def ref_log_prob(y, m, df, s, rloc, rscale, rdf, directional="geodesic"):
    r = np.linalg.norm(y)
    u = y / r
    ref_dir = ref_directional if directional == "geodesic" else ref_euclidean
    return (
        ref_dir(u, m, df, s)
        + scipy.stats.t.logpdf(np.log(r), rdf, loc=rloc, scale=rscale)
        - len(y) * np.log(r)
    )


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def random_params(d, rng, dtype=torch.float64):
    m = unit(torch.tensor(rng.standard_normal(d), dtype=dtype))
    s = torch.tensor(rng.uniform(0.05, 2.0, d), dtype=dtype)
    return m, s


# ---------------------------------------------------------------------------------------------------
# log_prob against the reference


@pytest.mark.parametrize("d", [2, 3, 8])
@pytest.mark.parametrize("df", [0.7, 3.0, 30.0])
def test_log_prob_against_scipy(d, df):
    rng = np.random.default_rng(d * 100 + int(10 * df))
    m, s = random_params(d, rng)
    rloc, rscale, rdf = 0.3, 0.7, 4.0
    dist = PolarStudentT(m, df=df, scale=s, radial_loc=rloc, radial_scale=rscale, radial_df=rdf)
    # points near m, generic, and far (near the antipode), with various norms
    y = torch.tensor(rng.standard_normal((12, d)), dtype=torch.float64)
    y[:4] = m + 0.1 * y[:4]
    y[-2:] = -m + 0.2 * y[-2:]
    y = y * torch.tensor(rng.uniform(0.05, 20.0, (12, 1)))
    lp = dist.log_prob(y)
    assert lp.shape == (12,)
    expected = [ref_log_prob(yi.numpy(), m.numpy(), df, s.numpy(), rloc, rscale, rdf) for yi in y]
    np.testing.assert_allclose(lp.numpy(), expected, rtol=1e-10, atol=1e-10)
    # the two factors separately
    r = y.norm(dim=-1)
    u = y / r.unsqueeze(-1)
    np.testing.assert_allclose(
        dist.directional_log_prob(u).numpy(),
        [ref_directional(ui.numpy(), m.numpy(), df, s.numpy()) for ui in u],
        rtol=1e-10,
        atol=1e-10,
    )
    np.testing.assert_allclose(
        dist.radial_log_prob(r.log()).numpy(),
        scipy.stats.t.logpdf(np.log(r.numpy()), rdf, loc=rloc, scale=rscale),
        rtol=1e-12,
    )
    # the decomposition log p(y) = log p_dir(u) + log p_rad(log r) - d log r
    torch.testing.assert_close(
        lp, dist.directional_log_prob(u) + dist.radial_log_prob(r.log()) - d * r.log(), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("d", [2, 3, 8])
def test_euclidean_ablation_against_scipy(d):
    rng = np.random.default_rng(d)
    m, s = random_params(d, rng)
    dist = PolarStudentT(m, df=4.0, scale=s, directional="euclidean")
    y = torch.tensor(rng.standard_normal((6, d)), dtype=torch.float64) * 3
    expected = [ref_log_prob(yi.numpy(), m.numpy(), 4.0, s.numpy(), 0.0, 1.0, 4.0, "euclidean") for yi in y]
    np.testing.assert_allclose(dist.log_prob(y).numpy(), expected, rtol=1e-10)


def test_defaults():
    """Defaults: df = 5, isotropic unit scale, radial t(5) on log r with location 0 and scale 1."""
    rng = np.random.default_rng(0)
    m = unit(torch.tensor(rng.standard_normal(4)))
    y = torch.tensor(rng.standard_normal((5, 4)))
    expected = [ref_log_prob(yi.numpy(), m.numpy(), 5.0, np.ones(4), 0.0, 1.0, 5.0) for yi in y]
    np.testing.assert_allclose(PolarStudentT(m).log_prob(y).numpy(), expected, rtol=1e-10)


def test_batched_parameters_against_scipy():
    rng = np.random.default_rng(5)
    d = 3
    m = unit(torch.tensor(rng.standard_normal((4, 1, d))))
    df = torch.tensor([1.5, 6.0], dtype=torch.float64)
    s = torch.tensor(rng.uniform(0.1, 1.0, (4, 2, d)))
    rloc = torch.tensor(rng.standard_normal((4, 2)))
    dist = PolarStudentT(m, df=df, scale=s, radial_loc=rloc, radial_scale=0.5)
    assert dist.batch_shape == (4, 2)
    y = torch.tensor(rng.standard_normal((3, 4, 2, d)))
    lp = dist.log_prob(y)
    assert lp.shape == (3, 4, 2)
    for k in range(3):
        for i in range(4):
            for j in range(2):
                expected = ref_log_prob(
                    y[k, i, j].numpy(),
                    m[i, 0].numpy(),
                    df[j].item(),
                    s[i, j].numpy(),
                    rloc[i, j].item(),
                    0.5,
                    df[j].item(),
                )
                assert lp[k, i, j].item() == pytest.approx(expected, rel=1e-10)


def test_per_batch_isotropic_scale():
    m = unit(torch.randn(4, 3, dtype=torch.float64))
    s = torch.tensor([[0.1], [0.2], [0.5], [2.0]], dtype=torch.float64)
    dist = PolarStudentT(m, scale=s)
    assert dist.scale.shape == (4, 3)
    y = torch.randn(4, 3, dtype=torch.float64)
    for i in range(4):
        torch.testing.assert_close(
            dist.log_prob(y)[i], PolarStudentT(m[i], scale=s[i, 0].item()).log_prob(y[i])
        )


def test_float32_matches_float64():
    rng = np.random.default_rng(1)
    m, s = random_params(16, rng)
    y = torch.tensor(rng.standard_normal((50, 16)))
    y[:5] = m * 2 + 1e-3 * y[:5]  # near u = m
    lp64 = PolarStudentT(m, df=3.0, scale=s).log_prob(y)
    lp32 = PolarStudentT(m.float(), df=3.0, scale=s.float()).log_prob(y.float())
    assert lp32.dtype == torch.float32
    torch.testing.assert_close(lp32.double(), lp64, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------------------------------
# mass of the directional factor on the sphere


@pytest.mark.parametrize("df", [1.0, 5.0])
@pytest.mark.parametrize("s", [(0.02, 0.05), (0.3, 1.5), (2.0, 5.0)])
def test_directional_mass_d2_by_quadrature(df, s):
    """On the circle the mass is P(|T| < pi), T the 1-D t of the restricted scale: <= 1, ~1 if concentrated"""
    m = torch.tensor([0.6, 0.8], dtype=torch.float64)
    perp = torch.tensor([-0.8, 0.6], dtype=torch.float64)
    dist = PolarStudentT(m, df=df, scale=torch.tensor(s, dtype=torch.float64))

    def density(theta):
        u = np.cos(theta) * m + np.sin(theta) * perp
        return dist.directional_log_prob(u).exp().item()

    mass, err = scipy.integrate.quad(density, -np.pi, np.pi, points=[0.0], limit=200)
    sigma = (0.6**2 / s[1] + 0.8**2 / s[0]) ** -0.5  # 1-D scale of the t restricted to m-perp
    expected = 2 * scipy.stats.t.cdf(np.pi / sigma, df) - 1
    assert mass <= 1.0
    assert mass == pytest.approx(expected, abs=1e-8)
    if max(s) <= 0.05:
        assert mass > 0.95


def _uniform_sphere(n, d, seed):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    "df, s, concentrated",
    [(5.0, (0.02, 0.03, 0.05), True), (2.0, (0.5, 1.0, 0.2), False), (0.8, (3.0, 3.0, 3.0), False)],
)
def test_directional_mass_d3_by_monte_carlo(df, s, concentrated):
    """Mass = |S^2| E_U[p_dir(u)], u uniform; compared with the exact E_t[sin|v|/|v| 1{|v| < pi}]."""
    n = 400_000
    m = unit(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    s_np = np.array(s)
    dist = PolarStudentT(m, df=df, scale=torch.tensor(s_np))
    u = torch.tensor(_uniform_sphere(n, 3, seed=7))
    values = 4 * np.pi * dist.directional_log_prob(u).exp().numpy()
    mass, se = values.mean(), values.std() / np.sqrt(n)
    # the mass by a second route: tangent t draws (scipy) and the Jacobian of the exponential map
    basis, shape = tangent_shape(m.numpy(), s_np)
    w = scipy.stats.multivariate_t(loc=np.zeros(2), shape=shape, df=df).rvs(n, random_state=8)
    a = np.linalg.norm(w, axis=1)
    jac = np.where(a < np.pi, np.sinc(a / np.pi), 0.0)  # np.sinc(x) = sin(pi x) / (pi x)
    exact, se2 = jac.mean(), jac.std() / np.sqrt(n)
    assert abs(mass - exact) < 5 * np.hypot(se, se2)
    assert mass < 1.0 + 5 * se
    assert exact < 1.0
    if concentrated:
        assert mass > 0.95
    else:
        assert exact < 0.9  # a genuinely sub-normalized case


def test_euclidean_ablation_mass_exceeds_one():
    """The v1 ablation (d-dim t at u - m) is not a density on the sphere: mass > 3 in d = 3."""
    n = 400_000
    m = unit(torch.tensor([0.2, 0.3, -1.0], dtype=torch.float64))
    s = np.full(3, 0.01)
    dist = PolarStudentT(m, df=5.0, scale=torch.tensor(s), directional="euclidean")
    u = _uniform_sphere(n, 3, seed=9)
    ours = 4 * np.pi * dist.directional_log_prob(torch.tensor(u)).exp().numpy()
    theirs = 4 * np.pi * scipy.stats.multivariate_t(loc=m.numpy(), shape=np.diag(s), df=5.0).pdf(u)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    mass, se = ours.mean(), ours.std() / np.sqrt(n)
    assert mass - 5 * se > 3.0
    # while the geodesic factor with the same parameters stays below 1
    geo = (
        4
        * np.pi
        * PolarStudentT(m, df=5.0, scale=torch.tensor(s)).directional_log_prob(torch.tensor(u)).exp()
    )
    assert geo.mean().item() < 1.0 + 5 * geo.std().item() / np.sqrt(n)


# ---------------------------------------------------------------------------------------------------
# gradients and numerics


def _log_prob_fn(directional="geodesic"):
    def fn(y, m, s, df, rloc, rscale):
        dist = PolarStudentT(
            m,
            df=df,
            scale=s,
            radial_loc=rloc,
            radial_scale=rscale,
            directional=directional,
            validate_args=False,
        )
        return dist.log_prob(y)

    return fn


@pytest.mark.parametrize("d", [2, 3, 5])
@pytest.mark.parametrize("where", ["generic", "at_m", "near_m"])
def test_gradcheck(d, where):
    rng = np.random.default_rng(d)
    m, s = random_params(d, rng)
    y = torch.tensor(rng.standard_normal((3, d)))
    if where == "at_m":
        y = m * torch.tensor([[0.5], [1.0], [3.0]], dtype=torch.float64)
    elif where == "near_m":
        y = m * 2 + 1e-4 * y
    args = [
        y,
        m,
        s,
        torch.tensor(2.5, dtype=torch.float64),
        torch.tensor(0.2, dtype=torch.float64),
        torch.tensor(0.8, dtype=torch.float64),
    ]
    args = [a.clone().requires_grad_() for a in args]
    assert torch.autograd.gradcheck(_log_prob_fn(), args)
    if where == "generic":
        assert torch.autograd.gradcheck(_log_prob_fn("euclidean"), args)


@pytest.mark.parametrize("d", [2, 3, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_finite_at_m_and_antipode(d, dtype):
    m = unit(torch.randn(d, dtype=dtype))
    e1 = torch.zeros(d, dtype=dtype)
    e1[0] = 1
    cases = [(m, 1.0), (m, -1.0), (e1, 1.0), (e1, -1.0)]
    s0 = torch.rand(d, dtype=dtype) + 0.1
    for direction, sign in cases:
        mm = direction.clone().requires_grad_()
        s = s0.clone().requires_grad_()
        df = torch.tensor(4.0, dtype=dtype, requires_grad=True)
        rloc = torch.tensor(0.1, dtype=dtype, requires_grad=True)
        y = (sign * 1.7 * direction).clone().requires_grad_()
        dist = PolarStudentT(mm, df=df, scale=s, radial_loc=rloc)
        lp = dist.log_prob(y)
        assert torch.isfinite(lp)
        grads = torch.autograd.grad(lp, [y, mm, s, df, rloc])
        for g in grads:
            assert torch.isfinite(g).all()
        if sign > 0:
            assert lp > dist.log_prob(y.detach() @ torch.eye(d, dtype=dtype).roll(1, 0))  # mode-ish


@pytest.mark.parametrize("d", [3, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_bounded_at_rounded_antipode(d, dtype):
    """y = -r m with m a generic unit vector: rounding leaves |u - (m.u) m| ~ eps, whose direction is noise;
    the gradients must not blow up like 1/eps (the anisotropic quadratic form is discontinuous there)."""
    for _ in range(10):
        m = unit(torch.randn(d, dtype=dtype)).requires_grad_()
        s = (torch.rand(d, dtype=dtype) * 2 + 0.1).requires_grad_()
        y = (-1.7 * m.detach()).requires_grad_()
        lp = PolarStudentT(m, df=4.0, scale=s).log_prob(y)
        for g in torch.autograd.grad(lp, [y, m, s]):
            assert g.abs().max() < 1e3


@pytest.mark.parametrize("angle", [1e-2, 1e-3, 1e-5, 1e-7])
def test_float32_gradients_near_m(angle):
    """Near u = m the float32 gradients agree with float64 ones (no catastrophic cancellation)."""
    d = 4
    rng = np.random.default_rng(3)
    m, s = random_params(d, rng)
    perp = torch.tensor(tangent_basis(m.numpy())[:, 0])
    y64 = 2.0 * (np.cos(angle) * m + np.sin(angle) * perp)

    def grads(dtype):
        y = y64.to(dtype).requires_grad_()
        mm = m.to(dtype).requires_grad_()
        ss = s.to(dtype).requires_grad_()
        lp = PolarStudentT(mm, df=3.0, scale=ss, validate_args=False).log_prob(y)
        return [g.double() for g in torch.autograd.grad(lp, [y, mm, ss])]

    for g32, g64 in zip(grads(torch.float32), grads(torch.float64), strict=True):
        torch.testing.assert_close(g32, g64, rtol=1e-3, atol=1e-3)


def test_antipode_isotropic_is_continuous():
    """At u = -m with isotropic scale the fallback equals the limit |v| -> pi."""
    m = unit(torch.randn(5, dtype=torch.float64))
    dist = PolarStudentT(m, df=3.0, scale=0.7)
    perp = torch.tensor(tangent_basis(m.numpy())[:, 1])
    near = torch.cos(torch.tensor(np.pi - 1e-5)) * m + torch.sin(torch.tensor(np.pi - 1e-5)) * perp
    expected = ref_directional(near.numpy(), m.numpy(), 3.0, np.full(5, 0.7))
    assert dist.directional_log_prob(-m).item() == pytest.approx(expected, abs=1e-4)


# ---------------------------------------------------------------------------------------------------
# sampling: test against exactly what the docstring says it draws


def _wrapped_t_cdf(x, df, scale, k=200):
    """CDF on (-pi, pi] of a t(df, scale) angle wrapped around the circle."""
    shifts = 2 * np.pi * np.arange(-k, k + 1)
    t = scipy.stats.t(df, scale=scale)
    return np.sum(t.cdf(x[:, None] + shifts) - t.cdf(-np.pi + shifts), axis=1)


@pytest.mark.parametrize("df, s", [(3.0, (0.05, 0.2)), (1.5, (1.0, 3.0)), (10.0, (0.3, 0.3))])
def test_sample_d2_angle_is_wrapped_t(df, s):
    n = 4000
    m = torch.tensor([0.6, -0.8], dtype=torch.float64)
    perp = torch.tensor([0.8, 0.6], dtype=torch.float64)
    dist = PolarStudentT(
        m, df=df, scale=torch.tensor(s, dtype=torch.float64), radial_loc=0.5, radial_scale=0.4
    )
    y = dist.sample((n,))
    assert y.shape == (n, 2)
    angle = torch.atan2(y @ perp, y @ m).numpy()
    sigma = (m[0].item() ** 2 / s[1] + m[1].item() ** 2 / s[0]) ** -0.5
    assert scipy.stats.kstest(angle, lambda x: _wrapped_t_cdf(np.atleast_1d(x), df, sigma)).pvalue > 1e-3
    log_r = y.norm(dim=-1).log().numpy()
    assert scipy.stats.kstest(log_r, scipy.stats.t(df, loc=0.5, scale=0.4).cdf).pvalue > 1e-3


@pytest.mark.parametrize("d", [3, 8])
def test_sample_tangent_statistics(d):
    """v = Log_m(u) of samples: (sum_j v_j^2 / s_j) / (d-1) ~ F(d-1, df), and each tangent coordinate
    (in an orthonormal basis of m-perp, over its shape-matrix scale) ~ t(df); log r ~ t(radial_df)."""
    n = 4000
    df, rdf = 4.0, 2.5
    rng = np.random.default_rng(d)
    m = unit(torch.tensor(rng.standard_normal(d)))
    s = rng.uniform(0.005, 0.03, d)
    dist = PolarStudentT(m, df=df, scale=torch.tensor(s), radial_loc=-1.0, radial_scale=2.0, radial_df=rdf)
    y = dist.sample((n,)).numpy()
    r = np.linalg.norm(y, axis=1)
    u = y / r[:, None]
    v = np.stack([log_map(m.numpy(), ui) for ui in u])
    quad = (v**2 / s).sum(1) / (d - 1)
    assert scipy.stats.kstest(quad, scipy.stats.f(d - 1, df).cdf).pvalue > 1e-3
    basis, shape = tangent_shape(m.numpy(), s)
    coords = v @ basis
    pvalues = [
        scipy.stats.kstest(coords[:, j] / np.sqrt(shape[j, j]), scipy.stats.t(df).cdf).pvalue
        for j in range(d - 1)
    ]
    assert min(pvalues) > 1e-3 / (d - 1)
    assert scipy.stats.kstest(np.log(r), scipy.stats.t(rdf, loc=-1.0, scale=2.0).cdf).pvalue > 1e-3


def test_box_probabilities_d2_cartesian():
    """log_prob is a density on R^2: its integral over boxes, by Gauss-Legendre in Cartesian coordinates
    (no polar Jacobian), matches the frequency of samples in the boxes. In d = 2 the exponential map has
    Jacobian 1, so sampler and density agree up to the wrapped mass P(|angle| > pi) ~ 1e-4 here."""
    m = torch.tensor([0.6, 0.8], dtype=torch.float64)
    dist = PolarStudentT(
        m, df=5.0, scale=torch.tensor([0.05, 0.08], dtype=torch.float64), radial_loc=0.5, radial_scale=0.5
    )
    n = 40_000
    y = dist.sample((n,)).numpy()
    nodes, weights = np.polynomial.legendre.leggauss(200)
    boxes = [
        ((0.6, 1.4), (0.9, 1.7)),
        ((1.2, 2.5), (1.0, 3.0)),
        ((0.2, 0.8), (0.1, 1.2)),
        ((-0.5, 0.9), (0.0, 0.6)),
    ]
    for (a1, b1), (a2, b2) in boxes:
        x1 = (b1 - a1) / 2 * nodes + (a1 + b1) / 2
        x2 = (b2 - a2) / 2 * nodes + (a2 + b2) / 2
        grid = torch.tensor(np.stack(np.meshgrid(x1, x2, indexing="ij"), axis=-1))
        w = np.outer(weights, weights) * (b1 - a1) * (b2 - a2) / 4
        prob = float((dist.log_prob(grid).exp().numpy() * w).sum())
        inside = (y[:, 0] > a1) & (y[:, 0] < b1) & (y[:, 1] > a2) & (y[:, 1] < b2)
        se = np.sqrt(prob * (1 - prob) / n)
        assert prob > 0.02
        assert abs(inside.mean() - prob) < 5 * se + 2e-4, ((a1, b1), (a2, b2))


def test_rsample_is_reparameterized():
    m = unit(torch.randn(4, dtype=torch.float64)).requires_grad_()
    s = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64, requires_grad=True)
    df = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    rloc = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    rscale = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    dist = PolarStudentT(m, df=df, scale=s, radial_loc=rloc, radial_scale=rscale)
    assert dist.has_rsample
    y = dist.rsample((100,))
    assert y.requires_grad
    grads = torch.autograd.grad(
        (y * torch.arange(1.0, 5.0, dtype=torch.float64)).sum(), [m, s, df, rloc, rscale]
    )
    for g in grads:
        assert torch.isfinite(g).all() and (g != 0).any()
    assert not dist.sample((3,)).requires_grad
    # same draws, radial location shifted by 0.1: every norm is multiplied by e^0.1
    torch.manual_seed(0)
    y1 = dist.rsample((1000,))
    torch.manual_seed(0)
    y2 = PolarStudentT(m, df=df, scale=s, radial_loc=rloc + 0.1, radial_scale=rscale).rsample((1000,))
    torch.testing.assert_close(y2.norm(dim=-1), y1.norm(dim=-1) * np.exp(0.1))


def test_euclidean_ablation_has_no_sampler():
    dist = PolarStudentT(torch.tensor([1.0, 0.0]), directional="euclidean")
    with pytest.raises(NotImplementedError):
        dist.sample()


# ---------------------------------------------------------------------------------------------------
# shapes, expand, Pyro


def test_shapes_and_infer_shapes():
    m = unit(torch.randn(4, 1, 3))
    df = torch.full((5,), 3.0)
    s = torch.rand(3) + 0.1
    dist = PolarStudentT(m, df=df, scale=s)
    assert dist.batch_shape == (4, 5)
    assert dist.event_shape == (3,)
    assert dist.dim == 3
    assert dist.sample().shape == (4, 5, 3)
    assert dist.sample((2,)).shape == (2, 4, 5, 3)
    assert dist.log_prob(dist.sample((2,))).shape == (2, 4, 5)
    assert dist.log_prob(torch.randn(3)).shape == (4, 5)
    assert dist.directional_log_prob(unit(torch.randn(7, 1, 1, 3))).shape == (7, 4, 5)
    assert dist.radial_log_prob(torch.randn(2, 1, 5)).shape == (2, 4, 5)
    assert PolarStudentT.infer_shapes(direction=(4, 1, 3), df=(5,), scale=(3,)) == (
        torch.Size([4, 5]),
        torch.Size([3]),
    )
    assert PolarStudentT.infer_shapes((3,), (), (6, 1), (), (2, 1), ()) == (
        torch.Size([2, 6]),
        torch.Size([3]),
    )
    assert (
        PolarStudentT(unit(m.double())).log_prob(torch.randn(3, dtype=torch.float64)).dtype == torch.float64
    )


def test_expand_keeps_class_and_values():
    rng = np.random.default_rng(4)
    m, s = random_params(3, rng)
    df = torch.tensor(3.0, dtype=torch.float64)
    dist = PolarStudentT(m, df=df, scale=s, radial_loc=0.3)
    big = dist.expand((6, 2))
    assert type(big) is PolarStudentT
    assert big.batch_shape == (6, 2)
    assert big.radial_df is big.df  # radial_df stays tied to df
    assert big.directional == "geodesic"
    y = torch.randn(6, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(big.log_prob(y), dist.log_prob(y))
    assert big.sample().shape == (6, 2, 3)
    abl = PolarStudentT(m, scale=s, radial_df=7.0, directional="euclidean").expand((2,))
    assert abl.directional == "euclidean"
    assert abl.radial_df.shape == (2,) and abl.radial_df[0].item() == 7.0


def test_inside_pyro_plate_with_obs():
    rng = np.random.default_rng(6)
    m, s = random_params(3, rng)
    y = torch.tensor(rng.standard_normal((10, 3)))

    def model(y):
        with pyro.plate("data", len(y)):
            pyro.sample("y", PolarStudentT(m, df=3.0, scale=s), obs=y)

    tr = poutine.trace(model).get_trace(y)
    site = tr.nodes["y"]
    assert type(site["fn"]) is PolarStudentT
    assert site["fn"].batch_shape == (10,)
    expected = sum(ref_log_prob(yi.numpy(), m.numpy(), 3.0, s.numpy(), 0.0, 1.0, 3.0) for yi in y)
    assert tr.log_prob_sum().item() == pytest.approx(expected, rel=1e-10)


def test_svi_recovers_direction_and_scale():
    """Maximum likelihood by SVI (empty guide) of direction and isotropic scale from sample()'s output."""
    pyro.clear_param_store()
    true_m = unit(torch.tensor([1.0, -1.0, 2.0]))
    true_s = 0.04
    data = PolarStudentT(true_m, df=5.0, scale=true_s, radial_loc=1.0, radial_scale=0.5).sample((500,))

    def model(y):
        raw = pyro.param("raw_direction", torch.tensor([1.0, 1.0, 0.0]))
        scale = pyro.param("scale", torch.tensor(1.0), constraint=pyro.distributions.constraints.positive)
        with pyro.plate("data", len(y)):
            pyro.sample(
                "y",
                PolarStudentT(unit(raw), df=5.0, scale=scale, radial_loc=1.0, radial_scale=0.5),
                obs=y,
            )

    def guide(y):
        pass

    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    for _ in range(150):
        svi.step(data)
    m_hat = unit(pyro.param("raw_direction").detach())
    angle = torch.arccos((m_hat @ true_m).clamp(-1, 1)).item()
    assert angle < 0.06  # about 4 standard errors with 500 points
    assert pyro.param("scale").item() == pytest.approx(true_s, rel=0.2)
    pyro.clear_param_store()


# ---------------------------------------------------------------------------------------------------
# validation


def test_validation_errors():
    m = torch.tensor([0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="df"):
        PolarStudentT(m, df=0.0)
    with pytest.raises(ValueError, match="df"):
        PolarStudentT(m, df=torch.tensor([3.0, -1.0]))
    with pytest.raises(ValueError, match="scale"):
        PolarStudentT(m, scale=torch.tensor([1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="scale"):
        PolarStudentT(m, scale=torch.ones(2))  # neither d nor 1 features
    with pytest.raises(ValueError, match="direction"):
        PolarStudentT(torch.tensor([1.0, 1.0, 0.0]))  # not unit
    with pytest.raises(ValueError, match="direction"):
        PolarStudentT(torch.tensor([1.0]))  # d < 2
    with pytest.raises(ValueError, match="direction"):
        PolarStudentT(torch.tensor(1.0))
    with pytest.raises(ValueError, match="direction"):
        PolarStudentT([0.0, 1.0])
    with pytest.raises(ValueError, match="radial_scale"):
        PolarStudentT(m, radial_scale=-1.0)
    with pytest.raises(ValueError, match="radial_df"):
        PolarStudentT(m, radial_df=0.0)
    with pytest.raises(ValueError, match="directional"):
        PolarStudentT(m, directional="chordal")
    with pytest.raises(ValueError, match="batch shapes"):
        PolarStudentT(unit(torch.randn(4, 3)), df=torch.ones(5))
    # non-finite parameters
    for name in ["df", "radial_loc", "radial_scale", "radial_df"]:
        with pytest.raises(ValueError, match=name):
            PolarStudentT(m, **{name: float("inf")})
    with pytest.raises(ValueError, match="radial_loc"):
        PolarStudentT(m, radial_loc=float("nan"))
    with pytest.raises(ValueError, match="scale"):
        PolarStudentT(m, scale=torch.tensor([1.0, float("inf"), 1.0]))
    with pytest.raises(ValueError, match="direction"):
        PolarStudentT(torch.tensor([float("nan"), 1.0, 0.0]))


def test_value_validation():
    dist = PolarStudentT(torch.tensor([0.0, 1.0, 0.0]), validate_args=True)
    with pytest.raises(ValueError, match="value"):
        dist.log_prob(torch.ones(2))
    with pytest.raises(ValueError, match="value"):
        dist.log_prob(torch.zeros(3))
    with pytest.raises(ValueError, match="value"):
        dist.log_prob(torch.tensor([1.0, float("inf"), 0.0]))
    with pytest.raises(ValueError, match="u"):
        dist.directional_log_prob(torch.tensor([1.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="u"):
        dist.directional_log_prob(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="value"):
        dist.expand((2,)).log_prob(torch.zeros(2, 3))
    # without validation no error is raised for an off-sphere u (the formula is evaluated as it is)
    assert torch.isfinite(
        PolarStudentT(torch.tensor([0.0, 1.0, 0.0]), validate_args=False).directional_log_prob(torch.ones(3))
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_samples_stay_finite_and_nonzero_with_a_very_heavy_radial_tail(dtype):
    """radial_df = 1 and a wide scale put log r beyond the dtype's range now and then (found by
    benchmarks/fuzz_distributions.py): samples stay finite and nonzero, and their log_prob finite."""
    torch.manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(4096, 5, dtype=dtype), dim=-1)
    dist = PolarStudentT(direction, df=1.0, radial_scale=50.0)
    y = dist.rsample((20,))
    assert torch.isfinite(y).all() and (y.norm(dim=-1) > 0).all()
    assert torch.isfinite(dist.log_prob(y)).all()
