"""Projected normal distribution on the unit sphere, with a log density for every dimension."""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Sequence

import numpy as np
import torch
from pyro.distributions import ProjectedNormal as _PyroProjectedNormal
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.ops.tensor_utils import safe_normalize
from torch import Tensor
from torch.distributions import Distribution

from distributions.log_radial_integral import log_radial_integral, log_radial_integral_and_derivative
from distributions.tracing import is_traced

__all__ = ["ProjectedNormal"]

_LOG_2PI = math.log(2 * math.pi)


def _log_sphere_area(dim: int) -> float:
    """log |S^{dim-1}| (the area of the unit sphere in R^dim)."""
    return math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


def _gauss_legendre(n: int) -> tuple[Tensor, Tensor]:
    x, w = np.polynomial.legendre.leggauss(n)
    return torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(w, dtype=torch.float64)


_GAUSS_LEGENDRE_128 = _gauss_legendre(128)


def _rowsum(x: Tensor, ones: Tensor | None = None) -> Tensor:
    """``x.sum(-1)``; for a short last dimension (d <= 16) as a matrix-vector product with ``ones`` (made
    if not given): on the CPU a reduction over d = 3 is several times slower than gemv (and an ``einsum`` of
    two such tensors becomes a batched 1 x d matmul), while from d = 32 on gemv is the slower (4x at 64)."""
    d = x.shape[-1]
    if d > _SMALL_D:
        return x.sum(-1)
    return x @ (x.new_ones(d) if ones is None else ones)


def _as_dtype(x: Tensor, dtype: torch.dtype) -> Tensor:
    """``x.to(dtype)`` without the call where ``x`` has that dtype already: at NUTS-sized batches a no-op
    ``.to`` costs as much as the arithmetic, and the rows route would make a dozen."""
    return x if x.dtype == dtype else x.to(dtype)


def _rows_parts(
    value: Tensor, loc: Tensor, scale: Tensor | None, compute_dtype: torch.dtype, need_gradient: bool = True
) -> tuple[Tensor, tuple[Tensor | None, ...], tuple[Tensor | None, ...]]:
    """The projected normal log density (class docstring) in the ``(..., d)`` layout, with the per-event
    numbers its gradient needs, ``(a, c, p2, t, g)``, and the float64 rows ``(1/sigma, v, m, r)``.

    ``value (..., d)``, ``loc (..., d)``, ``scale (..., 1 or d)`` broadcastable, or ``scale=None`` for a
    unit scale (Pyro's parameterisation; ``1/sigma`` is then ``None``). Without ``need_gradient``, ``g`` is
    ``None`` (not computed: a forward pass without a graph). Event sums in float64 (see
    :meth:`ProjectedNormal.log_prob`), ``log_p`` and ``g = (log J_{d-1})'(t)`` in ``compute_dtype``. ``a``,
    ``c``, ``r``, ``p2`` and ``t`` are as in :class:`_SmallDLogProb` (``a`` unwhitened for an isotropic
    scale). Plain operations: differentiable by autograd, which is how both written-out backward passes
    provide second derivatives.
    """
    d = int(value.shape[-1])  # not a traced 0-d tensor: 0.5 * d * ... would be float32
    inv, v, m = _whitened_rows(value, loc, scale)
    # Squares as products: on the CPU, at the few hundred events of NUTS, pow costs twice a multiplication.
    ones = v.new_ones(d) if d <= _SMALL_D else None
    a = _rowsum(v * v, ones)
    b = _rowsum(v * m, ones)
    c = b / a
    # |m|^2 - b^2/a as the squared norm of the part of m orthogonal to v: no cancellation near the mode.
    r = torch.addcmul(m, c.unsqueeze(-1), v, value=-1)
    p2 = _rowsum(r * r, ones)
    t = b * torch.rsqrt(a)
    if inv is not None and inv.shape[-1] == 1:
        # v and m were u and mu: whiten the sums; log A + 2 log scale is log |u|^2
        inv_event = inv[..., 0]
        t, p2 = t * inv_event, p2 * (inv_event * inv_event)
    log_j, g = _log_radial_integral(d - 1, _as_dtype(t, compute_dtype), need_gradient)
    return _log_density(log_j, p2, a, scale, d), (a, c, p2, t, g), (inv, v, m, r)


def _log_radial_integral(k: int, t: Tensor, with_derivative: bool) -> tuple[Tensor, Tensor | None]:
    """``log J_k(t)`` and, ``with_derivative``, its derivative (otherwise ``None``, and not computed)."""
    if with_derivative:
        return log_radial_integral_and_derivative(k, t)
    return log_radial_integral(k, t), None


def _log_density(log_j: Tensor, p2: Tensor, a: Tensor, scale: Tensor | None, d: int) -> Tensor:
    """``log p = log J - p2/2 - (d/2) log a - sum log sigma - (d/2) log 2 pi`` in ``log_j``'s dtype, from the
    per-event numbers of either layout (``a`` unwhitened for an isotropic scale, whose log-determinant then
    cancels against the whitening of ``a``). Built in place on ``log_j``."""
    dtype = log_j.dtype
    log_p = log_j.add_(_as_dtype(p2, dtype), alpha=-0.5).add_(torch.log(_as_dtype(a, dtype)), alpha=-0.5 * d)
    if scale is not None and scale.shape[-1] > 1:
        log_p = log_p.sub_(_as_dtype(_rowsum(scale.log()), dtype))  # rounded as the result is
    return log_p.sub_(0.5 * d * _LOG_2PI)


