"""log_radial_integral against mpmath (quadrature and the parabolic-cylinder identity) and scipy.

The oracle is ``tests/_distribution_helpers.mp_log_radial_integral``: 30-digit tanh-sinh quadrature of the
definition. It is itself checked here against two other routes (mpmath.pcfd and scipy.special.pbdv).
"""

import itertools
import math

import mpmath
import numpy as np
import pytest
import scipy.special
import torch
from _distribution_helpers import mp_log_radial_integral, mp_log_radial_integral_pcfd, rel_err

from distributions.log_radial_integral import log_radial_integral, log_radial_integral_and_derivative

# Every regime of the scheme: k = 0 (log_ndtr), 1..15 (recurrences, both directions), 16 (the switch),
# quadrature with every node count of the float64 table, and the largest k.
K_FAST = [0, 1, 2, 5, 15, 16, 17, 30, 63, 127, 1023, 4095]
T_FAST = [-1e7, -1e4, -30.0, -2.5, -1e-3, 0.0, 0.7, 4.0, 60.0, 1e7]

K_SLOW = list(range(0, 21)) + [24, 28, 31, 40, 63, 80, 127, 200, 255, 400, 511, 1023, 2047, 4095]
T_SLOW = sorted(
    {0.0}
    | {s * v for s in (-1, 1) for v in (1e-6, 0.1, 0.5, 1, 1.5, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100)}
    | {s * v for s in (-1, 1) for v in (300, 1e3, 1e4, 1e5, 1e6, 1e7)}
)

TOL64 = 1e-12  # measured worst case about 1.5e-13


def _ours(k, t, dtype=torch.float64):
    return log_radial_integral(k, torch.tensor([t], dtype=dtype)).item()


# --------------------------------------------------------------------------------------------------
# The oracle itself
@pytest.mark.parametrize(
    "k,t",
    [(0, 0.0), (0, -5.0), (1, -30.0), (2, 3.0), (5, 2.5), (20, -7.0), (127, -3.0), (127, 10.0), (1023, 0.0)],
)
def test_oracle_quadrature_matches_parabolic_cylinder(k, t):
    quad = mp_log_radial_integral(k, t)
    pcfd = mp_log_radial_integral_pcfd(k, t)
    assert abs(quad - pcfd) <= mpmath.mpf(10) ** -20 * max(1, abs(pcfd))


@pytest.mark.parametrize("k,t", [(0, 0.3), (1, -2.0), (2, 1.5), (3, -4.0), (7, 5.0), (12, -1.0), (20, 2.0)])
def test_oracle_matches_scipy_pbdv(k, t):
    d_value, _ = scipy.special.pbdv(-(k + 1), -t)
    scipy_log_j = math.lgamma(k + 1) - t * t / 4 + math.log(d_value)
    assert float(mp_log_radial_integral(k, t)) == pytest.approx(scipy_log_j, rel=1e-10, abs=1e-10)


# --------------------------------------------------------------------------------------------------
# float64 accuracy
@pytest.mark.parametrize("k", K_FAST)
def test_float64_against_mpmath(k):
    worst = max(rel_err(_ours(k, t), float(mp_log_radial_integral(k, t))) for t in T_FAST)
    assert worst <= TOL64


@pytest.mark.slow
@pytest.mark.parametrize("k", K_SLOW)
def test_float64_against_mpmath_dense(k):
    worst = max(rel_err(_ours(k, t), float(mp_log_radial_integral(k, t))) for t in T_SLOW)
    assert worst <= TOL64


def test_closed_forms_small_k():
    # J_0 = sqrt(2 pi) Phi(t); J_1 = t J_0 + exp(-t^2/2); J_2 = t J_1 + J_0: exact where they do not cancel.
    t = torch.linspace(0.0, 8.0, 33, dtype=torch.float64)
    j0 = math.sqrt(2 * math.pi) * torch.special.ndtr(t)
    j1 = t * j0 + torch.exp(-0.5 * t * t)
    j2 = t * j1 + j0
    for k, j in enumerate((j0, j1, j2)):
        torch.testing.assert_close(log_radial_integral(k, t), j.log(), rtol=1e-14, atol=1e-14)


def test_vectorized_over_shapes_and_batches():
    t = torch.tensor([[-40.0, -1.0, 0.0], [0.5, 3.0, 200.0]], dtype=torch.float64)
    for k in (0, 3, 16, 200):
        out = log_radial_integral(k, t)
        assert out.shape == t.shape and out.dtype == torch.float64
        expected = torch.tensor([[_ours(k, x) for x in row] for row in t.tolist()], dtype=torch.float64)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert log_radial_integral(4, torch.empty(0, 7)).shape == (0, 7)


