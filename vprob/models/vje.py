"""Variational joint embedding (VJE): the non-contrastive member of the family, as a Pyro model/guide pair.

Two augmented views x_1, x_2 of each image go through the encoder f, with **no projector**, to
h_1, h_2 in R^D (D = ``encoder.feature_dim``). An inference network g maps h_a to (mu_a, log nu_a) and
defines a diagonal Gaussian posterior over a latent z in the same space; the latent predicts the
*other* view's embedding, used as a stop-gradient target y_b = sg(h_b) (docs/maths.md, VJE):

    q(z | h_a)     = N(mu_a, diag nu_a)
    p(z)           = N(0, I)                                                        (choice)
    p(y_b | z)     = PolarStudentT(direction = z / |z|, df, scale = nu_a,             (docs/maths.md)
                                   radial_loc = log|z| (choice), radial_scale, radial_df)
    ELBO_{a->b}    = E_q[log p(y_b | z; nu_a)] - KL(q(z | h_a) || p(z))
    L              = -1/2 (ELBO_{1->2} + ELBO_{2->1})        averaged over the B images of a batch.

The directional scale of the likelihood **is** the posterior variance nu_a, not detached: the gradient
reaches nu (and through it g and f) from both the KL and the likelihood. The targets carry no gradient.

In Pyro terms, both directions are the two slices of one latent site ``"z"`` of shape (2, B, D) inside
the plates ``"directions"`` (dim -2; slice 0 is 1->2, slice 1 is 2->1) and ``"images"`` (dim -1):

* ``guide(x1, x2)`` runs the encoder and g and samples z ~ N(mu, diag nu) (``Normal(...).to_event(1)``);
* ``model(x1, x2)`` is a *conditional* model: it samples z from the N(0, I) prior and observes the targets
  ``pyro.sample("y", PolarStudentT(...), obs=sg([h_2, h_1]))``; it needs nu_a and the targets, which are
  network outputs of x1, x2. The guide caches them for the model call that follows it with the same
  inputs (so the encoder runs once per SVI step); a model called on its own (Predictive without a guide,
  ``poutine.trace(model)``) computes them itself. Both paths give the same values.

``TraceMeanField_ELBO`` (what :meth:`VJE.elbo` returns) computes the KL of the two diagonal Gaussians
analytically; ``Trace_ELBO`` estimates it by Monte Carlo. ``ELBO.differentiable_loss`` of the pair is the
sum over the 2B (direction, image) terms, i.e. ``2B * L``; :meth:`VJE.training_loss` divides by 2B and so
returns the **per-image, per-direction mean** L (the scale of VCL's ``training_loss``).

``radial_weight`` w multiplies the radial log-factor:
``log p_w(y | z) = log p_dir(u) + w log p_rad(log r) - D log r``. With w = 1 (default) this is the
polar Student-t density on R^D and the objective is a true ELBO. With w != 1 the radial factor is raised
to the power w and the likelihood is no longer normalized: the objective becomes a tempered ("power
likelihood") ELBO, no longer a bound on a model's evidence, and w = 0 drops the radial factor so that
only the direction of the target is modelled. The Jacobian ``-D log r`` is kept at any w (it carries no
gradient, the targets being stop-gradient, and it keeps w = 1 a density). In the Pyro model the site
``"y"`` stays the exact density and the tempering is a separate ``pyro.factor("y_radial_weight",
(w - 1) log p_rad)``.

Heavy tails matter: as df -> infinity (the Gaussian limit, e.g. ``df=1e6``) VJE is reported to collapse;
df = 5 (a moderate value) is the default **(choice)**. ``directional="euclidean"`` is the earlier version's
ablation (a D-dimensional t at u - m, not a density on the sphere).

Reference: the VJE paper, "Variational Joint Embedding" (published version; the Euclidean directional
factor is its earlier version's).

Example with a plain Pyro loop::

    vje = VJE(DigitsConvNet())
    svi = pyro.infer.SVI(vje.model, vje.guide, pyro.optim.Adam({"lr": 1e-3}), TraceMeanField_ELBO())
    loss = svi.step(x1, x2)   # x1, x2: two augmented views, (B, C, H, W); loss = 2B * L
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import TraceMeanField_ELBO
from torch import Tensor, nn

from distributions import PolarStudentT
from distributions.kl import gaussian_kl_to_standard
from distributions.polar_student_t import DIRECTIONAL_MODES
from vprob.data import check_image_batch
from vprob.models.elbo import two_view_objective
from vprob.nets import LOG_VARIANCE_RANGE, MLPHead, feature_dim_of

SCORE_COORDINATES = ("polar", "cartesian")
# How the posterior variance nu (of z in R^D) becomes the directional t's tangent-plane scale (radians^2):
# "posterior_variance" uses nu itself (the first reading), "angular" the delta-method variance of z/|z|,
# nu / |mu|^2, which keeps the directional factor's mass on the sphere (see VJE's docstring).
DIRECTIONAL_SCALES = ("posterior_variance", "angular")


class Posterior(NamedTuple):
    """Network outputs of one call on both views, each (2, B, D), float32 (float64 for a float64 model):
    the embeddings ``h`` (slice 0 = view 1), the posterior means ``mu`` and variances ``nu`` from them."""

    h: Tensor
    mu: Tensor
    nu: Tensor


def _finite_number(value: float, name: str, minimum: float, strict: bool, hint: str = "") -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > minimum if strict else value >= minimum)
    if not ok:
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {relation} {minimum:g}, got {value!r}{hint}")
    return float(value)


def check_options(
    df: float = 5.0,
    radial_df: float | None = None,
    radial_weight: float = 1.0,
    radial_scale: float = 1.0,
    directional: str = "geodesic",
    num_particles: int = 1,
    directional_scale: str = "angular",
    score_samples: int = 0,
) -> None:
    """Raise ValueError, naming the option, if a VJE option is invalid."""
    _finite_number(df, "df", 0.0, True, " (use a large value such as 1e6 for the Gaussian limit)")
    if radial_df is not None:
        _finite_number(radial_df, "radial_df", 0.0, True)
    _finite_number(radial_scale, "radial_scale", 0.0, True)
    _finite_number(radial_weight, "radial_weight", 0.0, False)
    if directional not in DIRECTIONAL_MODES:
        raise ValueError(f"directional must be one of {DIRECTIONAL_MODES}, got {directional!r}")
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be an integer >= 1, got {num_particles!r}")
    if directional_scale not in DIRECTIONAL_SCALES:
        raise ValueError(f"directional_scale must be one of {DIRECTIONAL_SCALES}, got {directional_scale!r}")
    if isinstance(score_samples, bool) or not isinstance(score_samples, int) or score_samples < 0:
        raise ValueError(
            f"score_samples must be an integer >= 0 (0: the posterior mean), got {score_samples!r}"
        )


def _first_conv_channels(module: nn.Module) -> int | None:
    """Input channels of the first convolution of ``module`` (what its images must have), if any."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            return layer.in_channels
    return None