def _whitened_rows(value: Tensor, loc: Tensor, scale: Tensor | None) -> tuple[Tensor | None, Tensor, Tensor]:
    """``(1/sigma, v, m)`` in float64, ``v = u / sigma`` and ``m = mu / sigma`` for a diagonal scale (for an
    isotropic one ``u`` and ``mu`` themselves). ``1/sigma`` is rounded once in the scale's dtype and used
    for both: an exact whitening with ``sigma`` perturbed by half an ulp (log p is well conditioned in it).
    ``1/sigma`` is ``None`` for a unit scale (``scale=None``)."""
    v, m = _as_dtype(value, torch.float64), _as_dtype(loc, torch.float64)
    if scale is None:
        return None, v, m
    inv = _as_dtype(torch.reciprocal(scale), torch.float64)
    if inv.shape[-1] > 1:
        v, m = v * inv, m * inv
    return inv, v, m


def _gradient_coefficients(grad_out, a, c, p2, t, g, scale, d: int, need_sigma: bool = True) -> tuple:
    r"""Per-event factors of the gradient (float64, shape of the batch), with ``go`` the incoming
    gradient: ``(go, gamma_go, coef_r_v, coef_r_m, coef_v, grad_sigma_iso)``, so that
    :math:`\partial_v = r\,c_{rv} - v\,c_v` and :math:`\partial_m = v\,\gamma_{go} - r\,c_{rm}` (see
    :class:`_SmallDLogProb`). For an isotropic scale ``v``, ``m`` and ``r`` are unwhitened, the factors
    carry the scale, and ``grad_sigma_iso`` is :math:`\partial_\sigma = (|r_w|^2 - g t)/\sigma` (``None``
    for a diagonal or unit (``None``) scale or where ``need_sigma`` is false)."""
    go, g = _as_dtype(grad_out, torch.float64), _as_dtype(g, torch.float64)
    gamma_go = g * torch.rsqrt(a) * go  # not in place: g and a are saved (retain_graph)
    coef_v = go * d / a
    if scale is None or scale.shape[-1] > 1:  # whitened rows, or a unit scale (the same formulas)
        return go, gamma_go, torch.addcmul(gamma_go, c, go), go, coef_v, None
    inv = torch.reciprocal(_as_dtype(scale[..., 0], torch.float64))  # not in place: may be a view of scale
    inv_sq_go = inv * inv * go
    gamma_go = gamma_go * inv
    grad_sigma_iso = (p2 - g * t).mul_(inv).mul_(go) if need_sigma else None
    return go, gamma_go, torch.addcmul(gamma_go, c, inv_sq_go), inv_sq_go, coef_v, grad_sigma_iso


def _vector_gradients(v, m, r, inv, coefs: Sequence[Tensor], need_sigma: bool, out=None) -> tuple:
    """``(d/du, d/dmu, d/dsigma)`` of ``log p`` times the incoming gradient, for one coordinate (per-event
    factors of the batch's shape) or for whole rows (factors unsqueezed). ``inv`` is ``1/sigma`` for a
    diagonal scale, ``None`` for an isotropic one (whose scale gradient is per event). ``out``: optional
    buffers for the two vector gradients. ``coefs``: the first five of :func:`_gradient_coefficients`."""
    go, gamma_go, coef_r_v, coef_r_m, coef_v = coefs
    grad_v = torch.mul(r, coef_r_v, out=None if out is None else out[0]).addcmul_(v, coef_v, value=-1)
    grad_m = torch.mul(v, gamma_go, out=None if out is None else out[1]).addcmul_(r, coef_r_m, value=-1)
    grad_sigma = None
    if inv is not None:  # diagonal: back through v = u / sigma, m = mu / sigma
        if need_sigma:
            grad_sigma = (v * grad_v).addcmul_(m, grad_m).add_(go).mul_(inv).neg_()
        grad_v.mul_(inv)
        grad_m.mul_(inv)
    return grad_v, grad_m, grad_sigma


def _second_order(value, loc, scale, grad_out, needs) -> tuple:
    """The backward pass under ``create_graph``: autograd through :func:`_rows_parts`."""
    inputs = [x for x, need in zip((value, loc, scale), needs, strict=True) if need]
    with torch.enable_grad():
        log_p = _rows_parts(value, loc, scale, grad_out.dtype)[0]
    grads = iter(torch.autograd.grad(log_p, inputs, grad_out, create_graph=True))
    return (*[next(grads) if need else None for need in needs], None)