# --------------------------------------------------------------------------------------------------
# float32
@pytest.mark.parametrize("k", [0, 1, 2, 7, 15, 16, 40, 127, 1023, 4095])
def test_float32_against_mpmath(k):
    for t in T_FAST:
        t32 = float(np.float32(t))  # the reference is taken at the float32 input
        ref = float(mp_log_radial_integral(k, t32))
        assert rel_err(_ours(k, t32, torch.float32), ref) <= 2e-5, t


@pytest.mark.parametrize("k", [0, 1, 2, 15, 16, 127, 4095])
def test_float32_finite_for_huge_t(k):
    # -t^2/2 stays representable in float32 up to |t| ~ 2.6e19; beyond that -inf is the right answer.
    t = torch.tensor([-1e19, -1e15, -1e10, -1e7, 1e7, 1e10, 1e15, 1e19], dtype=torch.float32)
    out = log_radial_integral(k, t)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), log_radial_integral(k, t.double()), rtol=1e-6, atol=0)
    assert log_radial_integral(k, torch.tensor([-1e30])).item() == -math.inf


def test_low_precision_inputs_are_evaluated_in_float32():
    t = torch.tensor([-3.0, 0.0, 5.0], dtype=torch.bfloat16)
    out = log_radial_integral(3, t)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), log_radial_integral(3, t.float()).bfloat16().float())


# --------------------------------------------------------------------------------------------------
# Gradients
def _mp_dlogj(k, t):
    """d/dt log J_k = k J_{k-1} / J_k (integration by parts), and phi/Phi-like exp(-t^2/2) / J_0 for k = 0."""
    with mpmath.workdps(30):
        if k == 0:
            return mpmath.exp(-(mpmath.mpf(t) ** 2) / 2 - mp_log_radial_integral(0, t))
        return k * mpmath.exp(mp_log_radial_integral(k - 1, t) - mp_log_radial_integral(k, t))


@pytest.mark.parametrize("k", [0, 1, 3, 15, 16, 127, 4095])
def test_gradient_against_mpmath(k):
    ts = [-1e7, -1e4, -3.0, -1e-3, 0.0, 1e-3, 2.0, 50.0, 1e4]
    t = torch.tensor(ts, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_radial_integral(k, t).sum(), t)
    for value, g in zip(ts, grad.tolist(), strict=True):
        ref = float(_mp_dlogj(k, value))
        assert abs(g - ref) <= 1e-10 * abs(ref) + 1e-300, (value, g, ref)


