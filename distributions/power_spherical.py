"""Power spherical distribution on the unit sphere (De Cao & Aziz, 2020), with its exact KL to the uniform."""

from __future__ import annotations

import math

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch import Tensor
from torch.distributions import Dirichlet, Distribution
from torch.distributions.kl import register_kl
from torch.distributions.utils import lazy_property

from distributions.hyperspherical_uniform import HypersphericalUniform, log_sphere_area
from distributions.rotation import rotate_from_pole
from distributions.tracing import is_traced

__all__ = ["PowerSpherical"]

_LOG_2 = math.log(2.0)
_LOG_PI = math.log(math.pi)


def _log_sphere_area(d: int | Tensor, beta: Tensor) -> float | Tensor:
    """log |S^{d-1}|, ``beta = (d - 1) / 2``: HypersphericalUniform's own number for an integer ``d`` (so
    that concentration 0 reproduces it bit for bit), else (``d`` a traced tensor) the formula in torch."""
    if isinstance(d, int):
        return log_sphere_area(d)
    return _LOG_2 + (beta + 0.5) * _LOG_PI - torch.lgamma(beta + 0.5)


# log_prob's form: squared distances up to this d, the dot product above (see there).
_DOT_FORM_MAX_D = 16
# Above this alpha the Stirling-series forms below are used; the first omitted terms are below 1e-16 there.
_ASYMPTOTIC_ALPHA = 20.0


def _asymptotic_side(alpha: Tensor) -> bool | None:
    """Whether every ``alpha`` is at or above ``_ASYMPTOTIC_ALPHA`` (True) or every one below (False): a
    host check, so on the CPU outside tracing, where evaluating only the branch taken saves half the work
    (the concentration is usually one number); ``None`` otherwise (both branches, merged by ``where``)."""
    if alpha.device.type != "cpu" or is_traced() or alpha.numel() == 0:
        return None
    low, high = (float(x) for x in torch.aminmax(alpha.detach()))
    if low >= _ASYMPTOTIC_ALPHA:
        return True
    return False if high < _ASYMPTOTIC_ALPHA else None


def _lgamma_ratio(alpha: Tensor, beta: Tensor) -> Tensor:
    r""":math:`\log\Gamma(\alpha) - \log\Gamma(\alpha + \beta)` for :math:`\alpha \ge \beta > 0`.

    For large ``alpha`` the two ``lgamma`` values are large and nearly equal (``1e6`` at ``alpha = 1e5``,
    an absolute error of ``1e-10`` in float64 against a difference of ``beta log alpha``), so there the
    difference is taken inside Stirling's series (``S`` its tail in odd powers of ``1/x``):

    .. math::

        -(\alpha - \tfrac12)\log(1 + \beta/\alpha) - \beta\log(\alpha+\beta) + \beta
        + S(\alpha) - S(\alpha+\beta).
    """
    ab = alpha + beta
    side = _asymptotic_side(alpha)
    if side is False:
        return torch.lgamma(alpha) - torch.lgamma(ab)

    def series(x: Tensor) -> Tensor:
        x2 = x * x
        return (1 / 12 - (1 / 360 - (1 / 1260 - (1 / 1680 - 1 / (1188 * x2)) / x2) / x2) / x2) / x

    big = alpha if side else alpha.clamp(min=_ASYMPTOTIC_ALPHA)  # keeps the branch not taken finite
    asym = -(big - 0.5) * torch.log1p(beta / big) - beta * torch.log(big + beta) + beta
    asym = asym + (series(big) - series(big + beta))
    if side:
        return asym
    return torch.where(alpha >= _ASYMPTOTIC_ALPHA, asym, torch.lgamma(alpha) - torch.lgamma(ab))