class _RowsLogProb(torch.autograd.Function):
    """:func:`_rows_parts` with the backward pass written out (as :class:`_SmallDLogProb`'s, whole rows at
    a time): a tenth of the graph autograd would record. The float64 rows ``v``, ``m`` and ``r`` are kept
    for the backward pass when ``keep_rows`` (small batches, where each operation saved counts) and
    otherwise recomputed (large ones, where three ``(..., d)`` float64 tensors would be the peak memory)."""

    @staticmethod
    def forward(
        ctx,
        value: Tensor,
        loc: Tensor,
        scale: Tensor | None,
        compute_dtype: torch.dtype,
        need_gradient: bool,
        keep_rows: bool,
    ) -> Tensor:
        log_p, per_event, rows = _rows_parts(value, loc, scale, compute_dtype, need_gradient)
        if need_gradient:
            ctx.save_for_backward(value, loc, scale, *per_event, *(rows if keep_rows else ()))
        return log_p

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        value, loc, scale, a, c, p2, t, g, *rows = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            return (*_second_order(value, loc, scale, grad_out, needs), None, None)
        d = int(value.shape[-1])  # not a traced 0-d tensor
        *per_event, grad_sigma_iso = _gradient_coefficients(grad_out, a, c, p2, t, g, scale, d, needs[2])
        if rows:
            inv, v, m, r = rows
        else:
            inv, v, m = _whitened_rows(value, loc, scale)
            r = torch.addcmul(m, c.unsqueeze(-1), v, value=-1)
        coefs = [x.unsqueeze(-1) for x in per_event]
        grad_v, grad_m, grad_sigma = _vector_gradients(
            v, m, r, inv if inv is not None and inv.shape[-1] > 1 else None, coefs, needs[2]
        )
        if grad_sigma_iso is not None:
            grad_sigma = grad_sigma_iso.unsqueeze(-1)
        grads = (grad_v, grad_m, grad_sigma)
        return (
            *[
                _as_dtype(grad.sum_to_size(x.shape), x.dtype) if need else None
                for grad, x, need in zip(grads, (value, loc, scale), needs, strict=True)
            ],
            None,
            None,
            None,
        )


# Up to this event size log_prob goes through _SmallDLogProb, unless the whole batch has at most
# _ROWS_MAX_NUMEL coordinates: there the per-operation overhead outweighs memory traffic, and the (..., d)
# layout needs fewer operations (measured on the CPU: NUTS-sized batches of a few hundred events).
_SMALL_D = 16
_ROWS_MAX_NUMEL = 32768


def _numel(a: torch.Size, b: torch.Size) -> int:
    """The number of elements of the broadcast of shapes ``a`` and ``b`` (already known to broadcast)."""
    n = max(len(a), len(b))
    padded_a, padded_b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    # A list, not a generator: torch.compile traces this.
    return math.prod([max(x, y) for x, y in zip(padded_a, padded_b, strict=True)])


class _SmallDLogProb(torch.autograd.Function):
    r""":func:`_rows_parts` for ``d <= _SMALL_D``, one event coordinate at a time, with its backward
    pass written out.

    Working on one coordinate at a time keeps every temporary at the size of the batch (on the CPU, whole
    ``(..., d)`` float64 temporaries cost more in fresh pages than in arithmetic) and avoids the reductions
    over a short last dimension. With :math:`\gamma = (\log J_{d-1})'(t)/\sqrt a` and the whitened ``v``,
    ``m``, ``a = v.v``, ``c = v.m / a``, ``r = m - c v``, the gradients are :math:`\partial_v = (\gamma +
    c)\,r - (d/a)\,v`, :math:`\partial_m = \gamma v - r` and, through the whitening,
    :math:`\partial_\sigma = -(v\,\partial_v + m\,\partial_m + 1)/\sigma` (summed over the event for an
    isotropic scale). Under ``create_graph`` the backward differentiates :func:`_rows_parts` instead, so
    higher derivatives are exact as well.
    """

    @staticmethod
    def forward(
        ctx, value: Tensor, loc: Tensor, scale: Tensor | None, compute_dtype: torch.dtype, need_gradient: bool
    ) -> Tensor:
        scale_batch = () if scale is None else scale.shape[:-1]  # None: a unit scale, as in _rows_parts
        batch = torch.broadcast_shapes(value.shape[:-1], loc.shape[:-1], scale_batch)
        d = int(value.shape[-1])  # not a traced 0-d tensor: 0.5 * d * ... would be float32
        # a = v.v, b = v.m and, for now, p2 = m.m; c = b / a: kept for the backward pass, or, without one,
        # in the thread's reused memory (nothing here then outlives the call). The first coordinate's
        # products initialise the sums (no zero fill).
        sums_shape = (4,) + tuple(batch)
        if need_gradient:
            sums = value.new_empty(sums_shape, dtype=torch.float64)
        else:
            sums = _scratch("sums", sums_shape, value)
        a, b, p2, c = [sums[i] for i in range(4)]
        coordinate = _Coordinates(value, loc, scale, batch, n_scratch=0)
        v, m = coordinate.v, coordinate.m
        for i in range(d):
            coordinate.load(i)
            if i == 0:
                torch.mul(v, v, out=a)
                torch.mul(v, m, out=b)
                torch.mul(m, m, out=p2)
            else:
                a.addcmul_(v, v)
                b.addcmul_(v, m)
                p2.addcmul_(m, m)
        torch.div(b, a, out=c)
        if _subtraction_is_accurate(p2, scale, compute_dtype):
            p2.addcmul_(b, c, value=-1).clamp_(min=0.0)  # |m|^2 - (v.m)^2 / a
        else:
            for i in range(d):
                coordinate.load(i)
                r = m.addcmul_(c, v, value=-1)  # the part of m orthogonal to v: no cancellation
                if i == 0:
                    torch.mul(r, r, out=p2)
                else:
                    p2.addcmul_(r, r)
        t = b.mul_(torch.rsqrt(a, out=v))
        if scale is not None and scale.shape[-1] == 1:  # whiten the sums; log A + 2 log scale is log |u|^2
            inv = v.copy_(scale[..., 0]).reciprocal_()
            t, p2 = t.mul_(inv), p2.mul_(inv).mul_(inv)
        del coordinate, v, m
        log_j, g = _log_radial_integral(d - 1, _as_dtype(t, compute_dtype), need_gradient)
        if need_gradient:
            ctx.save_for_backward(value, loc, scale, a, c, p2, t, g)
        return _log_density(log_j, p2, a, scale, d)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        value, loc, scale, a, c, p2, t, g = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            return (*_second_order(value, loc, scale, grad_out, needs), None)
        d = int(value.shape[-1])
        *per_event, grad_sigma_iso = _gradient_coefficients(grad_out, a, c, p2, t, g, scale, d, needs[2])
        # Allocated whether needed or not: untouched memory costs nothing.
        grad_value, grad_loc = torch.empty_like(value), torch.empty_like(loc)
        grad_scale = None if scale is None else torch.empty_like(scale)
        coordinate = _Coordinates(value, loc, scale, a.shape, n_scratch=3)
        v, m = coordinate.v, coordinate.m
        r, *buffers = coordinate.scratch
        for i in range(d):
            inv_i = coordinate.load(i)
            torch.addcmul(m, c, v, value=-1, out=r)
            grad_v, grad_m, grad_sigma = _vector_gradients(v, m, r, inv_i, per_event, needs[2], out=buffers)
            if needs[0]:
                grad_value[..., i] = grad_v.sum_to_size(value.shape[:-1])
            if needs[1]:
                grad_loc[..., i] = grad_m.sum_to_size(loc.shape[:-1])
            if grad_sigma is not None and grad_scale is not None:
                grad_scale[..., i] = grad_sigma.sum_to_size(grad_scale.shape[:-1])
        if grad_sigma_iso is not None and grad_scale is not None:
            grad_scale[..., 0] = grad_sigma_iso.sum_to_size(grad_scale.shape[:-1])
        grads = (grad_value, grad_loc, grad_scale)
        return (*[grad if need else None for grad, need in zip(grads, needs, strict=True)], None, None)


