"""Reparameterizer for :class:`~distributions.projected_normal.ProjectedNormal` latent sites."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.infer.reparam.strategies as _strategies
import torch
from pyro.infer.reparam.reparam import Reparam

from distributions.projected_normal import ProjectedNormal

__all__ = ["ProjectedNormalReparam"]


class ProjectedNormalReparam(Reparam):
    r"""Reparameterize a latent ``ProjectedNormal(loc, scale)`` site as its pre-projection Gaussian.

    Like :class:`pyro.infer.reparam.ProjectedNormalReparam` (which only recognizes Pyro's class), a site
    ``name`` is replaced by an auxiliary latent site ``{name}_normal`` distributed as
    ``Normal(loc, scale).to_event(1)`` (diagonal or isotropic scale) and a deterministic site ``name`` whose
    value is ``x / |x|`` (a masked :class:`~pyro.distributions.Delta`, so it adds nothing to the density).

    Unlike Pyro's version, the auxiliary site carries ``loc`` and ``scale`` itself rather than being a
    parameter-free ``Normal(0, 1)`` shifted afterwards. This matters for the KL: applied to both model and
    guide, a ``ProjectedNormal(0, 1)`` prior (equal to the uniform distribution on the sphere) becomes a
    ``Normal(0, 1)`` site and a ``ProjectedNormal(loc, scale)`` guide becomes ``Normal(loc, scale)``, so
    ``TraceMeanField_ELBO`` computes KL(N(loc, diag scale^2) || N(0, I)) analytically: the data-processing
    bound :func:`~distributions.kl.gaussian_kl_bound`. It also makes sphere-valued latents acceptable to
    autoguides, which then see the Euclidean site ``{name}_normal``.

    When the guide is reparameterized too (as for the analytic KL), Pyro's model/guide consistency check
    warns that the guide's deterministic site ``name`` is not a latent site of the model ("Found
    non-auxiliary vars in guide but not model"), as it does for ``pyro.deterministic`` in a guide; the
    warning is harmless here (the site is a masked ``Delta`` on both sides).

    Works for latent sites only (observed sites raise ``NotImplementedError``). When the site already has
    a value (initialization, replay of a value on the sphere), the auxiliary value is that direction scaled
    to the most probable radius along its ray, :math:`r_* = (t + \sqrt{t^2 + 4(d-1)}) / (2\sqrt A)`
    (notation of :class:`~distributions.projected_normal.ProjectedNormal`), so that it normalizes back to
    the given value.

    Example::

        @poutine.reparam(config={"direction": ProjectedNormalReparam()})
        def model():
            direction = pyro.sample("direction", ProjectedNormal(torch.zeros(3), 1.0))
    """

    def apply(self, msg):
        name = msg["name"]
        fn = msg["fn"]
        value = msg["value"]
        is_observed = msg["is_observed"]
        if is_observed:
            raise NotImplementedError("ProjectedNormalReparam does not support observe statements")

        fn, event_dim = self._unwrap(fn)
        if not isinstance(fn, ProjectedNormal):
            raise TypeError(
                f"ProjectedNormalReparam expects a distributions.ProjectedNormal at site "
                f"{name!r}, got {type(fn).__name__}"
            )

        value_normal = None
        if value is not None:
            # Invert the projection differentiably: put the direction at its most probable radius.
            d = fn.event_shape[0]
            v = value / fn.scale
            a = v.square().sum(-1, keepdim=True)
            t = (v * (fn.loc / fn.scale)).sum(-1, keepdim=True) * a.rsqrt()
            radius = 0.5 * (t + torch.sqrt(t.square() + 4 * (d - 1))) * a.rsqrt()
            value_normal = value * radius

        base = dist.Normal(fn.loc, fn.scale).to_event(1)
        x = pyro.sample(
            f"{name}_normal",
            self._wrap(base, event_dim),
            obs=value_normal,
            infer={"is_observed": is_observed},
        )
        if value is None:
            value = x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp(min=torch.finfo(x.dtype).tiny)

        # Simulate a pyro.deterministic() site.
        new_fn = dist.Delta(value, event_dim=event_dim).mask(False)
        return {"fn": new_fn, "value": value, "is_observed": True}


def _unwrap_distribution(fn):
    """The innermost distribution under ``Independent``/``Masked``/... wrappers (as Pyro's strategies do)."""
    while isinstance(getattr(fn, "base_dist", None), torch.distributions.Distribution):
        if isinstance(fn, torch.distributions.TransformedDistribution):
            return None  # the strategies handle these with TransformReparam and then see the base site
        fn = fn.base_dist
    return fn


def _install_strategy_dispatch() -> None:
    """Make Pyro's ``MinimalReparam`` and ``AutoReparam`` choose :class:`ProjectedNormalReparam` for ours.

    Both strategies end in ``pyro.infer.reparam.strategies._minimal_reparam``, which dispatches on
    ``isinstance(fn, pyro.distributions.ProjectedNormal)`` to Pyro's reparameterizer. Our class is a
    subclass of Pyro's, so without this it would get Pyro's, which draws ``Normal(0, 1)`` noise around
    ``concentration`` (unit covariance): exact for an isotropic scale, refused for a diagonal one. Observed
    sites of our class need no reparameterization (``log_prob`` exists in every dimension), where Pyro's
    would raise. Pyro has no registry for strategies, so we wrap that module function (once) and fall back
    to it for everything else.
    """
    original = getattr(_strategies, "_minimal_reparam", None)
    if original is None or getattr(original, "_vprob_wrapped", False):
        return

    def _minimal_reparam(fn, is_observed):
        if isinstance(_unwrap_distribution(fn), ProjectedNormal):
            return None if is_observed else ProjectedNormalReparam()
        return original(fn, is_observed)

    _minimal_reparam._vprob_wrapped = True  # type: ignore[attr-defined]
    _strategies._minimal_reparam = _minimal_reparam


_install_strategy_dispatch()
