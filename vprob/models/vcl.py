"""Variational contrastive learning (VCL): VSimCLR and VSupCon as Pyro model/guide pairs.

Each view of an image gets a posterior over its embedding on the sphere,

    q(z | x) = ProjectedNormal(mu(x), diag sigma(x)^2),     p(z) = Uniform(S^{d-1}),

and the ELBO's reconstruction term is replaced by a contrastive surrogate computed on the posterior
*samples* (InfoNCE for VSimCLR, SupCon for VSupCon). Per batch of B images and two views the objective is

    L = L_con(z) + beta * (1 / 2B) * sum_{views, i} KL(q(z_i | x_i) || p(z)) / d        ("normalized KL")

In Pyro terms the guide samples ``z`` from the projected normal inside two plates (views x images), the
model samples it from the uniform prior and adds ``pyro.factor("contrastive", -2B * L_con)``, and the KL
weight ``beta / d`` is a ``poutine.scale`` on both ``z`` sites. ``Trace_ELBO().differentiable_loss`` of the
pair is therefore ``2B * L``.

Two KL modes:

* ``kl="bound"`` (the VCL paper's): the KL is replaced by its data-processing upper bound
  KL(N(mu, Sigma) || N(0, I)), which is analytic. Both sites are reparameterized with
  :class:`distributions.ProjectedNormalReparam` (the uniform prior is written as its equal,
  ``ProjectedNormal(0, 1)``), so the latent becomes the pre-projection Gaussian ``z_normal`` and
  ``TraceMeanField_ELBO`` computes the bound in closed form (``Trace_ELBO`` estimates the same bound by
  Monte Carlo).
* ``kl="exact"``: the true KL(PN || U), estimated by Monte Carlo through ``ProjectedNormal.log_prob`` in the
  full dimension d (one sample per view and step: log q(z) + log|S^{d-1}|).

Three posterior families (``posterior``): the projected normal above (the paper's), or a von Mises-Fisher or
power spherical posterior, vMF(mu/|mu|, kappa) and PS(mu/|mu|, kappa), whose concentration kappa =
softplus(.) comes from the head as the projected normal's scale does. Their KL to the uniform prior is exact
and analytic (registered), so ``TraceMeanField_ELBO`` uses it and no bound is needed; ``kl`` then does not
apply. Their uncertainty score is the log determinant of the tangent-plane Gaussian that approximates them
at their mode: -(d - 1) log kappa for the vMF (variance 1/kappa per direction) and (d - 1) log(2/kappa) for
the power spherical ((1 + cos t)^kappa ~ exp(-kappa t^2 / 4)).

Reference: "Variational contrastive learning" (VCL: VSimCLR, VSupCon); SimCLR (Chen et al., 2020);
SupCon (Khosla et al., 2020).

Example with a plain Pyro loop::

    vcl = VCL(DigitsConvNet(), dim=16)
    svi = pyro.infer.SVI(vcl.model, vcl.guide, pyro.optim.Adam({"lr": 1e-3}), vcl.elbo())
    loss = svi.step(x1, x2)   # x1, x2: two augmented views, (B, C, H, W)
"""

from __future__ import annotations

import pyro
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import Tensor, nn

from distributions import (
    HypersphericalUniform,
    PowerSpherical,
    ProjectedNormal,
    ProjectedNormalReparam,
    VonMisesFisher,
)
from vprob.losses import info_nce, supcon
from vprob.models.elbo import two_view_objective
from vprob.nets import LOG_VARIANCE_RANGE, MLPHead, feature_dim_of

KL_MODES = ("bound", "exact")
POSTERIORS = ("projected_normal", "vmf", "power_spherical")
# The concentration of a vMF or power spherical posterior stays where their numerics are tested.
CONCENTRATION_RANGE = (1e-4, 1e5)