def _subtraction_is_accurate(mm: Tensor, scale: Tensor | None, compute_dtype: torch.dtype) -> bool:
    """Whether ``|m|^2 - (v.m)^2/a`` may be formed by subtraction in float64 for a float32 result.

    ``mm`` is ``|m|^2`` (unwhitened for an isotropic ``scale``). The subtraction's absolute error is a few
    ulps of the whitened ``|m|^2``, at most ``(2d + 2) 2^-53 |m|^2 <= 4e-9`` when ``|m|^2 <= 2^20``: below
    float32's resolution of ``log p``, so the second pass over the coordinates is skipped. A host check,
    so only on the CPU and outside tracing; float64 results always take the second pass.
    """
    if compute_dtype != torch.float32 or mm.device.type != "cpu" or mm.numel() == 0:
        return False
    if is_traced():
        return False
    bound = mm.max()
    if scale is not None and scale.shape[-1] == 1:
        bound = bound / scale.min().to(torch.float64).square()
    return bool(bound <= 2.0**20)


def _all_finite(x: Tensor) -> bool:
    """Whether every element of ``x`` is finite: the largest magnitude decides (NaN propagates through
    ``max``), in a third of the time of ``isfinite(x).all()`` (NUTS builds the distribution at every step)."""
    return x.numel() == 0 or math.isfinite(x.detach().abs().max())


def _all_positive_finite(x: Tensor) -> bool:
    """Whether every element of ``x`` is positive and finite (NaN propagates through ``aminmax``)."""
    if x.numel() == 0:
        return True
    low, high = torch.aminmax(x.detach())
    return bool(low > 0) and math.isfinite(high)


class _ScratchBlocks(threading.local):
    """Per-thread float64 blocks by purpose, reused across calls (see :func:`_scratch`)."""

    def __init__(self) -> None:
        self.blocks: dict[str, Tensor] = {}


_SCRATCH = _ScratchBlocks()
_SCRATCH_MAX_BYTES = 1 << 24  # larger blocks are allocated per call and not kept


