"""The ELBO of a model/guide pair as a differentiable loss, without host-device synchronizations.

Pyro's ``ELBO.differentiable_loss`` checks the loss for NaN (``warn_if_nan``, once in the forward pass and
again in a backward hook) and converts losses to Python numbers (``torch_item``: of the loss, and in
``Trace_ELBO`` of every sample site's log-probability, in ``TraceMeanField_ELBO`` of the particle's loss):
host-device synchronizations, 4 per VSimCLR step with ``TraceMeanField_ELBO`` and 3 with ``Trace_ELBO``
(counted by ``benchmarks/train_throughput.py``), each of which makes the CPU wait for the GPU and then
leaves the GPU idle while Pyro's Python runs. The training engine watches for non-finite values itself, so
it evaluates the same estimators from the same Pyro traces (Pyro's ``ELBO._get_traces``, reached through
:mod:`vprob.models.pyro_internals`) without them.
``tests/test_elbo.py`` checks values and gradients against ``differentiable_loss`` for ``Trace_ELBO`` and
``TraceMeanField_ELBO``, and ``tests/test_train_throughput.py`` that a training step makes no sync.
"""

from __future__ import annotations

import torch
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine import Trace
from torch import Tensor
from torch.distributions import kl_divergence

from vprob.models.pyro_internals import compute_log_r, get_traces


def differentiable_loss(elbo: ELBO, model, guide, *args, **kwargs) -> Tensor:
    """``elbo.differentiable_loss(model, guide, *args, **kwargs)`` without synchronizations.

    Supports ``TraceMeanField_ELBO`` and ``Trace_ELBO`` (any number of particles, vectorized or not); other
    ELBOs fall back to their own ``differentiable_loss``. For ``Trace_ELBO`` the surrogate loss is returned,
    whose value equals the loss when every latent site is reparameterized (true of vprob's models) and whose
    gradient is Pyro's gradient estimate in every case.
    """
    if isinstance(elbo, TraceMeanField_ELBO):
        particle_loss = mean_field_particle_loss
    elif type(elbo) is Trace_ELBO:
        particle_loss = trace_particle_surrogate_loss
    else:
        return elbo.differentiable_loss(model, guide, *args, **kwargs)
    loss = 0.0
    for model_trace, guide_trace in get_traces(elbo, model, guide, args, kwargs):
        loss = loss + particle_loss(model_trace, guide_trace) / elbo.num_particles
    return loss


def trace_particle_surrogate_loss(model_trace: Trace, guide_trace: Trace) -> Tensor:
    """-(surrogate ELBO) of one particle, as ``Trace_ELBO`` forms it: every model site's log-probability,
    minus the guide's entropy terms, plus the score-function terms of non-reparameterized guide sites
    weighted by the detached log ratio log p - log q downstream of them (``_compute_log_r``). Its value is
    the -ELBO estimate when every latent site is reparameterized; its gradient is Pyro's estimate always."""
    surrogate = 0.0
    log_r = None
    for site in model_trace.nodes.values():
        if site["type"] == "sample":
            surrogate = surrogate + site["log_prob_sum"]
    for site in guide_trace.nodes.values():
        if site["type"] != "sample":
            continue
        _, score_function_term, entropy_term = site["score_parts"]
        if not is_identically_zero(entropy_term):
            surrogate = surrogate - entropy_term.sum()
        if not is_identically_zero(score_function_term):
            if log_r is None:
                log_r = compute_log_r(model_trace, guide_trace)
            surrogate = surrogate + (log_r.sum_to(site["cond_indep_stack"]) * score_function_term).sum()
    return -surrogate


def mean_field_particle_loss(model_trace: Trace, guide_trace: Trace) -> Tensor:
    """-ELBO of one particle, mean-field form: observed sites contribute their log-likelihood, each latent
    site the analytic KL(guide || model) where one is registered (Monte Carlo otherwise), and guide-only
    auxiliary sites their entropy term."""
    elbo = 0.0
    for name, model_site in model_trace.nodes.items():
        if model_site["type"] != "sample":
            continue
        if model_site["is_observed"]:
            elbo = elbo + model_site["log_prob_sum"]
            continue
        guide_site = guide_trace.nodes[name]
        try:
            kl = kl_divergence(guide_site["fn"], model_site["fn"])
        except NotImplementedError:
            elbo = elbo + model_site["log_prob_sum"] - guide_site["score_parts"].entropy_term.sum()
            continue
        kl = scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"])
        kl_sum = kl.sum() if torch.is_tensor(kl) else kl * guide_site["fn"].batch_shape.numel()
        elbo = elbo - kl_sum
    for name, guide_site in guide_trace.nodes.items():
        if guide_site["type"] == "sample" and name not in model_trace.nodes:
            elbo = elbo - guide_site["score_parts"].entropy_term.sum()
    return -elbo


def two_view_objective(
    pair, views: Tensor, labels: Tensor | None, elbo: ELBO
) -> tuple[Tensor, dict[str, Tensor]]:
    """The per-(view, image) objective L = -ELBO / 2B of a two-view model/guide pair (VCL, VJE) on views
    (2, B, C, H, W), and the detached scalars its model and guide recorded in ``pair.last_stats``.

    ``pair.model`` and ``pair.guide`` take ``(x1, x2, labels)``; their ELBO sums 2B terms (both views or
    directions of B images), so dividing by 2B gives the mean per view and image."""
    if not isinstance(views, Tensor) or views.ndim != 5 or views.shape[0] != 2:
        shape = tuple(views.shape) if isinstance(views, Tensor) else type(views).__name__
        raise ValueError(f"{type(pair).__name__} takes views of shape (2, B, C, H, W), got {shape}")
    batch = views.shape[1]
    loss = differentiable_loss(elbo, pair.model, pair.guide, views[0], views[1], labels) / (2 * batch)
    return loss, dict(pair.last_stats)