def _digamma_diff(alpha: Tensor, beta: Tensor) -> Tensor:
    r""":math:`\psi(\alpha) - \psi(\alpha + \beta)` for :math:`\alpha \ge \beta > 0`, by the asymptotic
    series for large ``alpha`` (the direct difference loses ``log(alpha) / (beta / alpha)`` ulps there)."""

    side = _asymptotic_side(alpha)
    if side is False:
        return torch.digamma(alpha) - torch.digamma(alpha + beta)

    def series(x: Tensor) -> Tensor:
        x2 = x * x
        return (1 / 12 - (1 / 120 - (1 / 252 - (1 / 240 - 1 / (132 * x2)) / x2) / x2) / x2) / x2

    big = alpha if side else alpha.clamp(min=_ASYMPTOTIC_ALPHA)
    asym = -torch.log1p(beta / big) - beta / (2 * big * (big + beta)) - (series(big) - series(big + beta))
    if side:
        return asym
    return torch.where(alpha >= _ASYMPTOTIC_ALPHA, asym, torch.digamma(alpha) - torch.digamma(alpha + beta))


class _LogRatioShift(torch.autograd.Function):
    r""":math:`R(\kappa + \beta, \beta) - R(\beta, \beta)` (see :meth:`PowerSpherical._log_ratio_shift`) with
    its derivative in closed form, :math:`\psi(\alpha) - \psi(\alpha + \beta)` (:func:`_digamma_diff`):
    autograd records one node instead of the Stirling series' forty operations on the concentration, most
    of a small-batch backward pass (NUTS). Under ``create_graph`` the derivative is itself built from
    differentiable operations, so second derivatives stay exact."""

    @staticmethod
    def forward(ctx, kappa: Tensor, beta: Tensor) -> Tensor:
        ctx.save_for_backward(kappa, beta)
        return _lgamma_ratio(kappa + beta, beta) - _lgamma_ratio(beta, beta)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        kappa, beta = ctx.saved_tensors
        return grad_out * _digamma_diff(kappa + beta, beta), None


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """Dot product over the last dimension: einsum (no temporary) for large d, vecdot (no batched matmul,
    which is slow for tiny matrices) for small d."""
    n = a.shape[-1]
    if isinstance(n, int) and n <= _DOT_FORM_MAX_D:
        return torch.linalg.vecdot(a, b)
    return torch.einsum("...i,...i->...", a, b)


