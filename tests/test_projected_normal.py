"""distributions.ProjectedNormal against independent oracles.

Oracles: a 30-digit mpmath evaluation of the density from its definition (A, b, c accumulated in arbitrary
precision from the exact inputs, the radial integral by quadrature; ``tests/_distribution_helpers.py``),
deterministic quadrature over the circle and the 2-sphere, Monte Carlo integration, Pyro's own
``ProjectedNormal`` (d = 2, 3, 4, near the mean where its closed forms are exact) and Pyro's
goodness-of-fit test of samples against densities. Numerics are tested in float64 as Pyro does.
"""

import contextlib
import itertools
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from _distribution_helpers import log_sphere_area, mp_projected_normal_log_prob, rel_err, uniform_sphere
from pyro.distributions import constraints
from pyro.distributions.testing.gof import auto_goodness_of_fit
from pyro.infer import SVI, Trace_ELBO

from distributions import projected_normal
from distributions.hyperspherical_uniform import HypersphericalUniform
from distributions.projected_normal import ProjectedNormal

DIMS = [2, 3, 4, 5, 8, 16, 64, 128, 512, 1024, 4096]
LOC_NORMS = [0.0, 1.0, 40.0, 1e4]
SCALE_KINDS = ["iso 1", "iso 1e-3", "iso 1e3", "diag 1e-3..1e3"]
VALUE_KINDS = ["mode", "antipode", "random", "t = 0", "near mode"]
TEST_FAILURE_RATE = 1 / 50  # for p-values of the goodness-of-fit tests (fixed seeds: deterministic)


def make_case(d: int, loc_norm: float, scale_kind: str, value_kind: str, seed: int = 0):
    """loc (d,), scale (1,) or (d,), value (d,) as float64 numpy arrays, value on the sphere."""
    rng = np.random.default_rng([d, int(loc_norm), SCALE_KINDS.index(scale_kind), seed])
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    loc = loc_norm * direction
    if scale_kind == "diag 1e-3..1e3":
        scale = np.exp(rng.uniform(np.log(1e-3), np.log(1e3), d))
    else:
        scale = np.array([float(scale_kind.split()[1])])
    other = rng.standard_normal(d)
    other /= np.linalg.norm(other)
    if value_kind == "mode":
        value = direction
    elif value_kind == "antipode":
        value = -direction
    elif value_kind == "random":
        value = other
    elif value_kind == "t = 0":  # u orthogonal to Sigma^{-1} mu, so b = t = 0
        w = direction / np.broadcast_to(scale, (d,)) ** 2
        value = other - (other @ w) / (w @ w) * w
    else:  # a small angle (1e-3) away from the mean direction
        value = direction + 1e-3 * other
    return loc, scale, value / np.linalg.norm(value)


def fast_cases():
    """Every d, every (|loc|, scale) combination at least once, every kind of value for each."""
    combos = list(itertools.product(LOC_NORMS, SCALE_KINDS))
    for i, d in enumerate(DIMS):
        for loc_norm, scale_kind in (combos[(2 * i) % 16], combos[(2 * i + 1) % 16]):
            yield d, loc_norm, scale_kind


def slow_cases():
    yield from itertools.product(DIMS, LOC_NORMS, SCALE_KINDS)


# ProjectedNormal.log_prob takes one of two routes by batch size: small batches in the (..., d) layout in
# float64 throughout; large ones a loop over the coordinates (d <= 16) or the (..., d) layout (d > 16), with
# the per-event part in the result's dtype. Every accuracy and gradient test below runs both routes, whatever
# its own batch size.
PATHS = ["small batch", "large batch"]


@contextlib.contextmanager
def batch_route(path):
    saved = projected_normal._ROWS_MAX_NUMEL
    projected_normal._ROWS_MAX_NUMEL = 1 << 62 if path == "small batch" else -1
    try:
        yield
    finally:
        projected_normal._ROWS_MAX_NUMEL = saved


def ours(loc, scale, value, dtype=torch.float64):
    """Our log density; a Python number ``scale`` is passed as such (1.0 takes the unit-scale shortcut)."""
    loc, value = (torch.tensor(x, dtype=dtype) for x in (loc, value))
    scale = scale if isinstance(scale, float) else torch.tensor(scale, dtype=dtype)
    return ProjectedNormal(loc, scale, validate_args=False).log_prob(value)


def scales_of(scale_kind, scale):
    """The scale as a tensor and, for a unit scale, also as the number 1.0 (Pyro's parameterisation, which
    skips the whitening in the small-batch route)."""
    return [scale, 1.0] if scale_kind == "iso 1" else [scale]


def check_float64(d, loc_norm, scale_kind):
    for value_kind in VALUE_KINDS:
        loc, scale, value = make_case(d, loc_norm, scale_kind, value_kind)
        expected = float(mp_projected_normal_log_prob(loc, scale, value))
        for path, given_scale in itertools.product(PATHS, scales_of(scale_kind, scale)):
            with batch_route(path):
                actual = ours(loc, given_scale, value).item()
            # Measured worst over the dense set: 3.6e-13 (d = 4, |loc| = 1e4, diagonal, near the mode).
            assert rel_err(actual, expected) <= 2e-12, (value_kind, path, given_scale)


