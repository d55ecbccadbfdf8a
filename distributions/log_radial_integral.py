r"""The radial integral of the projected normal density, in log space.

.. math::

    J_k(t) = \int_0^\infty r^k \exp\bigl(-\tfrac12 (r - t)^2\bigr)\,dr,
    \qquad k \in \{0, 1, 2, \dots\},\ t \in \mathbb{R},

which equals :math:`\Gamma(k+1)\, e^{-t^2/4} D_{-k-1}(-t)` with :math:`D` the parabolic-cylinder function.
:func:`log_radial_integral` returns :math:`\log J_k(t)` elementwise, differentiably in ``t``, for every
integer :math:`k \ge 0` (the projected normal on :math:`S^{d-1}` needs :math:`k = d - 1`) and every finite
``t`` whose result is representable (for :math:`t \to -\infty`, :math:`\log J_k \approx -t^2/2`).

Why this scheme
---------------
The obvious closed forms (:math:`J_0 = \sqrt{2\pi}\,\Phi(t)`, :math:`J_1 = t J_0 + e^{-t^2/2}`,
:math:`J_{k+1} = t J_k + k J_{k-1}`) overflow for large ``k`` or ``|t|`` and cancel catastrophically for
``t < 0`` (the wanted solution of the recurrence is the *minimal* one there). So we work in log space with
three pieces, each used only where it is accurate to a few ulps:

1. ``k = 0``: :math:`\log J_0 = \tfrac12\log(\pi/2) + \log\operatorname{erfc}(-t/\sqrt2)` and, in the far
   left tail, the Mills-ratio form of item 3, whose derivative :math:`\varphi/\Phi` does not cancel
   (``torch.special.log_ndtr``'s autograd derivative, ``exp(log phi - log Phi)``, is 1% off at ``t = -1e7``).

2. ``k >= 16``: Gauss--Hermite quadrature centred on the Laplace point, in the variable :math:`s = \log r`.
   The integrand :math:`\exp g(s)`, :math:`g(s) = (k+1)s - (e^s - t)^2/2`, is log-concave with its mode at
   the root of :math:`r^2 - t r - (k+1) = 0`, i.e. :math:`r_* = (t + D)/2`, :math:`D = \sqrt{t^2 + 4(k+1)}`
   (in closed form: no Newton steps), and curvature :math:`-g''(s_*) = r_* D`. With
   :math:`s = s_* + \tau x`, :math:`\tau = \sqrt{2/(r_* D)}`,

   .. math::

       \log J_k = g(s_*) + \log\tau + \operatorname{logsumexp}_i\bigl(\log w_i + x_i^2
                  - (k+1)(\epsilon_i - \tau x_i) - \tfrac12 (r_* \epsilon_i)^2\bigr),
       \qquad \epsilon_i = \operatorname{expm1}(\tau x_i),

   where :math:`(x_i, w_i)` are the Hermite nodes and weights and we used :math:`r_*(r_* - t) = k + 1` to
   remove the large terms analytically. Every quantity is formed without cancellation:
   :math:`\delta = r_* - t` is :math:`2(k+1)/(D + |t|)` for ``t > 0`` and :math:`(D + |t|)/2` otherwise, and
   :math:`r_* = (k+1)/\delta`. After the change of variable the integrand's departure from a Gaussian is
   governed by :math:`1/\sqrt{k+1}` uniformly in ``t`` (for :math:`t\to\pm\infty` it tends to a Gaussian,
   resp. to a log-gamma density of shape ``k + 1``), so the number of nodes needed depends on ``k`` only.
   The node counts in :data:`_NODES` were chosen by comparing with a 200-node rule and with ``mpmath``
   over ``t`` in ``[-1e7, 1e7]``: the relative error of :math:`\log J` is below about ``1e-13`` in float64
   and ``3e-8`` in float32. At ``d = 128`` this is 16 nodes in float64 and 10 in float32.

3. ``0 <= k < 16`` (the everyday ``d <= 16``; the quadrature would need many nodes, the left tail in ``s``
   being only exponential): the closed form :math:`J_k = J_0 (P_k(t) + Q_k(t)\,h)` with
   :math:`J_0 = \sqrt{\pi/2}\,\operatorname{erfc}(-t/\sqrt2)`, :math:`h = e^{-t^2/2}/J_0 = \varphi/\Phi`
   and the polynomials of the recurrence :math:`J_{k+1} = t J_k + k J_{k-1}` (:math:`P_0 = 1, P_1 = t`,
   :math:`Q_0 = 0, Q_1 = 1`), as they are where :math:`|t|^k` cannot overflow (one ``log``; a host check,
   on the CPU outside tracing) and otherwise carried scaled by :math:`\max(|t|, 1)^j`. For
   ``t >= 0`` every term is positive (no cancellation); for ``t < 0`` the terms alternate and the form
   loses :math:`C_k(-t)` ulps, so it is used only for ``t >= -_T_CLOSED[dtype][k]``, where
   :math:`C_k \le 200` (float64) or ``20`` (float32). Below that (the far side of the sphere) the tail is
   the recurrence backward from ``M = 16``, where the quadrature gives :math:`\log J_M` and
   :math:`\rho_{M+1} = J_{M+1}/J_M` (the quadrature mean of ``r``): :math:`\rho_j = j / (\rho_{j+1} - t)`
   (a sum of positive terms; errors are damped), :math:`\log J_k = \log J_M - \sum_{j=k+1}^{M}\log\rho_j`;
   for ``k = 0`` the Mills-ratio form :math:`J_0 = e^{-t^2/2}\sqrt{\pi/2}\operatorname{erfcx}(-t/\sqrt2)`.
   The derivative is analytic, :math:`\frac{d}{dt}\log J_k = k J_{k-1}/J_k = J_{k+1}/J_k - t`
   (integration by parts; :math:`h` for ``k = 0``; :math:`\rho_{k+1} - t` in the tail), from the same
   numbers (:class:`_SmallK`, :func:`log_radial_integral_and_derivative`), so the backward pass costs one
   multiplication; under ``create_graph`` it is recomputed with differentiable operations, so second
   derivatives are exact too. On the CPU the tail is evaluated only on the elements that need it (a host check
   costs nothing there); on CUDA and under ``torch.jit.trace``/``torch.compile`` both branches run on
   sanitized copies of ``t`` and are merged with ``torch.where`` (no host synchronisation, no branch baked
   into a trace, and the unused branch never sees values that would give ``nan`` gradients).

Gradients of the quadrature (``k >= 16``) come from autograd (the formulas are smooth in ``t``; the
branches agree to rounding where they meet); :func:`log_radial_integral_and_derivative` forms them from
the quadrature's mean of ``r`` without cancellation. Measured against ``mpmath``
(``tests/test_log_radial_integral.py``, ``k`` in ``0..4095``, ``|t| <= 1e7``, and both sides of every
switch point): ``|error| <= 1.5e-13 * max(1, |log J|)`` in float64, and ``<= 5e-6 * max(1, |log J|)``
in float32; the derivative agrees to ``1e-10`` relative in float64.

The Gauss--Hermite rules are computed with numpy once, at import (numpy must stay out of traced code), and
converted per dtype and device on first use.

Inputs of dtype float16/bfloat16 are evaluated in float32 and cast back.
"""