def _scratch(purpose: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """Uninitialised float64 memory of ``shape`` for temporaries that do not outlive one forward or backward
    pass: on the CPU the thread's block for ``purpose``, kept between calls. Fresh memory there costs a page
    fault per 4 KiB on first touch, more than the arithmetic done on it, and whether glibc hands freed
    blocks back to the system depends on the process's history (measured: a tenth of the d = 2 forward
    pass). Fresh memory on other devices (whose allocators cache), under a tracer, and above the size cap.
    """
    numel = math.prod(shape)
    if like.device.type != "cpu" or 8 * numel > _SCRATCH_MAX_BYTES or is_traced():
        return like.new_empty(shape, dtype=torch.float64)
    block = _SCRATCH.blocks.get(purpose)
    if block is None or block.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: usable in place inside and outside the mode
            block = _SCRATCH.blocks[purpose] = torch.empty(numel, dtype=torch.float64)
    return block[:numel].view(shape)


class _Coordinates:
    """Float64 buffers ``v``, ``m`` of the batch's shape that :meth:`load` fills with event coordinate
    ``i`` of the value and the mean, whitened for a diagonal scale (returning ``1/sigma_i``; ``None`` for
    an isotropic scale, whose whitening applies to the sums), and ``scratch``, ``n_scratch`` more buffers.

    All are views of one block, reused across the loops and across calls (:func:`_scratch`).
    """

    def __init__(self, value: Tensor, loc: Tensor, scale: Tensor | None, batch, n_scratch: int) -> None:
        self.value, self.loc, self.scale = value, loc, scale
        n_loaded = 3 if scale is not None and scale.shape[-1] > 1 else 2  # v, m and, if diagonal, 1/sigma
        block = _scratch("coordinates", (n_loaded + n_scratch,) + tuple(batch), value)
        work = [block[i] for i in range(n_loaded + n_scratch)]  # not unbind: its views can't change in place
        self.v, self.m = work[0], work[1]
        self.inv = work[2] if n_loaded == 3 else None
        self.scratch = work[n_loaded:]

    def load(self, i: int) -> Tensor | None:
        self.v.copy_(self.value[..., i])
        self.m.copy_(self.loc[..., i])
        if self.inv is not None and self.scale is not None:
            sigma = self.scale[..., i]
            if sigma.shape == self.inv.shape:
                # 1/sigma rounded once in the scale's dtype and used for both v and m: an exact whitening
                # with sigma perturbed by half an ulp (log p is well conditioned in sigma).
                torch.reciprocal(sigma, out=self.inv)
            else:
                self.inv.copy_(sigma).reciprocal_()
            self.v.mul_(self.inv)
            self.m.mul_(self.inv)
        return self.inv


class ProjectedNormal(_PyroProjectedNormal):
    r"""Projected normal distribution :math:`\mathrm{PN}(\mu, \Sigma)` on :math:`S^{d-1}`, any ``d >= 2``.

    If :math:`x \sim \mathcal N(\mu, \Sigma)` in :math:`\mathbb R^d` with a diagonal
    :math:`\Sigma = \mathrm{diag}(\sigma^2)`, then :math:`u = x / |x|` is projected normal. Sampling is
    reparameterized, ``u = normalize(loc + scale * eps)``. Integrating the Gaussian along the ray
    :math:`\{r u : r > 0\}` (Hernandez-Stumpfhauser et al. 2017, [1]) gives the density with respect to
    the surface measure of the sphere: with :math:`A = u^\top\Sigma^{-1}u`, :math:`b = u^\top\Sigma^{-1}\mu`,
    :math:`c = \mu^\top\Sigma^{-1}\mu` and :math:`t = b/\sqrt A`,

    .. math::

        \log p(u) = -\tfrac d2 \log 2\pi - \tfrac12\log|\Sigma| - \tfrac d2 \log A
                    - \tfrac12\,(c - b^2/A) + \log J_{d-1}(t),
        \qquad J_k(t) = \int_0^\infty r^k e^{-(r-t)^2/2}\,dr .

    :math:`\log J_{d-1}` comes from :func:`~distributions.log_radial_integral.log_radial_integral`, accurate
    to about ``1e-13`` relative in float64 for every ``d`` up to 4096 and every ``t`` (see its module
    docstring), so the density stays right in the far tail where Pyro's closed forms underflow (float64,
    ``d = 3``, ``|loc| = 40``, ``u = -loc/|loc|``: the truth is ``-813.1``, Pyro returns ``-37.9``).
    :math:`c - b^2/A` is evaluated as :math:`|m - (b/A) v|^2` with :math:`v = \Sigma^{-1/2}u`,
    :math:`m = \Sigma^{-1/2}\mu` (the part of the whitened mean orthogonal to the whitened direction), which
    does not cancel when ``u`` is near the mean direction. ``log_prob`` works in float64 internally (see
    there). Measured against a 30-digit ``mpmath`` evaluation of this formula (``d`` up to 4096, ``|loc|``
    up to ``1e4``, scales ``1e-3`` to ``1e3``, values at the mode, the antipode, ``t = 0`` and elsewhere):
    relative error at most ``5e-13`` in float64 and ``2e-6`` in float32. The formula is also defined off
    the sphere (for ``u != 0``), which is what gradient checks with respect to ``value`` perturb.

    Parameterization notes. :math:`\mathrm{PN}(\mu, \sigma^2 I) = \mathrm{PN}(\mu/\sigma, I)`: with an
    isotropic scale only the concentration ``loc / scale`` is identifiable, and Pyro's
    ``ProjectedNormal(concentration)`` is the case ``scale = 1``. With a diagonal scale the distribution is
    invariant to multiplying ``loc`` and ``scale`` by a common positive factor.

    ``mode`` and ``mean`` mirror :class:`pyro.distributions.ProjectedNormal`: both are ``normalize(loc)``,
    and ``mean`` is meant as the directional centroid, not the Euclidean expectation
    :math:`\mathbb E[u]` (whose norm is below one). For an isotropic scale this direction is exactly the
    mode and the centroid, by rotational symmetry about ``loc``; for an anisotropic diagonal scale it is
    the projection of the pre-projection mean, which in general differs slightly from the exact mode of the
    projected density.

    Example (inside a Pyro model; ``u`` holds N unit vectors in R^3)::

        loc = pyro.param("loc", torch.ones(3))
        with pyro.plate("data", len(u)):
            pyro.sample("u", ProjectedNormal(loc, 0.5), obs=u)

    Use :class:`~distributions.reparam.ProjectedNormalReparam` to make latent sites of this distribution
    acceptable to autoguides; Pyro's ``MinimalReparam()`` and ``AutoReparam()`` strategies choose it for
    this class (isotropic or diagonal scale) once :mod:`distributions` is imported. The class subclasses
    :class:`pyro.distributions.ProjectedNormal` (so code that checks for Pyro's class accepts it), and
    Pyro's own ``ProjectedNormalReparam`` is exact for it with an isotropic scale (it reads
    :attr:`concentration`, ``loc / scale``); with a diagonal scale it is refused with a message naming ours.

    References:

    [1] D. Hernandez-Stumpfhauser, F. J. Breidt, M. J. van der Woerd (2017), "The general projected normal
        distribution of arbitrary dimension: modeling and Bayesian inference", Bayesian Analysis 12(1),
        113-133. https://projecteuclid.org/euclid.ba/1453211962
    [2] Pyro's :class:`pyro.distributions.ProjectedNormal` (isotropic unit covariance; ``log_prob`` for
        ``d`` in {2, 3, 4} only).

    :param torch.Tensor loc: mean :math:`\mu` of the pre-projection Gaussian, shape ``batch_shape + (d,)``,
        ``d >= 2``; its direction is the mean direction. Passed positionally it plays the role of Pyro's
        ``concentration`` (with the default ``scale = 1`` the two distributions coincide).
    :param scale: standard deviations :math:`\sigma` of the pre-projection Gaussian, positive: a Python
        float, or a tensor broadcastable to ``loc`` whose last dimension is ``1`` (isotropic, one scale per
        batch element) or ``d`` (diagonal). Broadcasting is torch's: a scale of shape ``(B,)`` is read as
        per-dimension, so give one scale per batch element as shape ``(B, 1)``.
    :param bool validate_args: whether to validate the parameters and the values passed to ``log_prob``
        (default: torch's global setting).
    :param torch.Tensor concentration: keyword-only alias of ``loc`` (Pyro's name); give one of the two.
    """

    arg_constraints = {"loc": constraints.real_vector, "scale": constraints.positive}
    support = constraints.sphere
    has_rsample = True

    def __init__(
        self,
        loc: Tensor | None = None,
        scale: float | Tensor = 1.0,
        validate_args: bool | None = None,
        *,
        concentration: Tensor | None = None,
    ) -> None:
        if (loc is None) == (concentration is None):
            raise ValueError("ProjectedNormal: give exactly one of loc and concentration")
        name = "loc" if concentration is None else "concentration"
        loc = loc if concentration is None else concentration
        if not torch.is_tensor(loc) or not loc.dtype.is_floating_point:
            loc = torch.as_tensor(loc, dtype=torch.get_default_dtype())
        if loc.dim() < 1:
            raise ValueError(f"ProjectedNormal: {name} must have shape batch_shape + (d,), got a scalar")
        d = loc.shape[-1]
        if d < 2:
            raise ValueError(
                f"ProjectedNormal: {name} must have event size d >= 2, got {name}.shape = {tuple(loc.shape)}"
            )
        validate = Distribution._validate_args if validate_args is None else validate_args
        if not torch.is_tensor(scale) and not isinstance(scale, numbers.Real):
            scale = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)  # a list or an array
        scale_is_number = not torch.is_tensor(scale)
        self._unit_scale = False  # a Python number 1: log_prob skips the whitening
        if scale_is_number:
            # The common case (NUTS builds the distribution at every step): checked as a number and
            # broadcast without shape arithmetic.
            if validate and not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"ProjectedNormal: scale must be positive and finite, got {scale!r}")
            scale = float(scale)
            self._unit_scale = scale == 1.0
            scale = loc.new_full((1,), scale)
        else:
            dtype = torch.promote_types(loc.dtype, scale.dtype)
            loc, scale = loc.to(dtype), scale.to(dtype)
            if scale.dim() == 0:
                scale = scale.reshape(1)
        if scale.shape[-1] not in (1, d):
            raise ValueError(
                f"ProjectedNormal: scale must have last dimension 1 (isotropic) or d = {d} "
                f"(diagonal), got scale.shape = {tuple(scale.shape)}"
            )
        if scale.shape[:-1] == loc.shape[:-1] or scale_is_number:
            batch_shape = loc.shape[:-1]
        else:
            try:
                batch_shape = torch.broadcast_shapes(loc.shape[:-1], scale.shape[:-1])
            except RuntimeError as e:
                raise ValueError(
                    f"ProjectedNormal: scale.shape = {tuple(scale.shape)} does not broadcast "
                    f"with {name}.shape = {tuple(loc.shape)}"
                ) from e
        self.loc = loc if loc.shape[:-1] == batch_shape else loc.expand(batch_shape + (d,))
        self.scale = scale.expand(batch_shape + scale.shape[-1:])

        if validate:
            # One check per parameter, with messages naming it (the base class would check only NaN for
            # loc and would let an infinite scale through).
            if not _all_finite(loc):
                raise ValueError(f"ProjectedNormal: {name} must be finite, found NaN or infinite values")
            if not scale_is_number and not _all_positive_finite(scale):
                raise ValueError(
                    "ProjectedNormal: scale must be positive and finite, found values <= 0, NaN or infinite"
                )
        TorchDistribution.__init__(self, batch_shape, torch.Size((d,)), validate_args=False)
        self._validate_args = validate

    @classmethod
    def infer_shapes(cls, loc=None, scale=(), concentration=None) -> tuple[torch.Size, torch.Size]:
        """Batch and event shapes from the parameters' shapes (``scale=()`` for a Python float)."""
        loc = tuple(concentration if loc is None else loc)
        scale = tuple(scale)
        batch_shape = torch.broadcast_shapes(loc[:-1], scale[:-1])
        return batch_shape, torch.Size(loc[-1:])

    def expand(self, batch_shape, _instance=None) -> ProjectedNormal:
        batch_shape = torch.Size(batch_shape)
        new = self._get_checked_instance(ProjectedNormal, _instance)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.scale = self.scale.expand(batch_shape + self.scale.shape[-1:])
        new._unit_scale = self._unit_scale
        TorchDistribution.__init__(new, batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self.__dict__.get("_validate_args")
        return new

    @property
    def is_isotropic(self) -> bool:
        """Whether ``scale`` is one number per batch element (last dimension 1)."""
        return self.scale.shape[-1] == 1

    @property
    def concentration(self) -> Tensor:
        """``loc / scale`` for an isotropic scale: the argument of Pyro's equal ``ProjectedNormal``."""
        if not self.is_isotropic:
            raise ValueError(
                "ProjectedNormal.concentration is defined only for an isotropic scale "
                f"(last dimension 1), got scale.shape = {tuple(self.scale.shape)}. Pyro's "
                "pyro.infer.reparam.ProjectedNormalReparam assumes a unit covariance: use "
                "distributions.ProjectedNormalReparam for a diagonal scale (MinimalReparam and "
                "AutoReparam choose it once `distributions` is imported)"
            )
        return self.loc / self.scale

    @property
    def mode(self) -> Tensor:
        """``normalize(loc)`` (see the class docstring for the anisotropic case)."""
        return safe_normalize(self.loc)

    @property
    def mean(self) -> Tensor:
        """``normalize(loc)``, as in Pyro: the directional centroid, not the Euclidean mean ``E[u]``."""
        return safe_normalize(self.loc)

    def entropy(self) -> Tensor:
        r"""Differential entropy w.r.t. the surface measure, shape ``batch_shape`` (isotropic scale only).

        With an isotropic scale the density depends on ``u`` only through :math:`w = \cos\theta`, the
        cosine of the angle to the mean, and :math:`\kappa = |\mathrm{loc}|/\mathrm{scale}`:
        :math:`\log p = -\tfrac d2\log 2\pi - \tfrac12\kappa^2\sin^2\theta + \log J_{d-1}(\kappa\cos\theta)`,
        and :math:`\theta` has density :math:`q(\theta) = |S^{d-2}|\sin^{d-2}\theta\,p(\cos\theta)` on
        :math:`[0, \pi]`. So :math:`H = -\int_0^\pi q(\theta)\log p\,d\theta`, a one-dimensional
        integral, evaluated in float64 by Gauss--Legendre quadrature (128 nodes) on the window where
        :math:`q` exceeds ``exp(-60)`` times its maximum, located first on a grid that is linear in
        :math:`\theta` and geometric near 0 (the mass sits at :math:`\theta \sim 1/\kappa` for large
        :math:`\kappa`, at :math:`\pi/2 \pm 1/\sqrt d` for large ``d``). Accurate to about ``1e-10``
        relative over ``d`` up to 4096 and :math:`\kappa` up to ``1e4`` (tests: Monte Carlo, the uniform's
        entropy at ``loc = 0``, a denser rule).

        :raises NotImplementedError: for a diagonal scale, where the density depends on more than one
            angle; estimate the entropy by Monte Carlo instead, e.g.
            ``-dist.log_prob(dist.rsample((n,))).mean(0)`` (standard error ``std / sqrt(n)``).
        """
        if not self.is_isotropic:
            raise NotImplementedError(
                "ProjectedNormal.entropy() is implemented for an isotropic scale only (the density then "
                "depends on one angle); for a diagonal scale estimate it by Monte Carlo, e.g. "
                "-dist.log_prob(dist.rsample((n,))).mean(0)"
            )
        d = int(self.event_shape[0])
        kappa = (
            torch.linalg.vector_norm(self.loc.to(torch.float64), dim=-1)
            / self.scale[..., 0].to(torch.float64)
        ).unsqueeze(-1)  # batch_shape + (1,)

        def log_q_and_log_p(theta: Tensor) -> tuple[Tensor, Tensor]:
            sin, cos = torch.sin(theta), torch.cos(theta)
            log_p = (
                log_radial_integral(d - 1, kappa * cos) - 0.5 * (kappa * sin).square() - 0.5 * d * _LOG_2PI
            )
            # |S^{d-2}| sin^{d-2}: for d = 2 the "sphere" S^0 is two points (theta and -theta)
            log_q = log_p + _log_sphere_area(d - 1)
            if d > 2:
                log_q = log_q + (d - 2) * torch.log(sin)
            return log_q, log_p

        # 1. Locate the window on a coarse grid (geometric near 0 for large kappa, linear for the rest).
        grid = (
            torch.cat(
                [
                    torch.logspace(-12, math.log10(math.pi), 600, dtype=torch.float64),
                    torch.linspace(0, math.pi, 601, dtype=torch.float64)[1:-1],
                ]
            )
            .sort()
            .values
        )
        grid = grid.to(kappa.device)
        log_q, _ = log_q_and_log_p(grid)
        inside = log_q >= log_q.max(-1, keepdim=True).values - 60.0
        index = torch.arange(grid.numel(), device=grid.device)
        first = torch.where(inside, index, grid.numel()).min(-1).values
        last = torch.where(inside, index, -1).max(-1).values
        lo = torch.where(first > 0, grid[(first - 1).clamp(min=0)], torch.zeros_like(grid[0]))
        hi = torch.where(
            last < grid.numel() - 1,
            grid[(last + 1).clamp(max=grid.numel() - 1)],
            torch.full_like(grid[0], math.pi),
        )
        # 2. Gauss--Legendre on [lo, hi].
        x, w = _GAUSS_LEGENDRE_128
        x, w = x.to(grid.device), w.to(grid.device)
        half = (0.5 * (hi - lo)).unsqueeze(-1)
        theta = (0.5 * (hi + lo)).unsqueeze(-1) + half * x
        log_q, log_p = log_q_and_log_p(theta)
        weights = torch.softmax(log_q + torch.log(w), dim=-1)  # normalized: divides by the computed mass
        entropy = -(weights * log_p).sum(-1)
        return entropy.to(self.loc.dtype)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        x = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        x = torch.addcmul(self.loc, self.scale, x)
        # x = 0 has probability zero; the clamp only keeps a degenerate case finite (no host sync here).
        return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=torch.finfo(x.dtype).tiny)

    def log_prob(self, value: Tensor) -> Tensor:
        """Log density w.r.t. the surface measure, shape ``broadcast(value.shape[:-1], batch_shape)``.

        The sums over the event dimension (``A``, ``b`` and ``c - b^2/A``) are computed in float64 whatever
        the input dtype: for float32 inputs near the mean direction with large ``|loc| / scale``,
        ``c - b^2/A`` depends on the inputs' last bits (``|loc|/scale = 1e7`` in float32 would lose the
        result entirely). The per-event rest (``log J_{d-1}(t)``, ``log A``) is evaluated in the result's
        dtype, where rounding ``t`` and ``A`` to it costs no more than the result's own rounding.

        Batches of at most 32,768 coordinates (NUTS, SVI on a few hundred observations) are evaluated in the
        ``(..., d)`` layout in float64 throughout, which needs the fewest operations. Larger ones use, for
        ``d <= 16``, a loop over the event coordinates in reused float64 buffers (no ``(..., d)`` float64
        temporaries, no reductions over a short last dimension) and otherwise the ``(..., d)`` layout. All
        have their backward pass written out (about a tenth of the graph autograd would record); second
        derivatives go through autograd of the plain formula. A unit scale given as the number ``1.0`` (the
        default, Pyro's parameterisation) skips the whitening, and without a graph to record (``no_grad``, or
        no input that requires grad) the radial integral's derivative is not computed.
        """
        if self._validate_args:
            if value.shape[-1:] != self.event_shape:
                raise ValueError(
                    f"ProjectedNormal.log_prob: value must have event shape {tuple(self.event_shape)}, "
                    f"got value.shape = {tuple(value.shape)}"
                )
            self._validate_sample(value)
        out_dtype = torch.promote_types(value.dtype, self.loc.dtype)
        # int(): under torch.jit.trace the event size is a 0-d tensor, and 0.5 * d * log(2 pi) would be
        # evaluated in float32 (the event size is static, so the trace may bake it in).
        d = int(self.event_shape[0])
        numel = _numel(value.shape[:-1], self.batch_shape) * d
        # A unit scale (a Python 1.0: Pyro's parameterisation, the default) skips the whitening.
        scale = None if self._unit_scale else self.scale
        # Without a graph to record (no_grad, or no input that requires grad), the forward pass skips the
        # derivative of the radial integral and saves nothing; not under a tracer, whose graph may later be
        # called with inputs that do require grad.
        inputs = (value, self.loc) if scale is None else (value, self.loc, scale)
        need_gradient = is_traced() or (torch.is_grad_enabled() and any(x.requires_grad for x in inputs))
        if numel <= _ROWS_MAX_NUMEL:
            # A small batch: float64 throughout costs nothing measurable and saves the conversions.
            log_p = _RowsLogProb.apply(value, self.loc, scale, torch.float64, need_gradient, True)
        else:
            compute_dtype = out_dtype if out_dtype in (torch.float32, torch.float64) else torch.float32
            if d <= _SMALL_D:
                log_p = _SmallDLogProb.apply(value, self.loc, scale, compute_dtype, need_gradient)
            else:
                log_p = _RowsLogProb.apply(value, self.loc, scale, compute_dtype, need_gradient, False)
        return _as_dtype(log_p, out_dtype)
