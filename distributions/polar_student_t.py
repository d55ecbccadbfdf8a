"""Polar Student-t: the likelihood of Variational Joint Embedding (VJE)."""

from __future__ import annotations

import math
import numbers

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.distributions.util import broadcast_shape
from torch.distributions import Chi2, StudentT

__all__ = ["DIRECTIONAL_MODES", "PolarStudentT"]

DIRECTIONAL_MODES = ("geodesic", "euclidean")


def _as_param(value, like: torch.Tensor, name: str) -> torch.Tensor:
    """Turn a number into a tensor on ``like``'s device and dtype; tensors pass through unchanged."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return like.new_tensor(float(value))
    raise ValueError(f"{name} must be a number or a torch.Tensor, got {type(value).__name__}")


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last dimension; its gradient at the zero vector is 0, not NaN."""
    return torch.linalg.vector_norm(x, dim=-1)


class PolarStudentT(TorchDistribution):
    r"""Polar Student-t on :math:`\mathbb{R}^d \setminus \{0\}`: the likelihood of the VJE paper
    ("Variational Joint Embedding"), docs/maths.md, Polar Student-t.

    A vector :math:`y = r\,u` (:math:`r = |y|`, :math:`u = y / r \in S^{d-1}`) gets a directional factor on
    the sphere and a radial factor on :math:`\log r` that do not interact (the decoupling that keeps the
    norm of an embedding from driving its direction). With the Jacobian of
    :math:`y \mapsto (\log r, u)`,

    .. math::

        \log p(y) = \log p_\mathrm{dir}(u) + \log p_\mathrm{rad}(\log r) - d \log r .

    **Directional factor** (``directional="geodesic"``, the default). Around the mean direction
    :math:`m \in S^{d-1}` take the geodesic log map (Riemannian logarithm of the sphere, e.g. [2])

    .. math::

        v = \mathrm{Log}_m(u) = \arccos(m \cdot u)\,
            \frac{u - (m\cdot u)\,m}{|u - (m\cdot u)\,m|} \;\perp\; m,
        \qquad |v| \in [0, \pi],

    and evaluate on it the :math:`d' = (d-1)`-dimensional Student-t [3] of the tangent plane
    :math:`m^\perp` whose precision is :math:`A = \mathrm{diag}(1/s)` restricted to :math:`m^\perp`
    (:math:`\det A|_{m^\perp} = \det A \cdot m^\top A^{-1} m`):

    .. math::

        \log p_\mathrm{dir}(u) = \log\Gamma\big(\tfrac{\nu+d'}{2}\big) - \log\Gamma\big(\tfrac{\nu}{2}\big)
            - \tfrac{d'}{2}\log(\nu\pi) - \tfrac12 \sum_j \log s_j + \tfrac12 \log\Big(\sum_j m_j^2 s_j\Big)
            - \tfrac{\nu+d'}{2}\,\log\!\Big(1 + \tfrac{1}{\nu} \sum_j v_j^2 / s_j\Big).

    No exponential-map Jacobian :math:`(\sin|v| / |v|)^{d-2} \le 1` is included, so this is a
    **sub-density** on the sphere (total mass :math:`= E_t[(\sin|v|/|v|)^{d-2}\,1\{|v| < \pi\}] \le 1`,
    close to 1 for concentrated scales). That keeps VJE's bound valid; it is our reading **(choice)** of
    the published version's "directional factor on the unit sphere, a valid bound for the associated
    spherical sub-density model", not a formula the paper spells out.

    ``directional="euclidean"`` is the ablation of VJE's earlier version: a :math:`d`-dimensional
    Student-t with shape matrix :math:`\mathrm{diag}(s)` evaluated at :math:`u - m`. It is **not** a
    density on the sphere: its mass there can exceed 1 (more than 3 in ``d = 3`` for small ``s``).

    **Radial factor (choice)**: a Student-t on :math:`\log r` with location ``radial_loc``, scale
    ``radial_scale`` and ``radial_df`` degrees of freedom (:class:`torch.distributions.StudentT`).

    **Sampling.** :meth:`rsample` (and :meth:`sample`) draws, independently,

    1. the tangent vector :math:`v = x_\perp / \sqrt{g/\nu}` with :math:`x \sim N(0, \mathrm{diag}(s))`,
       :math:`x_\perp = x - (s \odot m)\,(m\cdot x) / \sum_j m_j^2 s_j` (``x`` conditioned on
       :math:`m \cdot x = 0`) and :math:`g \sim \chi^2_\nu`: exactly the tangent Student-t above;
    2. the direction :math:`u = \mathrm{Exp}_m(v) = \cos|v|\, m + \sin|v|\, v/|v|`;
    3. :math:`\log r \sim \mathrm{StudentT}(\nu_r, \text{radial\_loc}, \text{radial\_scale})`;

    and returns :math:`y = r\,u`. It is reparameterized (Gaussian and chi-square draws both are). The
    directional law of the samples is the push-forward of the tangent t by :math:`\mathrm{Exp}_m`, which
    wraps around the sphere when :math:`|v| > \pi`; its density on the sphere is therefore not
    :math:`\exp \log p_\mathrm{dir}` (a sub-density), though the two agree closely when
    :math:`s \ll 1`. Sampling is not available for ``directional="euclidean"``.

    Numerics: :math:`v` is formed as :math:`\operatorname{atan2}(|w|, m\cdot u)\, w / |w|` with
    :math:`w = u - (m \cdot u) m`, with a series for :math:`\operatorname{atan2}(|w|, c)/|w|` near
    :math:`u = m`, so values and gradients are finite there. At the antipode :math:`u = -m` the direction
    of :math:`v` is undefined (with anisotropic ``s`` the density has no limit there). Within
    :math:`|w| < \sqrt{\epsilon}` of it (:math:`\epsilon` the dtype's machine epsilon, where rounding has
    already destroyed the direction of :math:`w`) the quadratic form uses its average over tangent
    directions, :math:`\pi^2 \sum_j (1 - m_j^2) / s_j / d'` (the exact limit when ``s`` is isotropic),
    which keeps gradients bounded there.

    :attr:`mean` is not defined (:math:`E[r] = \infty` under a t on :math:`\log r`).

    Example, the VJE likelihood of targets ``y`` (shape ``(B, d)``) given a latent ``z`` with prior
    ``N(0, I)`` and a directional scale ``nu`` (shape ``(B, d)``)::

        with pyro.plate("batch", len(y)):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(y), 1.0).to_event(1))
            pyro.sample("y", PolarStudentT(z / z.norm(dim=-1, keepdim=True), df=5.0, scale=nu,
                                           radial_loc=z.norm(dim=-1).log()), obs=y)

    [1] The VJE paper, "Variational Joint Embedding" (published version; the Euclidean directional
        factor is its earlier version's).
    [2] X. Pennec (2006), "Intrinsic Statistics on Riemannian Manifolds: Basic Tools for Geometric
        Measurements", J. Math. Imaging Vis. 25(1).
    [3] S. Kotz, S. Nadarajah (2004), "Multivariate t Distributions and Their Applications", Cambridge
        University Press.

    Shapes: ``batch_shape`` is the broadcast of ``direction.shape[:-1]``, ``scale.shape[:-1]`` and the
    shapes of ``df``, ``radial_loc``, ``radial_scale``, ``radial_df``; ``event_shape == (d,)``.
    :meth:`log_prob` returns ``sample_shape + batch_shape``.

    :param torch.Tensor direction: mean direction :math:`m`, unit vectors of shape ``(..., d)``, ``d >= 2``.
    :param df: degrees of freedom :math:`\nu > 0` of the directional t (default 5.0), a number or a
        tensor of batch shape. Heavy tails matter for VJE; :math:`\nu \to \infty` is the Gaussian limit.
    :param scale: per-feature directional scale :math:`s > 0`, the **diagonal of the t's shape matrix**
        (variance-like: in ``d = 2`` the angle's usual t scale is
        :math:`(m_1^2/s_2 + m_2^2/s_1)^{-1/2}`). A number (isotropic), or a tensor broadcastable to
        ``direction`` (last dimension ``d``, or 1 for a per-batch isotropic scale). Default 1.0. In VJE it
        is the posterior variance :math:`\nu` (docs/maths.md, VJE).
    :param radial_loc: location of the t on :math:`\log r` (default 0.0, i.e. :math:`r` around 1).
    :param radial_scale: scale of the t on :math:`\log r`, standard-deviation-like as in
        :class:`torch.distributions.StudentT` (default 1.0).
    :param radial_df: degrees of freedom of the t on :math:`\log r` (default ``None``: the same tensor as
        ``df``, so gradients reach ``df`` through both factors).
    :param str directional: ``"geodesic"`` (default, the sub-density above) or ``"euclidean"`` (the
        ablation).
    :param bool validate_args: validate parameters and values (``ValueError`` naming the argument).
    """

    arg_constraints = {
        "direction": constraints.sphere,
        "df": constraints.positive,
        "scale": constraints.independent(constraints.positive, 1),
        "radial_loc": constraints.real,
        "radial_scale": constraints.positive,
        "radial_df": constraints.positive,
    }
    support = constraints.real_vector
    has_rsample = True

    def __init__(
        self,
        direction: torch.Tensor,
        df: float | torch.Tensor = 5.0,
        scale: float | torch.Tensor = 1.0,
        radial_loc: float | torch.Tensor = 0.0,
        radial_scale: float | torch.Tensor = 1.0,
        radial_df: float | torch.Tensor | None = None,
        *,
        directional: str = "geodesic",
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(direction, torch.Tensor) or not direction.is_floating_point():
            raise ValueError("direction must be a floating-point torch.Tensor of shape (..., d)")
        if direction.dim() < 1 or direction.shape[-1] < 2:
            raise ValueError(
                f"direction must have shape (..., d) with d >= 2, got shape {tuple(direction.shape)}"
            )
        if directional not in DIRECTIONAL_MODES:
            raise ValueError(f"directional must be one of {DIRECTIONAL_MODES}, got {directional!r}")
        d = direction.shape[-1]
        df = _as_param(df, direction, "df")
        scale = _as_param(scale, direction, "scale")
        radial_loc = _as_param(radial_loc, direction, "radial_loc")
        radial_scale = _as_param(radial_scale, direction, "radial_scale")
        self._radial_df_is_df = radial_df is None
        radial_df = df if radial_df is None else _as_param(radial_df, direction, "radial_df")
        if scale.dim() == 0:
            scale = scale.unsqueeze(-1)
        if scale.shape[-1] not in (1, d):
            raise ValueError(
                f"scale must be a number or broadcastable to direction's shape (..., {d}) "
                f"(last dimension {d} or 1), got shape {tuple(scale.shape)}"
            )
        try:
            batch_shape = torch.broadcast_shapes(
                direction.shape[:-1],
                scale.shape[:-1],
                df.shape,
                radial_loc.shape,
                radial_scale.shape,
                radial_df.shape,
            )
        except RuntimeError as e:
            raise ValueError(
                "the batch shapes of direction, scale, df, radial_loc, radial_scale and radial_df do not "
                f"broadcast: {e}"
            ) from None
        event_shape = torch.Size((d,))
        self.direction = direction.expand(batch_shape + event_shape)
        self.scale = scale.expand(batch_shape + event_shape)
        self.df = df.expand(batch_shape)
        self.radial_loc = radial_loc.expand(batch_shape)
        self.radial_scale = radial_scale.expand(batch_shape)
        self.radial_df = self.df if self._radial_df_is_df else radial_df.expand(batch_shape)
        self.directional = directional
        super().__init__(batch_shape, event_shape, validate_args=validate_args)
        if self._validate_args:
            for name in self.arg_constraints:
                value = getattr(self, name)
                if not torch.isfinite(value).all():
                    raise ValueError(
                        f"Expected parameter {name} (Tensor of shape {tuple(value.shape)}) of "
                        f"distribution {self.__class__.__name__} to be finite, but found {value}"
                    )

    @staticmethod
    def infer_shapes(direction, df=(), scale=(), radial_loc=(), radial_scale=(), radial_df=()):
        """Batch and event shapes from the shapes of the constructor's tensor arguments."""
        event_shape = torch.Size(direction[-1:])
        batch_shape = torch.Size(
            broadcast_shape(direction[:-1], df, scale[:-1], radial_loc, radial_scale, radial_df)
        )
        return batch_shape, event_shape

    def expand(self, batch_shape, _instance=None) -> PolarStudentT:
        new = self._get_checked_instance(PolarStudentT, _instance)
        batch_shape = torch.Size(batch_shape)
        new.direction = self.direction.expand(batch_shape + self.event_shape)
        new.scale = self.scale.expand(batch_shape + self.event_shape)
        new.df = self.df.expand(batch_shape)
        new.radial_loc = self.radial_loc.expand(batch_shape)
        new.radial_scale = self.radial_scale.expand(batch_shape)
        new._radial_df_is_df = self._radial_df_is_df
        new.radial_df = new.df if self._radial_df_is_df else self.radial_df.expand(batch_shape)
        new.directional = self.directional
        super(PolarStudentT, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self.__dict__.get("_validate_args")
        return new

    @property
    def dim(self) -> int:
        """The ambient dimension ``d``."""
        return self.event_shape[0]

    # ----------------------------------------------------------------------------------------------
    # The two factors.

    def _tangent_quadratic_form(self, u: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_j v_j^2 / s_j` for :math:`v = \mathrm{Log}_m(u)`, finite with finite gradients."""
        m, s = self.direction, self.scale
        eps = torch.finfo(u.dtype).eps
        c = (m * u).sum(-1)
        w = u - c.unsqueeze(-1) * m
        n = _norm(w)
        theta = torch.atan2(n, c)
        # atan2(n, c) / n: a series near u = m (n small, c ~ 1), the plain ratio elsewhere, and at the
        # antipode (n ~ 0, c ~ -1), where Log_m has no direction, the average over tangent directions.
        near_m = (n < eps ** (1.0 / 6.0)) & (c > 0)
        antipode = (n < eps**0.5) & (c <= 0)
        plain = ~(near_m | antipode)
        one = torch.ones_like(n)
        n_safe = torch.where(plain, n, one)
        c_safe = torch.where(near_m, c, one)
        x2 = (n / c_safe).square()
        series = (1.0 - x2 / 3.0 + x2.square() / 5.0) / c_safe
        ratio = torch.where(near_m, series, theta / n_safe)
        quad = ratio.square() * (w.square() / s).sum(-1)
        quad_antipode = theta.square() * ((1.0 - m.square()) / s).sum(-1) / (self.dim - 1)
        return torch.where(antipode, quad_antipode, quad)

    def _directional_log_normalizer(self) -> torch.Tensor:
        nu, s = self.df, self.scale
        if self.directional == "geodesic":
            k = self.dim - 1
            log_det = 0.5 * s.log().sum(-1) - 0.5 * (self.direction.square() * s).sum(-1).log()
        else:
            k = self.dim
            log_det = 0.5 * s.log().sum(-1)
        return (
            torch.lgamma(0.5 * (nu + k)) - torch.lgamma(0.5 * nu) - 0.5 * k * (nu * math.pi).log() - log_det
        )

    def directional_log_prob(self, u: torch.Tensor) -> torch.Tensor:
        r"""The directional factor :math:`\log p_\mathrm{dir}(u)` of unit vectors ``u`` (shape ``(..., d)``).

        With ``directional="geodesic"`` a sub-density w.r.t. the surface measure of :math:`S^{d-1}`; with
        ``"euclidean"`` the :math:`d`-dimensional t at :math:`u - m` (not a density on the sphere).
        Returns the broadcast of ``u.shape[:-1]`` and ``batch_shape``.
        """
        if self._validate_args:
            self._validate_unit(u)
        return self._directional_log_prob(u)

    def _directional_log_prob(self, u: torch.Tensor) -> torch.Tensor:
        if self.directional == "geodesic":
            k = self.dim - 1
            quad = self._tangent_quadratic_form(u)
        else:
            k = self.dim
            quad = ((u - self.direction).square() / self.scale).sum(-1)
        nu = self.df
        return self._directional_log_normalizer() - 0.5 * (nu + k) * torch.log1p(quad / nu)

    def radial_log_prob(self, log_r: torch.Tensor) -> torch.Tensor:
        r"""The radial factor :math:`\log p_\mathrm{rad}(\log r)`: a Student-t density of ``log_r``.

        ``log_r`` has shape ``sample_shape + batch_shape`` (or broadcastable to it). This is a density
        w.r.t. :math:`d \log r`; :meth:`log_prob` adds the Jacobian :math:`-d \log r`.
        """
        return self._radial().log_prob(log_r)

    def _radial(self) -> StudentT:
        return StudentT(self.radial_df, self.radial_loc, self.radial_scale, validate_args=False)

    # ----------------------------------------------------------------------------------------------
    # Distribution interface.

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """:math:`\\log p(y) = \\log p_\\mathrm{dir}(u) + \\log p_\\mathrm{rad}(\\log r) - d \\log r`."""
        if self._validate_args:
            self._validate_sample(value)
            r = _norm(value)
            if not (torch.isfinite(value).all() and (r > 0).all()):
                raise ValueError(
                    "Expected value argument of PolarStudentT.log_prob to be finite and nonzero "
                    "(the density lives on R^d minus the origin)"
                )
        r = _norm(value)
        u = value / r.unsqueeze(-1)
        log_r = r.log()
        return self._directional_log_prob(u) + self.radial_log_prob(log_r) - self.dim * log_r

    def entropy(self) -> torch.Tensor:
        """Not available in closed form (the directional factor has none).

        :raises NotImplementedError: always, naming the Monte Carlo estimator to use instead.
        """
        raise NotImplementedError(
            "PolarStudentT.entropy() has no closed form (its directional factor has none); estimate it by "
            "Monte Carlo, e.g. -dist.log_prob(dist.rsample((n,))).mean(0) (standard error std / sqrt(n))"
        )

    def _validate_unit(self, u: torch.Tensor) -> None:
        if not isinstance(u, torch.Tensor) or u.shape[-1:] != self.event_shape:
            shape = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
            raise ValueError(f"u must be a tensor of shape (..., {self.dim}), got {shape}")
        try:
            torch.broadcast_shapes(u.shape[:-1], self.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"u of shape {tuple(u.shape)} does not broadcast with batch_shape {tuple(self.batch_shape)}"
            ) from None
        if not constraints.sphere.check(u).all():
            raise ValueError("u must be unit vectors (constraints.sphere), but found values off the sphere")

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Draw ``y = r Exp_m(v)`` as the class docstring describes.

        Returns shape ``sample_shape + batch_shape + (d,)``.
        """
        if self.directional != "geodesic":
            raise NotImplementedError(
                'PolarStudentT(directional="euclidean") is not a density on the sphere and has no sampler'
            )
        sample_shape = torch.Size(sample_shape)
        shape = self._extended_shape(sample_shape)
        m, s = self.direction, self.scale
        x = torch.randn(shape, dtype=m.dtype, device=m.device) * s.sqrt()
        sm = s * m
        x_perp = x - sm * ((m * x).sum(-1) / (m * sm).sum(-1)).unsqueeze(-1)
        g = Chi2(self.df).rsample(sample_shape)
        v = x_perp * (g / self.df).rsqrt().unsqueeze(-1)
        # Exp_m(v) = cos|v| m + (sin|v| / |v|) v, with a series for sin(a)/a near a = 0.
        a = _norm(v)
        small = a < torch.finfo(a.dtype).eps ** 0.25
        a_safe = torch.where(small, torch.ones_like(a), a)
        sinc = torch.where(small, 1.0 - a.square() / 6.0, a_safe.sin() / a_safe)
        u = a.cos().unsqueeze(-1) * m + sinc.unsqueeze(-1) * v
        u = u / _norm(u).unsqueeze(-1)
        log_r = self._radial().rsample(sample_shape)
        # A heavy-tailed log r (radial_df near 1) can leave the dtype's range: keep r, and r^2 in the norms
        # that log_prob takes, positive and finite (a draw beyond is set to that edge; its gradient is zero).
        info = torch.finfo(log_r.dtype)
        edge = 0.5 * min(-math.log(info.tiny), math.log(info.max)) - 0.5 * math.log(self.dim) - 1.0
        log_r = log_r.clamp(-edge, edge)
        return log_r.exp().unsqueeze(-1) * u