class VJE(nn.Module):
    """Variational joint embedding with the polar Student-t likelihood (module docstring for the maths).

    Args:
        encoder: backbone mapping images (N, C, H, W) to features (N, D); must have an integer
            ``feature_dim`` = D >= 2. It is used without a projector: h is the representation.
        df: degrees of freedom of the directional t (default 5.0, a moderate value (choice); very large
            values, e.g. 1e6, give the Gaussian-limit ablation). Must be finite and > 0.
        radial_df: degrees of freedom of the t on log r (default ``None``: the same as ``df``).
        radial_weight: weight w >= 0 of the radial log-factor (default 1.0: the exact density; see the
            module docstring for w != 1).
        radial_scale: scale of the t on log r, standard-deviation-like (default 1.0 (choice)).
        directional: ``"geodesic"`` (default, the sphere sub-density of docs/maths.md, Polar Student-t) or
            ``"euclidean"`` (the earlier version's ablation).
        num_particles: posterior samples per (direction, image) and step (default 1), vectorized in
            :meth:`elbo`.
        hidden: hidden width of the inference network g (default D).
        feature_dim: the encoder's output width D (default: its ``feature_dim`` attribute, else found by
            one dry forward pass: :func:`vprob.nets.feature_dim_of`).
        directional_scale: how nu becomes the directional t's tangent-plane scale, in radians^2:
            ``"angular"`` (default) nu / |mu|^2, the delta-method variance of the direction z/|z| under
            q; ``"posterior_variance"``: nu itself, the first reading, kept as an ablation. With
            nu itself the scale is in the units of z, not of angles: on digits (D = 128) sum(nu) ~ 39
            against |mu|^2 ~ 8, the median tangent norm of the t is beyond pi and its mass on the sphere is
            below e^-160, so the directional factor says little. BENCHMARKS.md compares the two.
        score_samples: how the anomaly and uncertainty scores integrate over z: 0 plugs in the posterior
            mean z = mu (deterministic); K > 0 averages the negative log-likelihood over K posterior
            samples, the likelihood term the objective trains (default 0; BENCHMARKS.md compares them).
    """

    def __init__(
        self,
        encoder: nn.Module,
        df: float = 5.0,
        radial_df: float | None = None,
        radial_weight: float = 1.0,
        directional: str = "geodesic",
        num_particles: int = 1,
        hidden: int | None = None,
        radial_scale: float = 1.0,
        directional_scale: str = "angular",
        score_samples: int = 0,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__()
        check_options(
            df,
            radial_df,
            radial_weight,
            radial_scale,
            directional,
            num_particles,
            directional_scale,
            score_samples,
        )
        self.directional_scale, self.score_samples = directional_scale, score_samples
        self.df = float(df)
        self.radial_df = None if radial_df is None else float(radial_df)
        self.radial_scale = float(radial_scale)
        self.radial_weight = float(radial_weight)
        self.directional = directional
        self.num_particles = num_particles
        feature_dim = feature_dim_of(encoder, feature_dim)
        if feature_dim < 2:
            raise ValueError(f"encoder.feature_dim must be >= 2 (directions on S^(D-1)), got {feature_dim}")
        if hidden is not None and (isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1):
            raise ValueError(f"hidden must be a positive integer or None, got {hidden!r}")
        self.encoder = encoder
        self.head = MLPHead(feature_dim, hidden or feature_dim, 2 * feature_dim)
        self.dim = feature_dim
        self.num_views = 2
        self._in_channels = _first_conv_channels(encoder)
        self.last_stats: dict[str, Tensor] = {}
        # (x1, x2, grad mode, training flag, outputs) of the last guide call, taken by the model call that
        # follows it with the same inputs. Holding x1 and x2 themselves keeps their identity unambiguous.
        self._cache: tuple[Tensor, Tensor, bool, bool, Posterior] | None = None

    # ----------------------------------------------------------------------------------------------
    # Networks
    def _check_images(self, x: Tensor, name: str = "x") -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 4 or x.shape[0] == 0:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a non-empty float image batch (N, C, H, W), got {shape}")
        if self._in_channels is not None and x.shape[1] != self._in_channels:
            raise ValueError(
                f"{name} has {x.shape[1]} channels but the encoder takes {self._in_channels} "
                f"(got shape {tuple(x.shape)})"
            )

    def features(self, x: Tensor) -> Tensor:
        """Embeddings h = f(x) of normalized images x (N, C, H, W): (N, D), float32 (float64 for a float64
        model): lower-precision outputs (autocast) are cast up, so every log-density is in float32."""
        self._check_images(x)
        return _full_precision(self.encoder(x))

    def posterior_from_features(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, nu) of q(z | h) for embeddings h (..., D): both (..., D), at least float32, nu > 0."""
        out = _full_precision(self.head(h.reshape(-1, self.dim))).view(*h.shape[:-1], 2 * self.dim)
        mu, log_nu = out.split(self.dim, dim=-1)
        return mu, torch.exp(log_nu.clamp(*LOG_VARIANCE_RANGE))

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean and variance (mu, nu) of images x (N, C, H, W): both (N, D), at least float32."""
        return self.posterior_from_features(self.features(x))

    def _forward(self, x1: Tensor, x2: Tensor) -> Posterior:
        self._check_images(x1, "x1")
        self._check_images(x2, "x2")
        if x1.shape != x2.shape:
            raise ValueError(
                f"x1 and x2 must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}"
            )
        batch = x1.shape[0]
        # One encoder call on both views (BatchNorm sees the 2B images together, as in training).
        h = _full_precision(self.encoder(torch.cat([x1, x2]))).view(2, batch, self.dim)
        mu, nu = self.posterior_from_features(h)
        return Posterior(h, mu, nu)

    def _take_cached(self, x1: Tensor, x2: Tensor) -> Posterior:
        """The guide's outputs for exactly these inputs (consumed once), else a fresh computation."""
        cache, self._cache = self._cache, None
        if cache is not None:
            c1, c2, grad_mode, training, outputs = cache
            if c1 is x1 and c2 is x2 and grad_mode == torch.is_grad_enabled() and training == self.training:
                return outputs
        return self._forward(x1, x2)

    # ----------------------------------------------------------------------------------------------
    # Likelihood
    def tangent_scale(self, mu: Tensor, nu: Tensor) -> Tensor:
        """The directional t's tangent-plane scale (..., D) from the posterior (mu, nu) (..., D): nu / |mu|^2
        (``directional_scale="angular"``) or nu itself (``"posterior_variance"``)."""
        if self.directional_scale == "posterior_variance":
            return nu
        # A floor keeps the scale finite for mu = 0 (a scale that large makes the factor flat anyway).
        return nu / mu.square().sum(-1, keepdim=True).clamp_min(1e-12)

    def likelihood(self, z: Tensor, scale: Tensor) -> PolarStudentT:
        """p(y | z): PolarStudentT around z / |z| with tangent-plane scale ``scale`` (:meth:`tangent_scale`)
        and radial location log|z|.

        ``z`` (..., D) and ``scale`` (..., D) broadcast; the batch shape is their broadcast without D.
        """
        z = _full_precision(z)
        radius = torch.linalg.vector_norm(z, dim=-1)
        return PolarStudentT(
            z / radius.unsqueeze(-1),
            df=self.df,
            scale=scale,
            radial_loc=radius.log(),
            radial_scale=self.radial_scale,
            radial_df=self.radial_df,
            directional=self.directional,
        )

    # ----------------------------------------------------------------------------------------------
    # Pyro model / guide
    def model(self, x1: Tensor, x2: Tensor, labels: Tensor | None = None) -> Tensor:
        """N(0, I) prior over z (2, B, D) and the polar Student-t likelihood of the swapped, stop-gradient
        targets [h_2, h_1] given z and the posterior variances nu (a conditional model of x1, x2)."""
        pyro.module("vje", self)
        outputs = self._take_cached(x1, x2)
        targets = outputs.h.detach().flip(0)  # direction a -> b predicts the other view's embedding
        batch = x1.shape[0]
        prior = dist.Normal(outputs.h.new_zeros(self.dim), 1.0).expand([2, batch, self.dim]).to_event(1)
        with pyro.plate("directions", 2, dim=-2), pyro.plate("images", batch, dim=-1):
            z = pyro.sample("z", prior)
            likelihood = self.likelihood(z, self.tangent_scale(outputs.mu, outputs.nu))
            pyro.sample("y", likelihood, obs=targets)
            if self.radial_weight != 1.0:
                tempering = (self.radial_weight - 1.0) * likelihood.radial_log_prob(_log_radius(targets))
                pyro.factor("y_radial_weight", tempering)
        return z

    def guide(self, x1: Tensor, x2: Tensor, labels: Tensor | None = None) -> Tensor:
        """Diagonal Gaussian posterior over z (2, B, D), slice a = q(z | h_a); views x1, x2 (B, C, H, W)."""
        pyro.module("vje", self)
        outputs = self._forward(x1, x2)
        self._cache = (x1, x2, torch.is_grad_enabled(), self.training, outputs)
        mu, nu = outputs.mu.detach(), outputs.nu.detach()
        self.last_stats.update(self._collapse_stats(outputs.h.detach(), nu, mu))
        self.last_stats["kl"] = gaussian_kl_to_standard(mu, nu).mean()
        with pyro.plate("directions", 2, dim=-2), pyro.plate("images", x1.shape[0], dim=-1):
            return pyro.sample("z", dist.Normal(outputs.mu, outputs.nu.sqrt()).to_event(1))

    def elbo(self, **kwargs) -> TraceMeanField_ELBO:
        """``TraceMeanField_ELBO`` (analytic Gaussian KL) with ``num_particles`` vectorized posterior samples;
        keyword arguments override these settings."""
        settings = dict(
            num_particles=self.num_particles, vectorize_particles=self.num_particles > 1, max_plate_nesting=2
        )
        return TraceMeanField_ELBO(**{**settings, **kwargs})

    def training_loss(
        self, views: Tensor, labels: Tensor | None = None, elbo: TraceMeanField_ELBO | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-batch objective L = -ELBO / 2B (mean over images and both directions) for views
        (2, B, C, H, W) (``elbo`` default: :meth:`elbo`), and its parts for logging (detached scalars):
        ``kl`` (the analytic mean KL), ``nll`` = L - kl (the likelihood term, exactly so with the
        analytic-KL ELBO of :meth:`elbo`), and the collapse monitors of :meth:`collapse_stats`."""
        loss, stats = two_view_objective(self, views, labels, elbo if elbo is not None else self.elbo())
        stats["nll"] = loss.detach() - stats["kl"]
        return loss, stats

    # ----------------------------------------------------------------------------------------------
    # Monitors and scores
    @staticmethod
    def _collapse_stats(h: Tensor, nu: Tensor, mu: Tensor | None = None) -> dict[str, Tensor]:
        h = _full_precision(h.reshape(-1, h.shape[-1]))
        stats = {
            "embedding_std": F.normalize(h, dim=-1).std(dim=0).mean(),
            "mean_nu": nu.mean(),
            "mean_radius": torch.linalg.vector_norm(h, dim=-1).mean(),
        }
        if mu is not None:
            stats["mean_loc_radius"] = torch.linalg.vector_norm(mu, dim=-1).mean()
        return stats

    @torch.no_grad()
    def collapse_stats(self, h: Tensor, nu: Tensor | None = None) -> dict[str, Tensor]:
        """Collapse monitors of embeddings h (N, D) (or (2, B, D)), scalars:

        * ``embedding_std``: std across the batch of h / |h|, averaged over the D coordinates; about
          1/sqrt(D) for directions spread over the sphere, 0 when every image has the same direction
          (complete collapse), small under dimensional collapse;
        * ``mean_nu``: mean posterior variance; ``mean_radius``: mean |h|; ``mean_loc_radius``: mean |mu|.

        ``nu`` defaults to g(h) evaluated in eval mode (running BatchNorm statistics; the module's mode is
        restored), so that monitoring never changes the running statistics.
        """
        was_training = self.head.training
        self.head.eval()
        try:
            mu, nu_h = self.posterior_from_features(_full_precision(h))
        finally:
            self.head.train(was_training)
        return self._collapse_stats(h, nu_h if nu is None else nu, mu)

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """Point embedding h / |h| of images x (N, C, H, W): (N, D).

        VJE's representation is the encoder output h itself (no projector; h is what the targets are and
        what kNN and linear probes read), so the point embedding is its direction, not mu / |mu| (mu is the
        prediction of the *other* view's embedding; :meth:`posterior` gives it).
        """
        return F.normalize(self.features(x), dim=-1)

    @torch.no_grad()
    def uncertainty(self, x: Tensor) -> dict[str, Tensor]:
        """Per-image scores of images x (N, C, H, W), each (N,), higher = more uncertain:

        * ``log_det``: log det of the posterior covariance, sum_k log nu_k (VCL's score);
        * ``nll``: the polar negative log-likelihood (:meth:`pair_nll`) of the image's own embedding
          under the likelihood centred at its posterior mean (no augmentation; :meth:`anomaly_score`
          averages over augmented pairs instead).
        """
        h = self.features(x)
        mu, nu = self.posterior_from_features(h)
        nll = self._nll_parts(h, mu, self.tangent_scale(mu, nu))
        return {"log_det": nu.log().sum(-1), "nll": self._combine(nll, "polar")}

    def _nll_parts(self, y: Tensor, z: Tensor, scale: Tensor) -> dict[str, Tensor]:
        """-log p_dir(u), -log p_rad(log r) (unweighted) and log r of targets y (..., D) given z and the
        tangent scale."""
        likelihood = self.likelihood(z, scale)
        radius = torch.linalg.vector_norm(y, dim=-1)
        log_r = radius.log()
        return {
            "directional": -likelihood.directional_log_prob(y / radius.unsqueeze(-1)),
            "radial": -likelihood.radial_log_prob(log_r),
            "log_radius": log_r,
        }

    def _pair_nll_parts(
        self, x1: Tensor, x2: Tensor, samples: int = 0, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """The parts of :meth:`_nll_parts` for both directions of a pair of views, averaged: each (N,).
        Direction a scores the *other* view's embedding h_b under q(z | h_a), as in training; ``samples``
        0 plugs in z = mu, K > 0 averages over K draws z ~ q (drawn with ``generator``)."""
        outputs = self._forward(x1, x2)
        scale = self.tangent_scale(outputs.mu, outputs.nu)
        targets = outputs.h.flip(0)
        if samples == 0:
            parts = self._nll_parts(targets, outputs.mu, scale)
        else:
            eps = torch.randn(
                (samples, *outputs.mu.shape),
                generator=generator,
                device=outputs.mu.device,
                dtype=outputs.mu.dtype,
            )
            parts = self._nll_parts(targets, outputs.mu + outputs.nu.sqrt() * eps, scale)
            parts = {name: value.mean(0) if value.ndim == 3 else value for name, value in parts.items()}
        return {name: value.mean(0) for name, value in parts.items()}

    def _combine(self, parts: dict[str, Tensor], coordinates: str) -> Tensor:
        if coordinates not in SCORE_COORDINATES:
            raise ValueError(f"coordinates must be one of {SCORE_COORDINATES}, got {coordinates!r}")
        nll = parts["directional"] + self.radial_weight * parts["radial"]
        return nll + self.dim * parts["log_radius"] if coordinates == "cartesian" else nll

    @torch.no_grad()
    def pair_nll(self, x1: Tensor, x2: Tensor, coordinates: str = "polar") -> Tensor:
        """Symmetric negative log-likelihood of two views x1, x2 (N, C, H, W) of the same images: (N,).

        -1/2 [log p(h_2 | z = mu_1; nu_1) + log p(h_1 | z = mu_2; nu_2)]: the likelihood term of the
        objective with the posterior mean plugged in for z (deterministic, no sampling noise; the
        anomaly scores can average over posterior samples instead, ``score_samples``).

        ``coordinates`` chooses the base measure of the density **(choice)**:

        * ``"polar"`` (default): the density of the polar coordinates (log r, u) of the target w.r.t.
          d(log r) x the sphere's surface measure, -[log p_dir(u) + w log p_rad(log r)], the coordinates
          in which the polar Student-t is defined;
        * ``"cartesian"``: the density on R^D, which adds D log r (the volume factor of y -> (log r, u)).
          That term carries no information about the fit but makes the score move with |h| at a weight
          D (128 to 512 here), re-coupling norm and direction that the model keeps apart; on one-class
          digits its AUROC is lower on average and far less stable across classes (:mod:`vprob.anomaly`).
        """
        return self._combine(self._pair_nll_parts(x1, x2), coordinates)

    @torch.no_grad()
    def anomaly_scores(
        self,
        images: Tensor,
        augment: Callable[[Tensor, torch.Generator | None], Tensor],
        num_pairs: int = 8,
        generator: torch.Generator | None = None,
        batch_size: int = 512,
        samples: int | None = None,
    ) -> dict[str, Tensor]:
        """The likelihood scores of uint8 images (N, C, H, W), averaged over ``num_pairs`` pairs of augmented
        views, each (N,), higher = more anomalous: ``nll`` (polar coordinates, the default score),
        ``nll_cartesian`` (density on R^D) and ``nll_directional`` (the directional factor alone).
        ``samples``: posterior draws averaged per pair (default: the model's ``score_samples``; 0: z = mu).

        ``augment(images_uint8, generator)`` draws one normalized view (e.g. a ``SimCLRAugment``);
        ``generator`` (on the images' device) makes the views reproducible. Uses the module's current mode:
        call it in eval mode (running BatchNorm statistics) so that an image's score does not depend on
        the other images of its batch.
        """
        check_image_batch(images, non_empty=True)
        if isinstance(num_pairs, bool) or not isinstance(num_pairs, int) or num_pairs < 1:
            raise ValueError(f"num_pairs must be a positive integer, got {num_pairs!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        samples = self.score_samples if samples is None else samples
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise ValueError(f"samples must be an integer >= 0, got {samples!r}")
        chunks: list[dict[str, Tensor]] = []
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size]
            total: dict[str, Tensor] = {}
            for _ in range(num_pairs):
                views = augment(chunk, generator), augment(chunk, generator)
                parts = self._pair_nll_parts(*views, samples=samples, generator=generator)
                total = {name: total.get(name, 0.0) + value / num_pairs for name, value in parts.items()}
            chunks.append(
                {
                    "nll": self._combine(total, "polar"),
                    "nll_cartesian": self._combine(total, "cartesian"),
                    "nll_directional": total["directional"],
                }
            )
        return {name: torch.cat([c[name] for c in chunks]) for name in chunks[0]}

    @torch.no_grad()
    def anomaly_score(
        self,
        images: Tensor,
        augment: Callable[[Tensor, torch.Generator | None], Tensor],
        num_pairs: int = 8,
        generator: torch.Generator | None = None,
        batch_size: int = 512,
        coordinates: str = "polar",
    ) -> Tensor:
        """Anomaly score of uint8 images (N, C, H, W): the negative representation-space log-likelihood
        (:meth:`pair_nll` in ``coordinates``) averaged over ``num_pairs`` pairs of augmented views
        (docs/maths.md, VJE): (N,), higher = more anomalous. Arguments as in :meth:`anomaly_scores`."""
        if coordinates not in SCORE_COORDINATES:
            raise ValueError(f"coordinates must be one of {SCORE_COORDINATES}, got {coordinates!r}")
        scores = self.anomaly_scores(images, augment, num_pairs, generator, batch_size)
        return scores["nll" if coordinates == "polar" else "nll_cartesian"]


def _full_precision(x: Tensor) -> Tensor:
    """x in float32 if it is in a lower precision (bf16 / fp16 under autocast); float64 stays float64."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _log_radius(y: Tensor) -> Tensor:
    return torch.linalg.vector_norm(y, dim=-1).log()