class PowerSpherical(TorchDistribution):
    r"""Power spherical distribution :math:`\mathrm{PS}(\mu, \kappa)` on :math:`S^{d-1}`, any ``d >= 2``.

    The density with respect to the surface measure of :math:`S^{d-1}` is (De Cao & Aziz 2020, [1])

    .. math::

        p(x) = C_d(\kappa)^{-1} (1 + \mu^\top x)^\kappa, \qquad
        C_d(\kappa) = 2^{\alpha+\beta} \pi^\beta \frac{\Gamma(\alpha)}{\Gamma(\alpha+\beta)}, \qquad
        \alpha = \tfrac{d-1}{2} + \kappa, \ \beta = \tfrac{d-1}{2}.

    :math:`w = \mu^\top x` satisfies :math:`(1 + w)/2 \sim \mathrm{Beta}(\alpha, \beta)`, which gives an
    exactly reparameterized sampler (the Beta's gradient is torch's implicit reparameterization), the
    closed-form entropy :math:`H = \log C_d(\kappa) - \kappa\,(\log 2 + \psi(\alpha) - \psi(\alpha+\beta))`,
    the mean :math:`\mathbb E[x] = \mathbb E[w]\,\mu` with :math:`\mathbb E[w] = \kappa / (\kappa + d - 1)`,
    and :math:`\mathrm{KL}(\mathrm{PS} \,\|\, U(S^{d-1})) = \log|S^{d-1}| - H` (registered with
    :func:`torch.distributions.kl.register_kl`, so ``TraceMeanField_ELBO`` uses it). ``concentration = 0``
    is the uniform distribution: ``log_prob`` and ``entropy`` then equal
    :class:`~distributions.hyperspherical_uniform.HypersphericalUniform`'s to the last bit.

    Numerics: normaliser, entropy and KL use ``lgamma``/``digamma`` only (their differences taken inside
    the Stirling series for large ``alpha``), in float64 whatever the parameters' dtype, as differences
    that vanish exactly at ``concentration = 0``. In ``d <= 16``, where large concentrations put the mass
    at ``1 - w`` of order ``1 / kappa`` (:math:`w = \mu^\top x`), ``log_prob`` evaluates
    :math:`\log((1 + w)/2)` from :math:`|x - \mu|^2` on the side of the mode and from :math:`|x + \mu|^2`
    on the side of the antipode, which keeps full relative precision where :math:`1 \mp w` is small; in
    higher ``d``, where ``1 - w`` is of order ``(d - 1) / kappa`` at the mass, the faster dot product.
    Against 30-digit references at the nearest points of the sphere (samples, the mode, random points,
    points 1e-3 from the antipode; ``d`` up to 4096, concentrations 0 to ``1e5``): relative error below
    ``1e-14`` (float64) and ``1e-5`` (float32) for ``d <= 16``, below ``1e-11`` and ``1e-3`` beyond (the
    worst near the antipode, and in float32 at concentrations near ``1e5``: ``1e-4`` at samples, d = 64).
    At the antipode ``x = -loc`` the density is 0 (``log_prob = -inf``) for ``concentration > 0`` (for
    ``d > 16`` exactly so when ``|loc|`` rounds to 1), and ``0 * log 0`` is taken as 0 at
    ``concentration = 0``, with finite gradients there.

    Example (inside a Pyro model; ``u`` holds N unit vectors in R^3)::

        loc = pyro.param("loc", torch.tensor([0.0, 0.0, 1.0]), constraint=constraints.sphere)
        with pyro.plate("data", len(u)):
            pyro.sample("u", PowerSpherical(loc, torch.tensor(10.0)), obs=u)

    References:

    [1] N. De Cao, W. Aziz (2020), "The Power Spherical distribution", ICML 2020 INNF+ workshop,
        arXiv:2006.04437.

    :param torch.Tensor loc: mean direction :math:`\mu`, unit vectors of shape ``batch_shape + (d,)``,
        ``d >= 2``. Not normalised here: give unit vectors (e.g. a ``pyro.param`` with
        ``constraint=constraints.sphere``); validation checks the norm.
    :param concentration: :math:`\kappa \ge 0`, a Python float or a tensor broadcastable to the batch
        shape, i.e. with **no** event dimension (a network head's ``(B, 1)`` output must be squeezed to
        ``(B,)``, otherwise it broadcasts against ``loc.shape[:-1] = (B,)`` to a ``(B, B)`` batch).
    :param bool validate_args: whether to validate the parameters and the values passed to ``log_prob``
        (default: torch's global setting).
    """

    arg_constraints = {"loc": constraints.sphere, "concentration": constraints.nonnegative}
    support = constraints.sphere
    has_rsample = True

    def __init__(self, loc: Tensor, concentration: float | Tensor, validate_args: bool | None = None) -> None:
        if not torch.is_tensor(loc) or not loc.dtype.is_floating_point:
            loc = torch.as_tensor(loc, dtype=torch.get_default_dtype())
        loc_given = loc  # validated in its own dtype: a float32 unit vector is not one to float64 precision
        if torch.is_tensor(concentration) and concentration.dtype.is_floating_point:
            dtype = torch.promote_types(loc.dtype, concentration.dtype)
            loc, concentration = loc.to(dtype), concentration.to(dtype=dtype, device=loc.device)
        else:
            concentration = torch.as_tensor(concentration, dtype=loc.dtype, device=loc.device)
        if loc.dim() < 1:
            raise ValueError("PowerSpherical: loc must have shape batch_shape + (d,), got a scalar")
        d = loc.shape[-1]
        # Under torch.jit.trace the event size is a 0-d tensor: the check is for the eager (int) case only.
        if isinstance(d, int) and d < 2:
            raise ValueError(
                f"PowerSpherical: loc must have event size d >= 2, got loc.shape = {tuple(loc.shape)}"
            )
        try:
            batch_shape = torch.broadcast_shapes(loc.shape[:-1], concentration.shape)
        except RuntimeError as e:
            raise ValueError(
                f"PowerSpherical: concentration.shape = {tuple(concentration.shape)} does not "
                f"broadcast with loc.shape[:-1] = {tuple(loc.shape[:-1])} (concentration has "
                "no event dimension)"
            ) from e
        self.loc = loc.expand(batch_shape + (d,))
        self.concentration = concentration.expand(batch_shape)
        # The normaliser is computed on the concentration as given (one lgamma for a scalar, not one per
        # batch element of a plate) and broadcast afterwards.
        self._concentration_given = concentration

        validate = Distribution._validate_args if validate_args is None else validate_args
        if validate:
            # Messages naming the parameter and the tolerance; the base class would only say "invalid".
            if not bool(torch.isfinite(loc_given).all()):
                raise ValueError("PowerSpherical: loc must be finite, found NaN or infinite values")
            if not bool(constraints.sphere.check(loc_given).all()):
                norms = torch.linalg.vector_norm(loc_given, dim=-1)
                raise ValueError(
                    "PowerSpherical: loc must be unit vectors (|loc| = 1 to within 10 eps sqrt(d)), found "
                    f"norms from {norms.min().item():.9g} to {norms.max().item():.9g}; normalise it first"
                )
            if not bool(((concentration >= 0) & torch.isfinite(concentration)).all()):
                raise ValueError(
                    "PowerSpherical: concentration must be >= 0 and finite, found negative, "
                    "NaN or infinite values"
                )
        super().__init__(batch_shape, torch.Size((d,)), validate_args=False)
        self._validate_args = validate

    @staticmethod
    def infer_shapes(loc, concentration=()) -> tuple[torch.Size, torch.Size]:
        """Batch and event shapes from the parameters' shapes (``concentration=()`` for a Python float)."""
        loc = tuple(loc)
        return torch.broadcast_shapes(loc[:-1], tuple(concentration)), torch.Size(loc[-1:])

    def expand(self, batch_shape, _instance=None) -> PowerSpherical:
        batch_shape = torch.Size(batch_shape)
        new = self._get_checked_instance(PowerSpherical, _instance)
        new.loc = self.loc.expand(batch_shape + self.event_shape)
        new.concentration = self.concentration.expand(batch_shape)
        new._concentration_given = self._concentration_given
        super(PowerSpherical, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self.__dict__.get("_validate_args")
        return new

    @lazy_property
    def _beta_params(self) -> tuple[Tensor, Tensor, Tensor]:
        """``kappa``, ``alpha``, ``beta`` in float64; kappa and alpha of the concentration's given shape,
        ``beta = (d - 1) / 2`` a 0-d tensor (``d`` an int, or a 0-d tensor under tracing)."""
        kappa = self._concentration_given.to(torch.float64)
        d = self.event_shape[0]
        beta = torch.as_tensor(
            0.5 * (d - 1) if isinstance(d, int) else 0.5 * (d - 1).to(torch.float64),
            dtype=torch.float64,
            device=kappa.device,
        )
        return kappa, kappa + beta, beta

    @lazy_property
    def _log_ratio_shift(self) -> Tensor:
        r""":math:`R(\alpha, \beta) - R(\beta, \beta)`, :math:`R(a, b) = \log\Gamma(a) - \log\Gamma(a + b)`.

        Legendre's duplication formula gives :math:`\log C_d(0) = \log|S^{d-1}|`, so
        :math:`\log C_d(\kappa) - \kappa\log 2 = \log|S^{d-1}| + R(\alpha,\beta) - R(\beta,\beta)`.
        At ``concentration = 0`` the value is made exactly 0 (``log_prob`` and ``entropy`` then equal the
        uniform's bit for bit, and the KL is exactly 0) by subtracting its own detached value there, which
        keeps the gradient.
        """
        kappa, _, beta = self._beta_params
        shift = _LogRatioShift.apply(kappa, beta)
        return shift - torch.where(kappa == 0, shift.detach(), 0.0)

    @lazy_property
    def _log_normalizer(self) -> Tensor:
        r""":math:`\log C_d(\kappa) - \kappa \log 2`, float64, the concentration's given shape."""
        _, _, beta = self._beta_params
        return _log_sphere_area(self.event_shape[0], beta) + self._log_ratio_shift

    def _kl_to_uniform(self) -> Tensor:
        """KL(PS || U(S^{d-1})) in float64, shape ``batch_shape``; exactly 0 at ``concentration = 0``."""
        kappa, alpha, beta = self._beta_params
        kl = kappa * _digamma_diff(alpha, beta) - self._log_ratio_shift
        return kl.expand(self.batch_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        r"""Log density w.r.t. the surface measure, shape ``broadcast(value.shape[:-1], batch_shape)``.

        Evaluated in the promoted dtype of ``value`` and the parameters (the normaliser in float64, then
        rounded). For ``d <= 16`` :math:`\log((1 + w)/2)` comes from squared distances (see the comments),
        which off the sphere (where gradient checks w.r.t. ``value`` perturb) extends ``(1 + mu . x) / 2``
        smoothly as ``(N + mu . x) / (2 N)``, ``N = (|x|^2 + |mu|^2) / 2``: the same on the sphere, with
        the same gradients tangent to it (the normal components differ from those of
        ``kappa * log1p(mu . x)``; a ``constraints.sphere`` parameter projects them out). For ``d > 16``
        it is ``log1p((mu . x - 1) / 2)``.
        """
        if self._validate_args:
            if value.shape[-1:] != self.event_shape:
                raise ValueError(
                    f"PowerSpherical.log_prob: value must have event shape {tuple(self.event_shape)}, "
                    f"got value.shape = {tuple(value.shape)}"
                )
            self._validate_sample(value)
        dtype = torch.promote_types(value.dtype, self.loc.dtype)
        value, loc = value.to(dtype), self.loc.to(dtype)
        kappa = self._concentration_given.to(dtype)
        tiny = torch.finfo(dtype).tiny
        d = self.event_shape[0]
        if isinstance(d, int) and d > _DOT_FORM_MAX_D:
            # High d: where the mass is, 1 - w is of order (d - 1) / kappa, not small, and the dot product's
            # absolute error of an ulp costs little; it is the fastest form (no temporary of size d).
            w = torch.einsum("...i,...i->...", value, loc)
            # w >= -1 up to rounding; at kappa = 0 the antipode's log 0 is kept finite (0 * log 0 = 0, with
            # finite gradients) by a clamp that leaves the gradient 0 there.
            w = torch.where(kappa > 0, w.clamp(min=-1), w.clamp(min=-1 + torch.finfo(dtype).eps))
            log_half_1pw = torch.log1p(0.5 * (w - 1))
        else:
            # Low d: at large concentrations 1 - w is of order 1 / kappa, and from a dot product it would
            # carry an absolute error of an ulp (kappa ulps in log p: 6e-3 at kappa = 1e5 in float32); also
            # near the antipode 1 + w would lose all its digits. On the sphere (1 + w) / 2 = |x + mu|^2 / q
            # = 1 - |x - mu|^2 / q with q = |x + mu|^2 + |x - mu|^2 = 2 |x|^2 + 2 |mu|^2 = 4, and each
            # squared distance keeps its relative precision where it is small, also for inputs a few ulps
            # off the sphere. So take the small one on each side of w = 0. With q rather than 4 the two
            # forms are one function off the sphere too, so the switch is smooth there.
            diff, total = value - loc, value + loc
            diff_sq = (diff * diff).sum(-1)
            sum_sq = (total * total).sum(-1)
            q = diff_sq + sum_sq
            # 0 * log 0 = 0 at kappa = 0: the antipode's log 0 is clamped to log(tiny) there, so that neither
            # value nor gradient meets 0 * inf; for kappa > 0 it stays -inf.
            sum_sq = torch.where(kappa > 0, sum_sq, sum_sq.clamp(min=tiny))
            # Where the first form is taken diff_sq / q <= 1/2, so its clamp changes nothing; it keeps the
            # form not taken finite at the antipode (log1p(-1): its gradient would be 0 * inf = NaN).
            log_half_1pw = torch.where(
                diff_sq <= sum_sq, torch.log1p(-(diff_sq / q).clamp(max=0.5)), torch.log(sum_sq / q)
            )
        return kappa * log_half_1pw - self._log_normalizer.to(dtype)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        """Exactly reparameterized samples, shape ``sample_shape + batch_shape + (d,)``.

        ``(t, 1 - t) ~ Dirichlet(alpha, beta)`` (torch's implicit-reparameterization gradient),
        ``w = 2t - 1``, ``y = (w, sqrt(1 - w^2) v)`` with ``v`` uniform on :math:`S^{d-2}`, then an
        orthogonal reflection maps ``e_1`` to ``loc``. Both Dirichlet components are used so that
        ``1 - w^2 = 4 t (1 - t)`` keeps its relative precision at large concentrations.
        """
        sample_shape = torch.Size(sample_shape)
        shape = self._extended_shape(sample_shape)
        dtype, device = self.loc.dtype, self.loc.device
        kappa = self.concentration
        beta = torch.zeros_like(kappa) + 0.5 * (self.event_shape[0] - 1)
        # In float64: torch's implicit-reparameterization gradient of a float32 Beta overflows to inf at large
        # concentrations (kappa ~ 6e4 at d = 3).
        params = torch.stack([kappa + beta, beta], -1).to(torch.float64)
        tt = Dirichlet(params, validate_args=False).rsample(sample_shape).to(dtype)
        t, one_minus_t = tt.unbind(-1)
        w = t - one_minus_t
        v = torch.randn(shape[:-1] + (shape[-1] - 1,), dtype=dtype, device=device)
        # sqrt(1 - w^2) / |v|, so that y = (w, radius * v) with v normalised
        radius = 2 * (t * one_minus_t / _dot(v, v).clamp(min=torch.finfo(dtype).tiny)).sqrt()
        return rotate_from_pole(self.loc, w, radius, v)

    def entropy(self) -> Tensor:
        """Closed form ``log C - kappa (log 2 + digamma(alpha) - digamma(alpha + beta))``, ``batch_shape``."""
        _, _, beta = self._beta_params
        return (_log_sphere_area(self.event_shape[0], beta) - self._kl_to_uniform()).to(self.loc.dtype)

    @property
    def mode(self) -> Tensor:
        """``loc`` (for ``concentration > 0``; at 0 every point is a mode)."""
        return self.loc

    @property
    def mean(self) -> Tensor:
        """``E[x] = kappa / (kappa + d - 1) * loc``, shape ``batch_shape + (d,)``."""
        kappa = self.concentration
        return (kappa / (kappa + (self.event_shape[0] - 1))).unsqueeze(-1) * self.loc

    @property
    def variance(self) -> Tensor:
        r"""Per-coordinate variance (the diagonal of the covariance), shape ``batch_shape + (d,)``.

        With :math:`x = w\mu + \sqrt{1-w^2}\,n`, ``n`` uniform on the unit sphere of :math:`\mu^\perp`,
        :math:`\mathrm{Cov}(x) = \mathrm{Var}(w)\,\mu\mu^\top + \mathbb E[1-w^2]\,(I - \mu\mu^\top)/(d-1)`,
        :math:`\mathrm{Var}(w) = 4\alpha\beta / ((\alpha+\beta)^2(\alpha+\beta+1))` and
        :math:`\mathbb E[1-w^2] = 4\alpha\beta / ((\alpha+\beta)(\alpha+\beta+1))` (no cancellation).
        """
        kappa = self.concentration
        d = self.event_shape[0]
        beta = 0.5 * (d - 1)
        alpha = kappa + beta
        ab = alpha + beta
        e_1mw2 = 4 * alpha * beta / (ab * (ab + 1))
        var_w = e_1mw2 / ab
        mu_sq = self.loc.square()
        return var_w.unsqueeze(-1) * mu_sq + (e_1mw2 / (d - 1)).unsqueeze(-1) * (1 - mu_sq)


@register_kl(PowerSpherical, HypersphericalUniform)
def _kl_power_spherical_uniform(p: PowerSpherical, q: HypersphericalUniform) -> Tensor:
    """KL(PS || U) = log|S^{d-1}| - H(PS) in closed form, shape ``broadcast(p.batch_shape,
    q.batch_shape)``."""
    d = p.event_shape[0]
    if isinstance(d, int) and d != q.dim:
        raise ValueError(
            f"KL(PowerSpherical || HypersphericalUniform) on spheres of different dimension: "
            f"p.event_shape = {tuple(p.event_shape)}, q.dim = {q.dim}"
        )
    kl = p._kl_to_uniform().to(p.loc.dtype)
    return kl.expand(torch.broadcast_shapes(p.batch_shape, q.batch_shape))
