"""Pyro model/guide pairs (VCL, VJE) and the deterministic baselines beside them."""

from __future__ import annotations

from torch import nn

from vprob.models.baselines import OBJECTIVES, ContrastiveBaseline
from vprob.models.vcl import KL_MODES, VCL
from vprob.models.vje import DIRECTIONAL_MODES, VJE

METHODS = ("simclr", "vsimclr", "supcon", "vsupcon", "projnce", "cct", "vje")
VARIATIONAL_METHODS = ("vsimclr", "vsupcon", "vje")


def build_model(method: str, encoder: nn.Module, dim: int, **options) -> nn.Module:
    """The model of a method name (one of ``METHODS``) around ``encoder``.

    ``options`` are the keyword arguments of :class:`VCL` (vsimclr, vsupcon), of :class:`VJE` (vje: df,
    radial_df, radial_weight, radial_scale, directional, num_particles, and head_hidden as its ``hidden``)
    or of :class:`ContrastiveBaseline` (the others); options that do not apply to the method are ignored.
    VJE has no projector: its dimension is ``encoder.feature_dim`` and ``dim`` is ignored.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "vje":
        keys = ("df", "radial_df", "radial_weight", "radial_scale", "directional", "num_particles")
        kwargs = {k: options[k] for k in keys if k in options}
        return VJE(encoder, hidden=options.get("head_hidden"), **kwargs)
    if method in VARIATIONAL_METHODS:
        keys = ("kl", "beta", "tau", "head_hidden", "chunk_size", "gather")
        kwargs = {k: options[k] for k in keys if k in options}
        return VCL(encoder, dim, supervised=method == "vsupcon", **kwargs)
    keys = ("tau", "head_hidden", "num_views", "projection", "beta", "t_pos", "t_neg", "detach_weights",
            "chunk_size", "gather")
    kwargs = {k: options[k] for k in keys if k in options}
    return ContrastiveBaseline(encoder, dim, objective=method, **kwargs)


__all__ = ["DIRECTIONAL_MODES", "KL_MODES", "METHODS", "OBJECTIVES", "VARIATIONAL_METHODS", "VCL", "VJE",
           "ContrastiveBaseline", "build_model"]