from __future__ import annotations

import math
from typing import Literal, overload

import numpy as np
import torch
from torch import Tensor

from distributions.tracing import is_traced

__all__ = ["log_radial_integral", "log_radial_integral_and_derivative"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

# Below this k the recurrences of item 3 are used; at k = _K_SMALL the quadrature is exact enough.
_K_SMALL = 16

# (k_min, nodes): use the first row with k >= k_min. Chosen from the error study in the module docstring.
_NODES = {
    torch.float64: (
        (1023, 12),
        (400, 14),
        (127, 16),
        (80, 20),
        (40, 24),
        (28, 28),
        (20, 32),
        (14, 40),
        (0, 48),
    ),
    torch.float32: ((160, 8), (48, 10), (32, 12), (20, 14), (14, 16), (0, 20)),
}


def _hermite_rule_f64(n: int) -> tuple[Tensor, Tensor]:
    x, w = np.polynomial.hermite.hermgauss(n)
    x_t = torch.as_tensor(x, dtype=torch.float64)
    # x**2 is added back because the rule integrates exp(-x**2) * f(x) and we supply exp(G) directly.
    return x_t, x_t.square() + torch.as_tensor(np.log(w), dtype=torch.float64)


# Every rule the tables use, computed once at import: numpy must stay out of traced and compiled code.
_GH_RULES = {n: _hermite_rule_f64(n) for n in sorted({n for rows in _NODES.values() for _, n in rows})}
_GH_CACHE: dict[tuple[int, torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}


def _hermite_rule(n: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Gauss--Hermite nodes ``x`` and ``x**2 + log(w)`` (weight ``exp(-x**2)``), cached per dtype/device."""
    x, offset = _GH_RULES[n]
    if torch.jit.is_tracing():
        # A cache filled during one trace would make the next trace of the same code record fewer ops
        # (torch.jit.trace's check compares them); the conversion of 2 x 48 numbers is cheap.
        return x.to(dtype=dtype, device=device), offset.to(dtype=dtype, device=device)
    key = (n, dtype, device)
    rule = _GH_CACHE.get(key)
    if rule is None:
        rule = _GH_CACHE[key] = (x.to(dtype=dtype, device=device), offset.to(dtype=dtype, device=device))
    return rule


def _num_nodes(k: int, dtype: torch.dtype) -> int:
    for k_min, n in _NODES[dtype]:
        if k >= k_min:
            return n
    raise AssertionError("unreachable")


def _laplace_quadrature(k: int, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Laplace-centred Gauss--Hermite estimate of ``log J_k(t)`` (item 2 of the module docstring), with the
    numbers :func:`_log_j_quadrature_with_ratio` reuses: ``(log_j, g, h, r_*, delta)``, ``g`` and ``h`` of
    shape ``t.shape + (nodes,)``."""
    a = float(k + 1)
    x, offset = _hermite_rule(_num_nodes(k, t.dtype), t.dtype, t.device)
    # sqrt(t^2 + 4a) without overflow; new_full rather than new_tensor, which would copy from the host.
    big_d = torch.hypot(t, t.new_full((), 2.0 * math.sqrt(a)))
    # delta = r* - t, written in the form that does not cancel on each side of t = 0. The branches see
    # sanitized copies of t (torch.where, not clamp, whose gradient vanishes at the boundary t = 0).
    positive = t > 0
    zero = t.new_zeros(())
    delta = torch.where(
        positive,
        (2.0 * a) / (big_d + torch.where(positive, t, zero)),
        0.5 * (big_d - torch.where(positive, zero, t)),
    )
    r = a / delta  # the mode r*, since r* (r* - t) = a
    half_curvature = 0.5 * r * big_d  # |g''(s*)| / 2; tau = sqrt(2 / |g''(s*)|) = rsqrt(half_curvature)
    y = torch.rsqrt(half_curvature).unsqueeze(-1) * x  # (..., n): tau * x_i
    em1 = torch.expm1(y)
    h = r.unsqueeze(-1) * em1  # r_* expm1(tau x_i) = e^{s_i} - r_*
    # g_i = x_i^2 + log w_i - a (expm1(y_i) - y_i) - h_i^2 / 2, with fused kernels (the in-place add is
    # safe for autograd: addcmul's backward needs h, not its output).
    g = torch.addcmul(offset, h, h, value=-0.5).add_(em1 - y, alpha=-a)
    log_j = a * torch.log(r) - 0.5 * delta.square() - 0.5 * torch.log(half_curvature) + torch.logsumexp(g, -1)
    return log_j, g, h, r, delta


def _log_j_quadrature(k: int, t: Tensor) -> Tensor:
    """``log J_k(t)`` by :func:`_laplace_quadrature`."""
    return _laplace_quadrature(k, t)[0]


def _log_j_quadrature_with_ratio(k: int, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``log J_k(t)``, ``J_{k+1}(t) / J_k(t) = E[r]`` and ``d/dt log J_k = E[r] - t`` from the same nodes,
    each formed without cancellation: ``E[r] = r_* + E[r - r_*]`` (small for ``t << 0``) and
    ``E[r] - t = delta + E[r - r_*]`` (small for ``t >> 0``)."""
    log_j, g, h, r, delta = _laplace_quadrature(k, t)
    # E[r - r_*] under the normalized quadrature weights (r_i - r_* = h_i).
    mean_h = torch.einsum("...n,...n->...", torch.softmax(g, dim=-1), h)
    return log_j, r + mean_h, delta + mean_h


# Closed form for small k (item 3 of the module docstring): for t >= -_T_CLOSED[dtype][k], the tail below.
# Chosen so that the cancellation factor C_k(x) = (R P_k(x) + Q_k(x)) / (R P_k(x) - Q_k(x)) of the t < 0
# terms (R the Mills ratio, x = -t) stays below 200 in float64 and 20 in float32, so the closed form loses
# at most C_k ulps (computed with mpmath). k = 0 has no cancellation; its bound 9 keeps erfc(-t/sqrt 2) far
# from underflow (float32: erfc(6.4) ~ 1e-19), the tail uses the scaled erfcx below.
_T_CLOSED = {
    torch.float64: (9.0, 9.8, 3.4, 2.25, 1.8, 1.5, 1.35, 1.2, 1.1, 1.0, 0.95, 0.9, 0.85, 0.8, 0.8, 0.75),
    torch.float32: (9.0, 2.8, 1.5, 1.1, 0.95, 0.8, 0.7, 0.65, 0.6, 0.55, 0.5, 0.5, 0.45, 0.45, 0.4, 0.4),
}
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_LOG_SQRT_2_OVER_PI = 0.5 * math.log(2 / math.pi)
_LOG_SQRT_HALF_PI = 0.5 * math.log(0.5 * math.pi)
_SQRT_HALF = math.sqrt(0.5)


# |t|^k below this keeps P_k(t) and J_k(t) / J_0(t) = P_k + Q_k h finite (P_k(t) <= (|t| + sqrt(k))^k, at
# most twice |t|^k at the cap, and e * ratio <= 2 of that): the unscaled closed form is safe.
_POWER_CAP = {torch.float32: 1e32, torch.float64: 1e300}


def _closed_form(
    k: int, t: Tensor, abs_max: float | None = None, with_derivative: bool = True
) -> tuple[Tensor, Tensor | None]:
    """``log J_k(t)`` and ``d/dt log J_k(t)`` from :math:`J_k = J_0 (P_k + Q_k h)` for ``t >= -_T_CLOSED``.

    ``J_0 = sqrt(pi/2) erfc(-t/sqrt 2)`` and ``h = exp(-t^2/2) / J_0 = phi(t) / Phi(t)`` with the plain
    ``erfc`` (a tenth of the cost of ``log_ndtr`` or ``erfcx``, and accurate to a few ulps where it does not
    underflow, which ``t >= -9`` guarantees); ``d/dt log J_k = k J_{k-1} / J_k`` (integration by parts)
    comes from the same numbers. Where ``|t|^k`` cannot overflow (a host check, so on the CPU outside
    tracing) the polynomials are used as they are and ``log J_k`` costs one ``log``; otherwise they are
    carried scaled, ``p_j = P_j(t) / s^j`` and ``q_j = Q_j(t) / s^j`` with ``s = max(|t|, 1)``, whose
    recurrence ``p_{j+1} = (t/s) p_j + j s^{-2} p_{j-1}`` cannot overflow (``t^15`` would in float32). The
    two agree to rounding; ``abs_max``, the largest ``|t|`` when the caller knows it, selects the first.
    Without ``with_derivative`` the derivative is ``None`` (not computed). Plain differentiable ops:
    autograd through them gives the second derivative (see :class:`_SmallK`).
    """
    e = torch.special.erfc(t * -_SQRT_HALF)  # 2 Phi(t)
    h = torch.exp((t * t).mul_(-0.5).add_(_LOG_SQRT_2_OVER_PI)) / e  # exp saves its output: no mul_
    if k == 0:
        return torch.log(e).add_(_LOG_SQRT_HALF_PI), h if with_derivative else None
    eps2: Tensor | float
    scale: Tensor | None
    if abs_max is not None and abs_max <= _POWER_CAP[t.dtype] ** (1 / k):
        x, eps2, scale = t, 1.0, None
    else:
        scale = t.abs().clamp_(min=1.0)
        eps = torch.reciprocal(scale)
        x, eps2 = t * eps, eps * eps
    # (P_0, P_1) = (1, x) and (Q_0, Q_1) = (0, 1/s), with x = t/s and 1/s = 1 when unscaled; the step is
    # P_{j+1} = x P_j + j s^-2 P_{j-1}. Python scalars until the first step.
    p: Tensor = x
    p_prev: Tensor | float = 1.0
    q: Tensor | float = 1.0 if scale is None else eps
    q_prev: Tensor | float = 0.0
    if k > 1:
        # P_2 = x^2 + s^-2, Q_2 = x Q_1 (= x unscaled)
        p_prev, p, q_prev, q = p, (x * x).add_(eps2), q, x * q if torch.is_tensor(q) else x
        for j in range(2, k):
            p_prev, p = p, _recurrence_step(x, p, p_prev, eps2, j)
            q_prev, q = q, _recurrence_step(x, q, q_prev, eps2, j)
    ratio = _plus_times(p, q, h)  # J_k / (J_0 s^k) > 0
    # One log for J_0 and the ratio (their product is J_k / (sqrt(pi/2) s^k), within range).
    log_j = torch.log(e * ratio)
    if scale is not None:
        log_j = log_j.add_(torch.log(scale), alpha=k)
    log_j = log_j.add_(_LOG_SQRT_HALF_PI)
    if not with_derivative:
        return log_j, None
    # k J_{k-1} / J_k = k (P_{k-1} + Q_{k-1} h) / (P_k + Q_k h), and the same over s for the scaled form
    k_j_prev = _plus_times(p_prev, q_prev, h).mul_(k) if k > 1 else float(k)  # (P_0, Q_0) = (1, 0)
    return log_j, k_j_prev / (ratio if scale is None else scale * ratio)


def _plus_times(p: Tensor | float, q: Tensor | float, h: Tensor) -> Tensor:
    """``p + q h`` where ``q`` may be the Python number 1 (unscaled ``Q_1``) and ``p`` a number."""
    if isinstance(q, Tensor):
        return torch.addcmul(p, q, h) if isinstance(p, Tensor) else q * h + p
    return p + h if q == 1.0 else p + q * h


def _recurrence_step(x: Tensor, p: Tensor, p_prev: Tensor | float, eps2: Tensor | float, j: int) -> Tensor:
    """``x p + j eps2 p_prev``: one step of the (scaled) three-term recurrence; ``p_prev`` may be the
    number ``Q_1 = 1`` only unscaled (``eps2 = 1``)."""
    if isinstance(p_prev, float):
        return (x * p).add_(j * p_prev)
    if isinstance(eps2, float):  # unscaled: eps2 = 1
        return torch.addcmul(p_prev * float(j), x, p)
    return torch.addcmul(x * p, eps2, p_prev, value=float(j))


def _log_j0_tail(t: Tensor) -> tuple[Tensor, Tensor]:
    """``log J_0`` and its derivative for ``t < 0`` in Mills-ratio form: ``J_0 = e^{-t^2/2} sqrt(pi/2)
    erfcx(-t/sqrt 2)`` is accurate down to ``t = -1e19`` (``log_ndtr``'s own derivative, formed as
    ``exp(log phi - log Phi)``, is 1% off at ``t = -1e7``)."""
    ex = torch.special.erfcx(t * -_SQRT_HALF)
    return torch.log(ex) + _LOG_SQRT_HALF_PI - 0.5 * t.square(), _SQRT_2_OVER_PI / ex


def _log_j_tail(k: int, t: Tensor) -> tuple[Tensor, Tensor]:
    """``log J_k(t)`` and its derivative for ``t < -_T_CLOSED`` and ``k < _K_SMALL``: Mills-ratio form for
    ``k = 0``, otherwise the backward recurrence from the quadrature at ``_K_SMALL`` (stable there), whose
    last ratio gives the derivative, ``d/dt log J_k = J_{k+1}/J_k - t``."""
    if k == 0:
        return _log_j0_tail(t)
    log_jm, rho, _ = _log_j_quadrature_with_ratio(_K_SMALL, t)
    acc = torch.zeros_like(t)
    for j in range(_K_SMALL, k, -1):
        rho = j / (rho - t)  # rho_j = J_j / J_{j-1} from rho_{j+1}
        acc = acc + torch.log(rho)
    return log_jm - acc, rho - t


@overload
def _log_j_small(k: int, t: Tensor, with_derivative: Literal[True] = True) -> tuple[Tensor, Tensor]: ...


@overload
def _log_j_small(k: int, t: Tensor, with_derivative: bool) -> tuple[Tensor, Tensor | None]: ...


def _log_j_small(k: int, t: Tensor, with_derivative: bool = True) -> tuple[Tensor, Tensor | None]:
    """``log J_k`` and its derivative (``None`` without ``with_derivative``) for ``0 <= k < _K_SMALL``: the
    closed form, :func:`_log_j_tail` below ``-_T_CLOSED``. Plain differentiable ops (the branches see
    sanitized copies of ``t``)."""
    threshold = _T_CLOSED[t.dtype][k]
    if t.device.type == "cpu" and not is_traced() and t.numel():
        # On the CPU a data-dependent branch costs nothing: one reduction decides whether there is a tail
        # to evaluate (only where it is needed, by indices: usually a handful of elements) and whether the
        # closed form may go unscaled.
        t_min, t_max = (float(x) for x in torch.aminmax(t.detach()))
        has_tail = t_min < -threshold
        recording = torch.is_grad_enabled() and t.requires_grad
        # clamp's gradient passes at t = -threshold itself, so both sides of the switch are differentiable.
        # Without a graph the closed form runs on t itself: its values at the tail are overwritten below.
        t_closed = t.clamp(min=-threshold) if has_tail and recording else t
        log_j, grad = _closed_form(k, t_closed, max(-t_min, t_max), with_derivative)
        if has_tail:
            flat = t.reshape(-1)
            index = torch.nonzero(flat < -threshold).squeeze(1)
            t_tail = flat.index_select(0, index)
            tail_grad: Tensor | None
            if t.dtype == torch.float32:
                # The float32 switch points are close to 0 (k = 15: -0.4); the few elements beyond go
                # through the float64 scheme, whose closed form reaches much further than the quadrature
                # tail at a fraction of its cost.
                tail_log_j, tail_grad = _log_j_small(k, t_tail.double(), with_derivative)
                tail_log_j, tail_grad = tail_log_j.float(), None if tail_grad is None else tail_grad.float()
            else:
                tail_log_j, tail_grad = _log_j_tail(k, t_tail)
            log_j = _put(log_j, index, tail_log_j, recording).view_as(t)
            if grad is not None and tail_grad is not None:
                grad = _put(grad, index, tail_grad, recording).view_as(t)
        return log_j, grad
    log_j, grad = _closed_form(k, t.clamp(min=-threshold), with_derivative=with_derivative)
    # Without host synchronisation (CUDA) or under a tracer (whose graph must not bake in a branch): both,
    # on sanitized copies, so that the unused one never produces nan values or gradients.
    tail = t < -threshold
    tail_log_j, tail_grad = _log_j_tail(k, torch.where(tail, t, -threshold))
    return torch.where(tail, tail_log_j, log_j), None if grad is None else torch.where(tail, tail_grad, grad)


def _put(x: Tensor, index: Tensor, values: Tensor, recording: bool) -> Tensor:
    """``x`` flattened with ``values`` at ``index``: in place where no graph is recorded (a copy of a whole
    batch saved), out of place otherwise (autograd needs the original)."""
    flat = x.reshape(-1)
    return flat.index_copy(0, index, values) if recording else flat.index_copy_(0, index, values)


class _SmallK(torch.autograd.Function):
    """``log J_k`` for ``k < _K_SMALL`` with its analytic derivative: a backward through the recurrence would
    cost as much as the forward again. Under ``create_graph`` the backward evaluates the derivative with
    differentiable ops, so second derivatives are exact too."""

    @staticmethod
    def forward(ctx, t: Tensor, k: int) -> Tensor:
        log_j, grad = _log_j_small(k, t)
        ctx.k = k
        ctx.save_for_backward(t, grad)
        return log_j

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        t, grad = ctx.saved_tensors
        if torch.is_grad_enabled():
            grad = _log_j_small(ctx.k, t)[1]
        return grad_out * grad, None


def log_radial_integral_and_derivative(k: int, t: Tensor) -> tuple[Tensor, Tensor]:
    r"""Return :math:`\log J_k(t)` and :math:`\frac{d}{dt}\log J_k(t) = J_{k+1}(t)/J_k(t) - t` elementwise.

    For callers that assemble their own backward pass (e.g. :class:`~distributions.ProjectedNormal`); the
    two come from the same numbers, so this costs about as much as :func:`log_radial_integral`. The
    results are differentiable by autograd.

    :param int k: a non-negative integer.
    :param torch.Tensor t: real tensor of any shape, float32 or float64.
    :returns: two tensors of the shape and dtype of ``t``.
    """
    k = _check_k(k)
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"log_radial_integral_and_derivative: t must be float32 or float64, got {t.dtype}")
    if k < _K_SMALL:
        return _log_j_small(k, t)
    log_j, _, deriv = _log_j_quadrature_with_ratio(k, t)
    return log_j, deriv


def _check_k(k) -> int:
    """``k`` as an ``int``; a 0-d integer tensor (an event size under ``torch.jit.trace``) is accepted."""
    if torch.is_tensor(k) and k.dim() == 0 and not k.dtype.is_floating_point and k.dtype != torch.bool:
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"log_radial_integral: k must be a non-negative integer, got k = {k!r}")
    return int(k)


def log_radial_integral(k: int, t: Tensor) -> Tensor:
    r"""Return :math:`\log J_k(t) = \log \int_0^\infty r^k e^{-(r-t)^2/2}\,dr` elementwise.

    :param int k: a non-negative integer (``d - 1`` for the projected normal on :math:`S^{d-1}`).
    :param torch.Tensor t: real tensor of any shape; differentiable.
    :returns: tensor of the same shape and dtype as ``t``.
    :raises ValueError: if ``k`` is not a non-negative integer.
    """
    k = _check_k(k)
    if not torch.is_tensor(t):
        t = torch.as_tensor(t, dtype=torch.get_default_dtype())
    in_dtype = t.dtype
    if in_dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    if k >= _K_SMALL:
        out = _log_j_quadrature(k, t)
    elif torch.is_grad_enabled() and t.requires_grad:
        out = _SmallK.apply(t, k)
    else:  # no graph to record: the closed form without its derivative
        out = _log_j_small(k, t, with_derivative=False)[0]
    return out.to(in_dtype)