def check_float32(d, loc_norm, scale_kind):
    for value_kind in VALUE_KINDS:
        loc, scale, value = (x.astype(np.float32) for x in make_case(d, loc_norm, scale_kind, value_kind))
        expected = float(mp_projected_normal_log_prob(loc, scale, value))  # at the exact float32 inputs
        for path, given_scale in itertools.product(PATHS, scales_of(scale_kind, scale)):
            with batch_route(path):
                actual = ours(loc, given_scale, value, torch.float32)
            assert actual.dtype == torch.float32
            assert torch.isfinite(actual).all()
            # Measured worst over the dense set: 1.8e-6 (d = 512, per-event part in float32).
            assert rel_err(actual.item(), expected) <= 1e-5, (value_kind, path, given_scale)


# --------------------------------------------------------------------------------------------------
# Accuracy of log_prob
@pytest.mark.parametrize("d,loc_norm,scale_kind", list(fast_cases()))
def test_log_prob_float64_against_mpmath(d, loc_norm, scale_kind):
    check_float64(d, loc_norm, scale_kind)


@pytest.mark.slow
@pytest.mark.parametrize("d,loc_norm,scale_kind", list(slow_cases()))
def test_log_prob_float64_against_mpmath_all(d, loc_norm, scale_kind):
    check_float64(d, loc_norm, scale_kind)


@pytest.mark.parametrize("d,loc_norm,scale_kind", list(fast_cases()))
def test_log_prob_float32_against_mpmath(d, loc_norm, scale_kind):
    check_float32(d, loc_norm, scale_kind)


@pytest.mark.slow
@pytest.mark.parametrize("d,loc_norm,scale_kind", list(slow_cases()))
def test_log_prob_float32_against_mpmath_all(d, loc_norm, scale_kind):
    check_float32(d, loc_norm, scale_kind)


def test_far_tail_where_pyro_underflows():
    # docs/maths.md, Projected normal: float64, d = 3, |loc| = 40, u = -loc/|loc|: truth -813.1, Pyro -37.9.
    loc = torch.tensor([40.0, 0.0, 0.0], dtype=torch.float64)
    value = -loc / loc.norm()
    expected = float(mp_projected_normal_log_prob(loc.numpy(), [1.0], value.numpy()))
    actual = ProjectedNormal(loc).log_prob(value).item()
    assert round(expected, 1) == -813.1
    assert rel_err(actual, expected) <= 1e-12
    assert round(dist.ProjectedNormal(loc).log_prob(value).item(), 1) == -37.9  # Pyro's clamped value


@pytest.mark.parametrize("d", [2, 3, 4])
def test_agrees_with_pyro_near_the_mean(d):
    concentration = 3.0 * torch.randn(20, d, dtype=torch.float64)
    value = dist.ProjectedNormal(concentration).sample()
    expected = dist.ProjectedNormal(concentration).log_prob(value)
    # positional as in Pyro, by Pyro's keyword, and PN(mu, s^2 I) = PN(mu / s, I)
    for pn in (
        ProjectedNormal(concentration),
        ProjectedNormal(concentration=concentration),
        ProjectedNormal(0.25 * concentration, 0.25),
    ):
        torch.testing.assert_close(pn.log_prob(value), expected, rtol=1e-10, atol=1e-10)


def test_uniform_when_loc_is_zero():
    for d in (2, 3, 50, 4096):
        value = uniform_sphere(5, d)
        for scale in (1.0, 1e-3, 7.0):
            torch.testing.assert_close(
                ProjectedNormal(torch.zeros(d, dtype=torch.float64), scale).log_prob(value),
                torch.full((5,), -log_sphere_area(d), dtype=torch.float64),
                rtol=1e-12,
                atol=1e-12,
            )