@pytest.mark.parametrize("k", [0, 1, 2, 9, 16, 33, 500])
def test_gradcheck(k):
    t = torch.tensor([-60.0, -2.0, -0.3, 0.0, 0.4, 3.0, 80.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: log_radial_integral(k, x), (t,))


@pytest.mark.parametrize("k", [0, 1, 2, 9, 15, 16, 40])
def test_second_derivative_gradgradcheck(k):
    # Both sides of every switch: closed form, the backward-recurrence tail, the quadrature.
    t = torch.tensor([-30.0, -2.5, -0.3, 0.0, 0.4, 3.0, 40.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda x: log_radial_integral(k, x), (t,))


@pytest.mark.parametrize("k", [0, 2, 15])
def test_second_derivative_against_mpmath(k):
    # (log J_k)'' = d/dt (J_{k+1}/J_k - t) = J_{k+2}/J_k - (J_{k+1}/J_k)^2 - 1 (J_k' = J_{k+1} - t J_k).
    ts = [-40.0, -3.0, -0.5, 0.0, 1.5, 30.0]
    t = torch.tensor(ts, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(log_radial_integral(k, t).sum(), t, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), t)
    for value, got in zip(ts, second.tolist(), strict=True):
        with mpmath.workdps(40):
            lj = [mp_log_radial_integral(k + i, value) for i in range(3)]
            ref = float(mpmath.exp(lj[2] - lj[0]) - mpmath.exp(2 * (lj[1] - lj[0])) - 1)
        assert abs(got - ref) <= 1e-8 * max(1.0, abs(ref)), (value, got, ref)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [0, 1, 3, 15, 16, 127])
def test_log_radial_integral_and_derivative(k, dtype):
    ts = [-1e4, -20.0, -3.0, -0.2, 0.0, 0.7, 5.0, 1e3]
    log_j, deriv = log_radial_integral_and_derivative(k, torch.tensor(ts, dtype=dtype))
    assert log_j.dtype == deriv.dtype == dtype
    # Without a graph (the closed form skips its derivative) and with one (the autograd Function): the same.
    torch.testing.assert_close(log_j, log_radial_integral(k, torch.tensor(ts, dtype=dtype)), rtol=0, atol=0)
    recorded = log_radial_integral(k, torch.tensor(ts, dtype=dtype, requires_grad=True))
    assert recorded.requires_grad
    torch.testing.assert_close(log_j, recorded.detach(), rtol=0, atol=0)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    for value, g in zip(ts, deriv.tolist(), strict=True):
        ref = float(_mp_dlogj(k, value))
        assert abs(g - ref) <= tol * abs(ref) + 1e-300, (value, g, ref)
    with pytest.raises(TypeError, match="float32 or float64"):
        log_radial_integral_and_derivative(k, torch.zeros(2, dtype=torch.float16))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_scaled_and_unscaled_closed_forms_agree(dtype):
    # On the CPU the closed form skips the scaling of its polynomials when |t|^k cannot overflow; traced
    # code and CUDA always scale. Both are checked here on the same inputs, value and derivative.
    from distributions.log_radial_integral import _T_CLOSED, _closed_form

    for k in range(1, 16):
        t = torch.linspace(-_T_CLOSED[dtype][k], 60.0, 301, dtype=dtype)
        scaled = _closed_form(k, t)
        unscaled = _closed_form(k, t, abs_max=60.0)
        tol = 1e-13 if dtype == torch.float64 else 3e-6
        for a, b in zip(scaled, unscaled, strict=True):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_gradient_float32_far_tail():
    # torch's own log_ndtr gradient is 1% off at t = -1e7; ours uses the Mills-ratio form there.
    t = torch.tensor([-1e7, -1e3], dtype=torch.float32, requires_grad=True)
    for k in (0, 1, 5):
        (grad,) = torch.autograd.grad(log_radial_integral(k, t).sum(), t)
        ref = torch.tensor([float(_mp_dlogj(k, x)) for x in t.tolist()])
        torch.testing.assert_close(grad, ref, rtol=1e-5, atol=0)


# --------------------------------------------------------------------------------------------------
# Properties
@pytest.mark.parametrize("k", [1, 2, 6, 14])
def test_recurrence_holds_for_negative_t(k):
    # J_{k+1} = t J_k + k J_{k-1}: for t < 0 an identity between our three values that no single
    # branch of the scheme evaluates directly (there it cancels).
    t = torch.tensor([-0.2, -1.0, -4.0], dtype=torch.float64)
    lhs = log_radial_integral(k + 1, t).exp()
    rhs = t * log_radial_integral(k, t).exp() + k * log_radial_integral(k - 1, t).exp()
    torch.testing.assert_close(lhs, rhs, rtol=1e-11, atol=0)


def test_increasing_in_t_and_k_consistent_with_jensen():
    # d/dt log J_k > 0 (in float64 the increments of log J_0 underflow to 0 beyond t ~ 8); and by
    # Cauchy-Schwarz J_k^2 <= J_{k-1} J_{k+1} (log-convexity in k).
    t = torch.linspace(-50, 50, 101, dtype=torch.float64)
    for k in (0, 4, 16, 300):
        increments = log_radial_integral(k, t).diff()
        assert (increments >= 0).all() and (increments[:55] > 0).all()
    for k in itertools.chain(range(1, 20), (100, 1000)):
        lo, mid, hi = (log_radial_integral(j, t) for j in (k - 1, k, k + 1))
        assert (2 * mid <= lo + hi + 1e-12 * mid.abs()).all()


@pytest.mark.parametrize("k", [-1, 1.5, True, "3"])
def test_bad_k_raises(k):
    with pytest.raises(ValueError, match="k must be a non-negative integer"):
        log_radial_integral(k, torch.zeros(2))


# --------------------------------------------------------------------------------------------------
# The closed form (k < 16) and its switch to the tail recurrence
@pytest.mark.parametrize("k", range(0, 16))
def test_closed_form_switch_points_against_mpmath(k):
    # Just above and just below -_T_CLOSED[dtype][k] the two branches meet; both must be accurate there, as
    # must the closed form's worst case of cancellation (right at the switch, where C_k is largest).
    from distributions.log_radial_integral import _T_CLOSED

    for dtype, tol in ((torch.float64, TOL64), (torch.float32, 2e-5)):
        switch = _T_CLOSED[dtype][k]
        ts = [-switch * (1 - 1e-6), -switch * (1 + 1e-6)] + ([-2 * switch] if dtype == torch.float64 else [])
        t = torch.tensor(ts, dtype=dtype, requires_grad=True)
        out = log_radial_integral(k, t)
        (grad,) = torch.autograd.grad(out.sum(), t)
        for x, value, g in zip(t.tolist(), out.tolist(), grad.tolist(), strict=True):
            assert rel_err(value, float(mp_log_radial_integral(k, x))) <= tol, (dtype, x)
            ref = float(_mp_dlogj(k, x))
            assert abs(g - ref) <= (1e-10 if dtype == torch.float64 else 1e-4) * abs(ref), (dtype, x)


def test_k_as_a_zero_dim_integer_tensor():
    # Under torch.jit.trace an event size arrives as a 0-d integer tensor.
    t = torch.tensor([-3.0, 0.5], dtype=torch.float64)
    expected = log_radial_integral(2, t)
    torch.testing.assert_close(log_radial_integral(torch.tensor(2), t), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="k must be a non-negative integer"):
        log_radial_integral(torch.tensor(2.0), t)