class VCL(nn.Module):
    """VSimCLR (``supervised=False``) or VSupCon (``supervised=True``).

    Args:
        encoder: any module mapping images (N, C, H, W) to features (N, F); F is ``feature_dim`` if given,
            else found by :func:`vprob.nets.feature_dim_of` (its ``feature_dim`` attribute or a dry pass).
        dim: embedding dimension d (the sphere is S^{d-1} in R^d), d >= 2.
        supervised: use SupCon on the samples (labels required) instead of InfoNCE.
        kl: ``"bound"`` (Gaussian data-processing bound, the paper's) or ``"exact"`` (Monte Carlo KL to the
            uniform prior through the projected normal's log-density).
        beta: weight of the normalized KL term (the KL is divided by d; beta = 1 by default, a choice).
        tau: temperature of the contrastive surrogate.
        head_hidden: hidden width of the MLP head; defaults to F.
        chunk_size: passed to the contrastive loss (``None`` = automatic memory-lean path).
        gather: contrast against every process's samples (``torch.distributed`` data parallelism; see
            ``vprob.losses.info_nce``); a no-op in a single process.
        feature_dim: the encoder's output width F (default: found as described for ``encoder``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        dim: int,
        supervised: bool = False,
        kl: str = "bound",
        beta: float = 1.0,
        tau: float = 0.07,
        head_hidden: int | None = None,
        chunk_size: int | None = None,
        gather: bool = False,
        feature_dim: int | None = None,
        posterior: str = "projected_normal",
    ) -> None:
        super().__init__()
        if posterior not in POSTERIORS:
            raise ValueError(f"posterior must be one of {POSTERIORS}, got {posterior!r}")
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
        if kl not in KL_MODES:
            raise ValueError(f"kl must be one of {KL_MODES}, got {kl!r}")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta!r}")
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau!r}")
        feature_dim = feature_dim_of(encoder, feature_dim)
        self.encoder = encoder
        # The head gives the location and, per coordinate, log sigma^2 (projected normal) or one
        # concentration (vMF, power spherical).
        spread_width = dim if posterior == "projected_normal" else 1
        self.head = MLPHead(feature_dim, head_hidden or feature_dim, dim + spread_width)
        self.posterior_family = posterior
        self.dim = dim
        self.supervised = supervised
        self.kl = kl
        self.beta = beta
        self.tau = tau
        self.chunk_size = chunk_size
        self.gather = gather
        self.num_views = 2
        self.last_stats: dict[str, Tensor] = {}

    # ----------------------------------------------------------------------------------------------
    # Posterior
    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters of images x (N, C, H, W), float32: (loc (N, d), scale (N, d)) for the
        projected normal; (mean direction (N, d), concentration (N,)) for the vMF and power spherical."""
        out = self.head(self.encoder(x)).float()
        loc, spread = out.split(self.dim, dim=-1)
        if self.posterior_family == "projected_normal":
            return loc, torch.exp(0.5 * spread.clamp(*LOG_VARIANCE_RANGE))
        return F.normalize(loc, dim=-1), F.softplus(spread.squeeze(-1)).clamp(*CONCENTRATION_RANGE)

    def posterior_distribution(self, loc: Tensor, spread: Tensor):
        """q(z | x) from :meth:`posterior`'s parameters (any batch shape)."""
        if self.posterior_family == "projected_normal":
            return ProjectedNormal(loc, spread)
        family = VonMisesFisher if self.posterior_family == "vmf" else PowerSpherical
        return family(loc, spread)

    def _log_det(self, loc: Tensor, spread: Tensor) -> Tensor:
        """log det of the posterior's covariance (projected normal: of the pre-projection Gaussian; vMF and
        power spherical: of their tangent-plane Gaussian at the mode)."""
        if self.posterior_family == "projected_normal":
            return 2 * spread.log().sum(-1)
        tangent_variance = 1.0 / spread if self.posterior_family == "vmf" else 2.0 / spread
        return (self.dim - 1) * tangent_variance.log()

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """Point embedding mu / |mu| of images x: (N, d)."""
        loc, _ = self.posterior(x)
        return F.normalize(loc, dim=-1)

    @torch.no_grad()
    def uncertainty(self, x: Tensor) -> dict[str, Tensor]:
        """Per-image uncertainty scores, each (N,): ``log_det`` (:meth:`_log_det`; projected normal:
        sum_k log sigma_k^2) and, for the projected normal, the scale-free ``log_det_scale_free`` =
        sum_k log sigma_k^2 - 2 d log|mu| (invariant to rescaling mu and sigma)."""
        loc, spread = self.posterior(x)
        log_det = self._log_det(loc, spread)
        if self.posterior_family != "projected_normal":
            return {"log_det": log_det}
        return {"log_det": log_det, "log_det_scale_free": log_det - 2 * self.dim * loc.norm(dim=-1).log()}

    # ----------------------------------------------------------------------------------------------
    # Pyro model / guide
    @property
    def _bound(self) -> bool:
        """The Gaussian bound applies: a projected normal posterior with ``kl="bound"``."""
        return self.posterior_family == "projected_normal" and self.kl == "bound"

    def _prior(self, like: Tensor):
        if self._bound:
            # PN(0, I) is exactly the uniform distribution; written this way its reparameterized
            # pre-projection site is N(0, I), which makes the KL the analytic Gaussian bound.
            return ProjectedNormal(torch.zeros_like(like), 1.0)
        return HypersphericalUniform(self.dim, device=like.device, dtype=like.dtype)

    def _model(self, x1: Tensor, x2: Tensor, labels: Tensor | None = None) -> Tensor:
        batch = x1.shape[0]
        anchor = torch.zeros(self.dim, device=x1.device)
        with (
            pyro.plate("views", 2, dim=-2),
            pyro.plate("images", batch, dim=-1),
            poutine.scale(scale=self.beta / self.dim),
        ):
            z = pyro.sample("z", self._prior(anchor).expand([2, batch]))
        contrastive = self._contrastive(z, labels)
        self.last_stats["contrastive"] = contrastive.detach()
        pyro.factor("contrastive", -2 * batch * contrastive)
        return z

    def _guide(self, x1: Tensor, x2: Tensor, labels: Tensor | None = None) -> Tensor:
        pyro.module("vcl", self)
        batch = x1.shape[0]
        loc, spread = self.posterior(torch.cat([x1, x2]))
        loc, spread = loc.view(2, batch, self.dim), spread.view(2, batch, *spread.shape[1:])
        self.last_stats["log_det"] = self._log_det(loc.detach(), spread.detach()).mean()
        self.last_stats["loc_norm"] = loc.detach().norm(dim=-1).mean()
        with (
            pyro.plate("views", 2, dim=-2),
            pyro.plate("images", batch, dim=-1),
            poutine.scale(scale=self.beta / self.dim),
        ):
            # With the bound's reparameterization, the guide's "z" is a deterministic function of its
            # Gaussian site "z_normal"; marking it auxiliary tells Pyro it has no model counterpart.
            infer = {"is_auxiliary": True} if self._bound else {}
            return pyro.sample("z", self.posterior_distribution(loc, spread), infer=infer)

    def _reparam(self, fn):
        if self._bound:
            return poutine.reparam(fn, config={"z": ProjectedNormalReparam()})
        return fn

    def model(self, x1: Tensor, x2: Tensor, labels: Tensor | None = None) -> Tensor:
        """Prior over the embeddings z (2, B, d) of both views and the contrastive surrogate factor."""
        return self._reparam(self._model)(x1, x2, labels)

    def guide(self, x1: Tensor, x2: Tensor, labels: Tensor | None = None) -> Tensor:
        """The posterior over z (2, B, d) given the two views x1, x2 (B, C, H, W)."""
        return self._reparam(self._guide)(x1, x2, labels)

    def elbo(self, **kwargs) -> Trace_ELBO:
        """The ELBO that computes this KL best: analytic (the Gaussian bound, or the exact KL of a vMF or
        power spherical posterior) or Monte Carlo (the projected normal's exact KL)."""
        analytic = self._bound or self.posterior_family != "projected_normal"
        return TraceMeanField_ELBO(**kwargs) if analytic else Trace_ELBO(**kwargs)

    # ----------------------------------------------------------------------------------------------
    def _contrastive(self, z: Tensor, labels: Tensor | None) -> Tensor:
        if self.supervised:
            if labels is None:
                raise ValueError("labels are required for VSupCon (supervised=True)")
            return supcon(z, labels, tau=self.tau, chunk_size=self.chunk_size, gather=self.gather)
        return info_nce(z, tau=self.tau, chunk_size=self.chunk_size, gather=self.gather)

    def training_loss(
        self, views: Tensor, labels: Tensor | None = None, elbo: Trace_ELBO | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-batch objective L = -ELBO / 2B for views (2, B, C, H, W) (``elbo`` default: :meth:`elbo`),
        with its parts for logging: ``contrastive``, ``kl_term`` = L - contrastive, ``log_det``,
        ``loc_norm``."""
        loss, stats = two_view_objective(self, views, labels, elbo if elbo is not None else self.elbo())
        stats["kl_term"] = loss.detach() - stats["contrastive"]
        return loss, stats