# --------------------------------------------------------------------------------------------------
# Normalization
def test_normalized_on_the_circle_by_quadrature():
    # The trapezoidal rule is spectrally accurate for a smooth periodic integrand.
    theta = torch.arange(1000, dtype=torch.float64) * (2 * math.pi / 1000)
    value = torch.stack([theta.cos(), theta.sin()], dim=-1)
    for loc, scale in [([3.0, -1.0], [0.5, 2.0]), ([0.3, 0.2], [1.0]), ([-8.0, 2.0], [0.3, 0.1])]:
        pn = ProjectedNormal(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
        total = pn.log_prob(value).exp().sum() * (2 * math.pi / 1000)
        assert total.item() == pytest.approx(1.0, abs=1e-12)


def test_normalized_on_the_sphere_by_quadrature():
    # Gauss-Legendre in cos(theta) times the trapezoidal rule in phi.
    x, w = np.polynomial.legendre.leggauss(120)
    phi = torch.arange(240, dtype=torch.float64) * (2 * math.pi / 240)
    z = torch.tensor(x).unsqueeze(-1)
    rho = (1 - z**2).sqrt()
    value = torch.stack(torch.broadcast_tensors(rho * phi.cos(), rho * phi.sin(), z), dim=-1)
    weights = torch.tensor(w).unsqueeze(-1) * (2 * math.pi / 240)
    cases = [([2.0, -1.0, 0.5], [0.5, 2.0, 1.0]), ([0.0, 0.0, 1.0], [1.0]), ([4.0, 1.0, -3.0], [1.5])]
    for loc, scale in cases:
        pn = ProjectedNormal(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
        total = (pn.log_prob(value).exp() * weights).sum()
        assert total.item() == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("d", [2, 3, 5])
def test_normalized_by_monte_carlo(d):
    loc = torch.linspace(1.0, -0.5, d, dtype=torch.float64)
    scale = torch.linspace(0.6, 1.5, d, dtype=torch.float64)
    value = uniform_sphere(100_000, d)
    weights = (ProjectedNormal(loc, scale).log_prob(value) + log_sphere_area(d)).exp()
    std_err = weights.std() / math.sqrt(len(weights))
    assert abs(weights.mean().item() - 1.0) < 4 * std_err.item()
    assert std_err.item() < 0.01  # the check has power


@pytest.mark.parametrize(
    "d,loc,scale", [(2, [1.5, -0.5], [0.7, 1.3]), (3, [2.0, 0.5, -1.0], [0.5, 1.0, 2.0])]
)
def test_samples_fit_density(d, loc, scale):
    loc, scale = torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64)
    pn = ProjectedNormal(loc, scale)
    samples = pn.sample((1200 * d,))
    probs = pn.log_prob(samples).exp()
    # The sphere is a (d-1)-manifold: nearest-neighbour volumes use its dimension.
    assert auto_goodness_of_fit(samples, probs, dim=d - 1) > TEST_FAILURE_RATE
    # ... and a wrong density fails the same test (the test has power).
    wrong = ProjectedNormal(1.3 * loc, scale)
    assert auto_goodness_of_fit(samples, wrong.log_prob(samples).exp(), dim=d - 1) < TEST_FAILURE_RATE


# --------------------------------------------------------------------------------------------------
# Gradients
def _log_prob_fn(value_is_free=True):
    # Validation off: gradcheck perturbs value off the sphere, where the formula is still defined (it is
    # homogeneous of degree -d in value).
    def fn(loc, scale, value):
        return ProjectedNormal(loc, scale, validate_args=False).log_prob(value)

    return fn


@pytest.mark.parametrize(
    "d,loc_norm,scale_kind,value_kind",
    [
        (2, 3.0, "diag", "antipode"),  # t < 0
        (3, 5.0, "diag", "t = 0"),  # t = 0
        (3, 200.0, "iso", "near mode"),  # large t
        (4, 0.0, "iso", "random"),
        (16, 30.0, "diag", "antipode"),  # t << 0 through the quadrature branch
        (64, 1e3, "diag", "near mode"),  # large d, large t
        (300, 2.0, "iso", "random"),
    ],
)
@pytest.mark.parametrize("path", PATHS)
def test_gradcheck_loc_scale_value(d, loc_norm, scale_kind, value_kind, path):
    loc, _, value = make_case(d, loc_norm, "iso 1", value_kind)
    rng = np.random.default_rng(d)
    scale = np.exp(rng.uniform(-0.5, 0.5, d if scale_kind == "diag" else 1))
    if value_kind == "t = 0":
        w = loc / np.broadcast_to(scale, (d,)) ** 2
        value = value - (value @ w) / (w @ w) * w
        value /= np.linalg.norm(value)
    args = tuple(torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (loc, scale, value))
    with batch_route(path):
        assert torch.autograd.gradcheck(_log_prob_fn(), args)


@pytest.mark.parametrize(
    "d,scale_shape,value_shape,loc_shape",
    [
        (3, (1,), (2, 3, 3), (3, 3)),  # isotropic, samples broadcast over a batch of means
        (3, (3, 3), (2, 1, 3), (3, 3)),  # diagonal, value broadcast over the batch
        (2, (2, 1), (2, 2), (2,)),  # a scale per batch element, one mean
        (5, (5,), (4, 5), (4, 5)),  # diagonal, two groups of four scales in the float32 log-sum
    ],
)
@pytest.mark.parametrize("path", PATHS)
def test_gradcheck_with_broadcasting(d, scale_shape, value_shape, loc_shape, path):
    # The written-out backward of d <= 16 reduces gradients over broadcast dimensions itself.
    gen = torch.Generator().manual_seed(d)
    loc = (2 * torch.randn(loc_shape, generator=gen, dtype=torch.float64)).requires_grad_()
    scale = (0.5 + torch.rand(scale_shape, generator=gen, dtype=torch.float64)).requires_grad_()
    value = torch.randn(value_shape, generator=gen, dtype=torch.float64)
    value = torch.nn.functional.normalize(value, dim=-1)
    with batch_route(path):
        assert torch.autograd.gradcheck(_log_prob_fn(), (loc, scale, value.requires_grad_()))


@pytest.mark.parametrize("d,scale_kind", [(2, "diag"), (3, "iso"), (3, "diag"), (16, "diag"), (20, "iso")])
@pytest.mark.parametrize("path", PATHS)
def test_second_derivatives_gradgradcheck(d, scale_kind, path):
    # Hessians (Laplace approximations, HMC mass adaptation by curvature): the written-out backward of
    # d <= 16 hands second derivatives to autograd; cases on both sides of the t switch points.
    gen = torch.Generator().manual_seed(d)
    loc = (2 * torch.randn(3, d, generator=gen, dtype=torch.float64)).requires_grad_()
    scale = 0.5 + torch.rand(3, d if scale_kind == "diag" else 1, generator=gen, dtype=torch.float64)
    value = torch.nn.functional.normalize(torch.randn(3, d, generator=gen, dtype=torch.float64), dim=-1)
    value[0] = -torch.nn.functional.normalize(loc[0].detach(), dim=-1)  # the antipode: the tail branch
    args = (loc, scale.requires_grad_(), value.requires_grad_())
    with batch_route(path):
        assert torch.autograd.gradgradcheck(_log_prob_fn(), args)


@pytest.mark.parametrize("d", [2, 3, 20])
@pytest.mark.parametrize("path", PATHS)
def test_unit_scale_shortcut_matches_a_tensor_scale(d, path):
    # A Python 1.0 (the default, Pyro's parameterisation) skips the whitening in the small-batch route: the
    # same values and gradients as a tensor scale of ones, first and second order, also after expand (Pyro's
    # plates call it); any other number takes the general route.
    gen = torch.Generator().manual_seed(d)
    loc = 2 * torch.randn(4, d, generator=gen, dtype=torch.float64)
    value = torch.nn.functional.normalize(torch.randn(4, d, generator=gen, dtype=torch.float64), dim=-1)
    value[0] = -torch.nn.functional.normalize(loc[0], dim=-1)  # the antipode: the tail branch

    def fn(scale):
        return lambda loc, value: ProjectedNormal(loc, scale, validate_args=False).log_prob(value)

    args = (loc.requires_grad_(), value.requires_grad_())
    with batch_route(path):
        for number in (1.0, 2.5):
            given, reference = fn(number)(*args), fn(torch.full((1,), number, dtype=torch.float64))(*args)
            torch.testing.assert_close(given, reference, rtol=1e-14, atol=1e-14)
            grads = [torch.autograd.grad(out.sum(), args) for out in (given, reference)]
            for g, ref in zip(*grads, strict=True):
                torch.testing.assert_close(g, ref, rtol=1e-13, atol=1e-13)
        assert torch.autograd.gradcheck(fn(1.0), args)
        assert torch.autograd.gradgradcheck(fn(1.0), args)
        expanded = ProjectedNormal(loc[0].detach()).expand((4,))
        assert expanded._unit_scale and not ProjectedNormal(loc, 2.5)._unit_scale
        torch.testing.assert_close(
            expanded.log_prob(value.detach()), ProjectedNormal(loc[0].detach(), torch.ones(1)).log_prob(value)
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("path", PATHS)
def test_log_prob_without_a_graph_equals_with_one(path, dtype):
    # Under no_grad, or with no input that requires grad, the forward pass skips the radial integral's
    # derivative: the values are the same to the last bit, and a graph is recorded only when asked for.
    gen = torch.Generator().manual_seed(1)
    for d, scale in (
        (3, 1.0),
        (3, torch.full((1,), 0.7)),
        (4, 0.5 + torch.rand(4, generator=gen)),
        (20, 1.0),
    ):
        loc = 3 * torch.randn(64, d, generator=gen, dtype=dtype)
        scale = scale.to(dtype) if torch.is_tensor(scale) else scale
        value = ProjectedNormal(loc, scale).sample()
        value[0] = -torch.nn.functional.normalize(loc[0], dim=-1)  # the antipode: the tail branch
        with batch_route(path):
            recorded = ProjectedNormal(loc.clone().requires_grad_(), scale).log_prob(value)
            plain = ProjectedNormal(loc, scale).log_prob(value)
            with torch.no_grad():
                no_grad = ProjectedNormal(loc.clone().requires_grad_(), scale).log_prob(value)
        assert recorded.requires_grad and not plain.requires_grad and not no_grad.requires_grad
        torch.testing.assert_close(plain, recorded.detach(), rtol=0, atol=0)
        torch.testing.assert_close(no_grad, recorded.detach(), rtol=0, atol=0)


def test_reused_scratch_memory_leaks_nothing_between_calls_modes_or_threads():
    # The coordinate loop keeps per-thread float64 blocks between calls (its sums too, without a gradient):
    # results must not alias them, inference mode must not taint them, and threads must not share them.
    import threading

    gen = torch.Generator().manual_seed(3)

    def case(n, d):
        loc = 3 * torch.randn(n, d, generator=gen)
        scale = 0.5 + torch.rand(n, d, generator=gen)
        return loc, scale, ProjectedNormal(loc, scale).sample()

    def fresh_reference(loc, scale, value):  # the rows layout: no scratch memory
        with batch_route("small batch"):
            return ProjectedNormal(loc, scale).log_prob(value)

    cases = [case(n, d) for n, d in ((40_000, 3), (9_000, 4), (50_000, 2))]
    references = [fresh_reference(*c) for c in cases]
    with batch_route("large batch"):
        with torch.inference_mode():
            first = ProjectedNormal(*cases[0][:2]).log_prob(cases[0][2])
        outputs = [first.clone()]
        for loc, scale, value in cases[1:]:
            outputs.append(ProjectedNormal(loc.requires_grad_(), scale).log_prob(value))
            with torch.no_grad():
                outputs.append(ProjectedNormal(loc, scale).log_prob(value))
        torch.testing.assert_close(first, outputs[0], rtol=0, atol=0)  # not overwritten by later calls
        expected = [references[0], *[r for r in references[1:] for _ in ("with grad", "no grad")]]
        for got, ref in zip(outputs, expected, strict=True):
            torch.testing.assert_close(got.detach(), ref, rtol=1e-6, atol=1e-5)

        results = {}

        def worker(i):
            loc, scale, value = cases[i % 3]
            with torch.no_grad():
                results[i] = [ProjectedNormal(loc, scale).log_prob(value) for _ in range(3)]

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i, outs in results.items():
        for out in outs:
            torch.testing.assert_close(out, references[i % 3], rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("path", PATHS)
def test_float32_gradients_match_float64(path):
    # The float32 path (float64 sums, float32 per-event rest) against float64 on random events, all three
    # gradients, isotropic and diagonal.
    gen = torch.Generator().manual_seed(0)
    for d, k in ((3, 1), (3, 3), (7, 7)):
        loc64 = 3 * torch.randn(512, d, generator=gen, dtype=torch.float64)
        scale64 = 0.5 + torch.rand(512, k, generator=gen, dtype=torch.float64)
        value64 = ProjectedNormal(loc64, scale64).sample()
        grads = {}
        for dtype in (torch.float32, torch.float64):
            args = [x.to(dtype).requires_grad_() for x in (loc64, scale64, value64)]
            with batch_route(path):
                out = _log_prob_fn()(*args)
            grads[dtype] = torch.autograd.grad(out.sum(), args)
        for g32, g64 in zip(grads[torch.float32], grads[torch.float64], strict=True):
            assert g32.dtype == torch.float32
            torch.testing.assert_close(g32.double(), g64, rtol=1e-4, atol=1e-4)


def test_gradients_finite_in_float32_extremes():
    for d, loc_norm, scale_kind, value_kind in [
        (3, 1e4, "iso 1e-3", "antipode"),
        (4096, 1e4, "diag 1e-3..1e3", "random"),
        (2, 1e4, "iso 1e-3", "mode"),
    ]:
        loc, scale, value = make_case(d, loc_norm, scale_kind, value_kind)
        args = [torch.tensor(x, dtype=torch.float32, requires_grad=True) for x in (loc, scale, value)]
        out = ProjectedNormal(args[0], args[1]).log_prob(args[2])
        grads = torch.autograd.grad(out, args)
        assert torch.isfinite(out) and all(torch.isfinite(g).all() for g in grads)


# --------------------------------------------------------------------------------------------------
# Shapes, the Pyro contract, sampling
@pytest.mark.parametrize(
    "loc_shape,scale_shape,batch_shape",
    [
        ((3,), None, ()),
        ((4, 5, 3), None, (4, 5)),
        ((4, 5, 3), (5, 1), (4, 5)),
        ((5, 3), (3,), (5,)),
        ((5, 3), (2, 1, 1), (2, 5)),
        ((7,), (6, 7), (6,)),
    ],
)
def test_shapes(loc_shape, scale_shape, batch_shape):
    loc = torch.randn(loc_shape)
    scale = 1.0 if scale_shape is None else torch.rand(scale_shape) + 0.5
    pn = ProjectedNormal(loc, scale)
    assert pn.batch_shape == batch_shape and pn.event_shape == loc_shape[-1:]
    assert ProjectedNormal.infer_shapes(loc=loc_shape, scale=() if scale_shape is None else scale_shape) == (
        batch_shape,
        loc_shape[-1:],
    )
    x = pn.rsample((2,))
    assert x.shape == (2,) + batch_shape + loc_shape[-1:]
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(x.shape[:-1]))
    assert pn.log_prob(x).shape == (2,) + batch_shape
    assert pn.mode.shape == pn.mean.shape == batch_shape + loc_shape[-1:]
    assert pn.support is constraints.sphere and pn.has_rsample


def test_expand_preserves_class_and_values():
    loc = torch.randn(5, 3, dtype=torch.float64)
    scale = torch.rand(5, 3, dtype=torch.float64) + 0.5
    pn = ProjectedNormal(loc, scale, validate_args=True)
    big = pn.expand([4, 5])
    assert type(big) is ProjectedNormal and big.batch_shape == (4, 5) and big._validate_args
    value = pn.sample((4,))
    torch.testing.assert_close(big.log_prob(value), pn.log_prob(value))
    # and inside a plate, the trace holds our class (so KLs registered for it are found)
    with pyro.plate("p", 4, dim=-2):
        trace = pyro.poutine.trace(lambda: pyro.sample("z", pn)).get_trace()
    assert type(trace.nodes["z"]["fn"]) is ProjectedNormal and trace.nodes["z"]["fn"].batch_shape == (4, 5)


def test_pyro_parameterization_concentration_mode_and_mean():
    c = torch.randn(6, 4, dtype=torch.float64)
    ref = dist.ProjectedNormal(c)
    for pn in (ProjectedNormal(c), ProjectedNormal(concentration=c), ProjectedNormal(2 * c, 2.0)):
        torch.testing.assert_close(pn.concentration, c)
        torch.testing.assert_close(pn.mode, ref.mode)
        torch.testing.assert_close(pn.mean, ref.mean)
    with pytest.raises(ValueError, match="isotropic"):
        _ = ProjectedNormal(c, torch.rand(4, dtype=torch.float64) + 1).concentration
    with pytest.raises(ValueError, match="exactly one of loc and concentration"):
        ProjectedNormal(c, concentration=c)


def test_rsample_is_reparameterized_and_centred():
    loc = torch.tensor([3.0, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([0.8], dtype=torch.float64, requires_grad=True)
    x = ProjectedNormal(loc, scale).rsample((20000,))
    (x[:, 0].mean() + x[:, 2].mean()).backward()
    assert loc.grad.abs().sum() > 0 and scale.grad.abs().sum() > 0
    # isotropic: the expectation of u points along loc
    mean_dir = x.detach().mean(0) / x.detach().mean(0).norm()
    assert torch.dot(mean_dir, loc.detach() / loc.detach().norm()) > 1 - 1e-3


# --------------------------------------------------------------------------------------------------
# Bad input
@pytest.mark.parametrize(
    "loc,scale,match",
    [
        (torch.zeros(3, 1), 1.0, "loc must have event size d >= 2"),
        (torch.tensor(1.0), 1.0, "loc must have shape"),
        (torch.tensor([0.0, float("nan")]), 1.0, "loc must be finite"),
        (torch.tensor([0.0, float("inf")]), 1.0, "loc must be finite"),
        (torch.zeros(3), torch.tensor([1.0, float("nan"), 1.0]), "scale must be positive and finite"),
        (torch.zeros(3), float("inf"), "scale must be positive and finite"),
        (torch.zeros(3), 0.0, "scale must be positive and finite"),
        (torch.zeros(3), torch.tensor([1.0, -1.0, 1.0]), "scale must be positive and finite"),
        (torch.zeros(3), torch.ones(2), "scale must have last dimension 1"),
        (torch.zeros(4, 3), torch.ones(5, 1), "does not broadcast"),
    ],
)
def test_bad_parameters_raise(loc, scale, match):
    with pytest.raises(ValueError, match=match):
        ProjectedNormal(loc, scale, validate_args=True)


def test_bad_concentration_is_named():
    with pytest.raises(ValueError, match="concentration must be finite"):
        ProjectedNormal(concentration=torch.tensor([1.0, float("nan")]), validate_args=True)


def test_bad_values_raise_with_validation():
    pn = ProjectedNormal(torch.zeros(3), validate_args=True)
    with pytest.raises(ValueError, match="value must have event shape"):
        pn.log_prob(torch.ones(4) / 2)
    with pytest.raises(ValueError, match="support"):
        pn.log_prob(torch.tensor([1.0, 1.0, 0.0]))
    # without validation the formula is evaluated off the sphere
    off = ProjectedNormal(torch.zeros(3), validate_args=False).log_prob(torch.tensor([1.0, 1.0, 0.0]))
    assert torch.isfinite(off)


# --------------------------------------------------------------------------------------------------
# Pyro integration
def test_svi_recovers_direction_and_concentration():
    pyro.clear_param_store()
    true_loc = 4.0 * torch.tensor([1.0, -2.0, 0.5]) / math.sqrt(5.25)
    data = ProjectedNormal(true_loc).sample((1500,))

    def model(data):
        loc = pyro.param("loc", torch.tensor([0.1, 0.1, 0.1]))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", ProjectedNormal(loc, 1.0), obs=data)

    svi = SVI(model, lambda data: None, pyro.optim.Adam({"lr": 0.1}), Trace_ELBO())
    for _ in range(200):
        svi.step(data)
    loc = pyro.param("loc").detach()
    assert torch.dot(loc / loc.norm(), true_loc / true_loc.norm()) > math.cos(0.05)
    assert loc.norm().item() == pytest.approx(4.0, rel=0.06)


def test_svi_recovers_diagonal_scale():
    # PN(mu, diag s^2) is invariant to a common rescaling of (mu, s): pin s_1 = 1.
    pyro.clear_param_store()
    true_loc = torch.tensor([2.0, 1.0, -1.0])
    true_scale = torch.tensor([1.0, 0.5, 2.0])
    data = ProjectedNormal(true_loc, true_scale).sample((2000,))

    def model(data):
        loc = pyro.param("loc", torch.tensor([0.5, 0.5, -0.5]))
        log_rest = pyro.param("log_rest", torch.zeros(2))
        scale = torch.cat([torch.ones(1), log_rest.exp()])
        with pyro.plate("data", len(data)):
            pyro.sample("obs", ProjectedNormal(loc, scale), obs=data)

    svi = SVI(model, lambda data: None, pyro.optim.Adam({"lr": 0.08}), Trace_ELBO())
    for _ in range(300):
        svi.step(data)
    scale = pyro.param("log_rest").detach().exp()
    loc = pyro.param("loc").detach()
    torch.testing.assert_close(scale, true_scale[1:], rtol=0.15, atol=0)
    torch.testing.assert_close(loc, true_loc, rtol=0, atol=0.2)


def test_latent_projected_normal_in_model_and_guide():
    # Latent directions with a uniform prior, observed through a concentrated projected normal; the guide
    # is a projected normal per data point. SVI must run and pull each guide direction onto its datum.
    pyro.clear_param_store()
    d, n = 5, 8
    data = uniform_sphere(n, d, dtype=torch.float32)

    def model(data):
        with pyro.plate("data", n):
            z = pyro.sample("z", HypersphericalUniform(d))
            pyro.sample("obs", ProjectedNormal(20.0 * z), obs=data)

    def guide(data):
        loc = pyro.param("q_loc", torch.randn(n, d))
        scale = pyro.param("q_scale", torch.full((n, d), 0.5), constraint=constraints.positive)
        with pyro.plate("data", n):
            pyro.sample("z", ProjectedNormal(loc, scale))

    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(data) for _ in range(150)]
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    mode = ProjectedNormal(pyro.param("q_loc").detach()).mode
    assert ((mode * data).sum(-1) > 0.9).all()


# --------------------------------------------------------------------------------------------------
# CUDA (skipped without a device)
@pytest.mark.cuda
def test_cuda_matches_cpu_without_host_synchronization():
    from distributions.log_radial_integral import log_radial_integral

    device = torch.device("cuda")
    # Both routes of log_prob: small batches, and (d = 3, 16,384 events) the loop over coordinates.
    for d, n in ((3, 256), (3, 16384), (128, 256)):
        loc = 3 * torch.randn(n, d)
        scale = 0.5 + torch.rand(n, d)
        value = ProjectedNormal(loc, scale).sample()
        loc_cpu = loc.clone().requires_grad_()
        expected = ProjectedNormal(loc_cpu, scale).log_prob(value)
        expected_unit = ProjectedNormal(loc).log_prob(value)
        (expected_grad,) = torch.autograd.grad(expected.sum(), loc_cpu)
        args = [x.to(device) for x in (loc, scale, value)]
        # First calls copy the quadrature nodes to the device (cached afterwards).
        ProjectedNormal(*args[:2], validate_args=False).log_prob(args[2])
        log_radial_integral(d - 1, args[2][:, 0])
        loc_cuda = args[0].clone().requires_grad_()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            pn = ProjectedNormal(loc_cuda, args[1], validate_args=False)
            actual = pn.log_prob(args[2])
            (grad,) = torch.autograd.grad(actual.sum(), loc_cuda)
            sample = pn.rsample((2,))
            log_radial_integral(d - 1, args[2][:, 0] * 100)
            # The unit-scale shortcut, and a forward pass without a graph (no derivative computed).
            unit = ProjectedNormal(args[0], validate_args=False).log_prob(args[2])
            with torch.no_grad():
                no_graph = ProjectedNormal(loc_cuda, args[1], validate_args=False).log_prob(args[2])
        finally:
            torch.cuda.set_sync_debug_mode("default")
        torch.testing.assert_close(unit.cpu(), expected_unit, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(no_graph, actual.detach(), rtol=0, atol=0)
        torch.testing.assert_close(actual.detach().cpu(), expected.detach(), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(grad.cpu(), expected_grad, rtol=1e-4, atol=1e-4)
        assert sample.shape == (2, n, d)


# --------------------------------------------------------------------------------------------------
# Entropy
def _entropy_by_scipy_quad(d, kappa):
    """-int q(theta) log p(theta) dtheta by adaptive quadrature, through the public log_prob."""
    import scipy.integrate

    pn = ProjectedNormal(torch.tensor([kappa] + [0.0] * (d - 1), dtype=torch.float64))
    log_area = log_sphere_area(d - 1) if d > 2 else math.log(2)

    def terms(theta):
        value = torch.zeros(d, dtype=torch.float64)
        value[0], value[1] = math.cos(theta), math.sin(theta)
        log_p = pn.log_prob(value).item()
        log_q = log_p + log_area + ((d - 2) * math.log(math.sin(theta)) if d > 2 else 0.0)
        return math.exp(log_q), log_p

    width = min(math.pi, 40.0 / max(kappa, 1e-12))
    points = [p for p in (1 / max(kappa, 1e-12), 3 / max(kappa, 1e-12)) if p < width]
    mass = scipy.integrate.quad(
        lambda th: terms(th)[0], 0, width, points=points or None, epsabs=0, epsrel=1e-12, limit=200
    )[0]
    cross = scipy.integrate.quad(
        lambda th: -terms(th)[0] * terms(th)[1],
        0,
        width,
        points=points or None,
        epsabs=0,
        epsrel=1e-12,
        limit=200,
    )[0]
    return cross, mass


@pytest.mark.parametrize("d,kappa", [(2, 0.5), (2, 300.0), (3, 1.0), (3, 50.0), (5, 8.0), (16, 4.0)])
def test_entropy_against_adaptive_quadrature(d, kappa):
    expected, mass = _entropy_by_scipy_quad(d, kappa)
    assert mass == pytest.approx(1.0, abs=1e-9)  # the oracle integrates the density to one
    # PN(mu, s^2 I) = PN(mu / s, I): the same entropy with any scale
    pn = ProjectedNormal(torch.tensor([0.0, 2.0 * kappa] + [0.0] * (d - 2), dtype=torch.float64), 2.0)
    assert pn.entropy().item() == pytest.approx(expected, rel=1e-8, abs=1e-8)


@pytest.mark.parametrize("d", [2, 3, 7, 128, 4096])
def test_entropy_is_the_uniforms_at_zero_loc_and_batched(d):
    loc = torch.zeros(3, d, dtype=torch.float64)
    loc[1, 0], loc[2, -1] = 1e-6, 3.0
    h = ProjectedNormal(loc, 1.0).entropy()
    assert h.shape == (3,)
    uniform = log_sphere_area(d)
    assert h[0].item() == pytest.approx(uniform, rel=1e-12, abs=1e-12)
    assert h[1].item() == pytest.approx(uniform, rel=1e-10, abs=1e-10)
    assert h[2].item() < uniform  # the uniform maximizes the entropy on the sphere
    # batch elements are independent: the third alone gives the same number
    assert ProjectedNormal(loc[2], 1.0).entropy().item() == pytest.approx(h[2].item(), rel=1e-13)


@pytest.mark.parametrize("d,kappa", [(3, 2.0), (10, 30.0), (256, 1e4)])
def test_entropy_against_monte_carlo(d, kappa):
    torch.manual_seed(0)
    pn = ProjectedNormal(torch.tensor([kappa] + [0.0] * (d - 1), dtype=torch.float64))
    log_p = pn.log_prob(pn.sample((40_000,)))
    estimate, std_err = -log_p.mean().item(), log_p.std().item() / math.sqrt(len(log_p))
    assert abs(pn.entropy().item() - estimate) < 4 * std_err
    # and the test has power: a 1% change of kappa moves the entropy by more than that
    other = ProjectedNormal(torch.tensor([1.01 * kappa] + [0.0] * (d - 1), dtype=torch.float64))
    assert abs(other.entropy().item() - estimate) > 4 * std_err or kappa < 5


def test_entropy_diagonal_scale_names_an_estimator():
    pn = ProjectedNormal(torch.ones(3), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(NotImplementedError, match=r"isotropic.*-dist.log_prob\(dist.rsample"):
        pn.entropy()


@pytest.mark.parametrize("d", [3, 16, 17])  # the event-major layout (d <= 16) and the row layout
@pytest.mark.parametrize("value_shape", [(), (5,), (2, 1, 5), (2, 4, 5)])
def test_log_prob_broadcasts_value_against_batch(d, value_shape):
    # Oracle: one event at a time (no broadcasting involved).
    gen = torch.Generator().manual_seed(d)
    loc = torch.randn(4, 5, d, dtype=torch.float64, generator=gen)
    for scale in (torch.rand(5, d, dtype=torch.float64, generator=gen) + 0.5, torch.tensor([[0.7]] * 5)):
        pn = ProjectedNormal(loc, scale.to(torch.float64))
        value = torch.nn.functional.normalize(torch.randn(value_shape + (d,), dtype=torch.float64), dim=-1)
        out = pn.log_prob(value)
        shape = torch.broadcast_shapes(value_shape, (4, 5))
        assert out.shape == shape
        locs, values = loc.expand(shape + (d,)), value.expand(shape + (d,))
        scales = scale.to(torch.float64).expand(shape + scale.shape[-1:])
        for index in itertools.product(*map(range, shape)):
            expected = ProjectedNormal(locs[index], scales[index]).log_prob(values[index])
            torch.testing.assert_close(out[index], expected, rtol=1e-13, atol=1e-13)
