"""KL divergences on the sphere: exact uniform-vs-uniform, and the Gaussian bound for the projected normal.

Only exact KLs are registered with :func:`torch.distributions.kl.register_kl` (``TraceMeanField_ELBO``
uses whatever is registered as if it were exact). The data-processing bound on KL(PN || Uniform) is exposed
under its own name, :func:`gaussian_kl_bound`.
"""

from __future__ import annotations

import torch
from pyro.distributions import ProjectedNormal as PyroProjectedNormal
from torch import Tensor
from torch.distributions.kl import register_kl

from distributions.hyperspherical_uniform import HypersphericalUniform
from distributions.projected_normal import ProjectedNormal

__all__ = ["gaussian_kl_bound", "gaussian_kl_to_standard"]


def gaussian_kl_bound(pn: ProjectedNormal | PyroProjectedNormal) -> Tensor:
    r"""Data-processing upper bound on :math:`\mathrm{KL}(\mathrm{PN}(\mu, \Sigma) \,\|\, U(S^{d-1}))`.

    The map :math:`x \mapsto x/|x|` sends :math:`\mathcal N(\mu, \Sigma)` to :math:`\mathrm{PN}(\mu, \Sigma)`
    and :math:`\mathcal N(0, I)` to the uniform distribution on the sphere, so by the data-processing
    inequality

    .. math::

        \mathrm{KL}(\mathrm{PN}(\mu,\Sigma)\,\|\,U)
        \le \mathrm{KL}(\mathcal N(\mu,\Sigma)\,\|\,\mathcal N(0,I))
        = \tfrac12 \sum_{k=1}^d \bigl(\sigma_k^2 + \mu_k^2 - 1 - \log\sigma_k^2\bigr).

    This is the KL term of VCL's "bound" mode; it is *not* registered as the KL (the exact KL has no closed
    form; estimate it by Monte Carlo with :meth:`ProjectedNormal.log_prob`). The arithmetic follows
    torch's Normal-Normal KL term by term, so with
    :class:`~distributions.reparam.ProjectedNormalReparam` and a ``ProjectedNormal(0, 1)`` prior,
    ``TraceMeanField_ELBO``'s analytic KL equals this to rounding.

    :param pn: our :class:`~distributions.projected_normal.ProjectedNormal` (isotropic or diagonal scale),
        or Pyro's ``ProjectedNormal(concentration)`` (scale 1).
    :returns: tensor of shape ``pn.batch_shape``.
    """
    if isinstance(pn, ProjectedNormal):
        loc, scale = pn.loc, pn.scale.expand_as(pn.loc)
    elif isinstance(pn, PyroProjectedNormal):
        loc = pn.concentration
        scale = torch.ones_like(loc)
    else:
        raise TypeError(f"gaussian_kl_bound: expected a ProjectedNormal, got {type(pn).__name__}")
    return gaussian_kl_to_standard(loc, scale.square())


def gaussian_kl_to_standard(loc: Tensor, variance: Tensor) -> Tensor:
    r"""KL of a diagonal Gaussian to the standard normal, over the last dimension:

    .. math::

        \mathrm{KL}(\mathcal N(\mu, \mathrm{diag}\,\nu) \,\|\, \mathcal N(0, I))
        = \tfrac12 \sum_k (\nu_k + \mu_k^2 - 1 - \log \nu_k).

    ``loc`` and ``variance`` (..., d) give (...). The Gaussian bound of the projected normal
    (:func:`gaussian_kl_bound`) and VJE's KL term.
    """
    return 0.5 * (variance + loc.square() - 1 - variance.log()).sum(-1)


@register_kl(HypersphericalUniform, HypersphericalUniform)
def _kl_uniform_uniform(p: HypersphericalUniform, q: HypersphericalUniform) -> Tensor:
    """KL(U || U) = 0 for the same sphere, shape ``broadcast(p.batch_shape, q.batch_shape)``."""
    if p.dim != q.dim:
        raise ValueError(
            f"KL between uniform distributions on spheres of different dimension: "
            f"p.dim = {p.dim}, q.dim = {q.dim}"
        )
    shape = torch.broadcast_shapes(p.batch_shape, q.batch_shape)
    return torch.zeros(shape, dtype=p.dtype, device=p.device)
