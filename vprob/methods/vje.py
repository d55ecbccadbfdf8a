"""VJE: variational joint embedding (:class:`vprob.models.VJE`) as a training method."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from vprob.methods.base import HEAD_HIDDEN, Capabilities, Method
from vprob.models.vje import DIRECTIONAL_MODES, DIRECTIONAL_SCALES
from vprob.models.vje import VJE as VJEModel
from vprob.options import Option, non_negative, positive

VJE_OPTIONS = (
    HEAD_HIDDEN,
    positive("df", float, 5.0, "VJE: degrees of freedom of the directional t (1e6: the Gaussian limit)"),
    positive(
        "radial_df", float, None, "VJE: degrees of freedom of the radial t (default: --df)", nullable=True
    ),
    positive("radial_scale", float, 1.0, "VJE: scale of the radial t on log r"),
    non_negative("radial_weight", float, 1.0, "VJE: weight of the radial log-factor (1: the exact density)"),
    Option(
        "directional",
        str,
        "geodesic",
        "VJE: directional factor (euclidean: the earlier version's ablation)",
        choices=DIRECTIONAL_MODES,
    ),
    positive("num_particles", int, 1, "VJE: posterior samples per image and step"),
    Option(
        "directional_scale",
        str,
        "angular",
        "VJE: the directional t's tangent scale: nu / |mu|^2 "
        "(angular) or the posterior variance nu itself (the first reading)",
        choices=DIRECTIONAL_SCALES,
    ),
    Option(
        "score_samples",
        int,
        0,
        "VJE: posterior samples averaged by the anomaly score (0: z = mu)",
        check=lambda v: v >= 0,
        requirement=">= 0",
    ),
)


class VJE(VJEModel, Method):
    """VJE with its polar Student-t likelihood; no projector, so the embedding dimension is the backbone's."""

    name = "vje"
    summary = "VJE: variational joint embedding, polar Student-t likelihood"
    capabilities = Capabilities(variational=True, uncertainty=True, anomaly=True)
    options = VJE_OPTIONS

    @classmethod
    def from_options(cls, encoder: nn.Module, options: Mapping[str, Any], gather: bool = False) -> nn.Module:
        if gather:
            raise ValueError("vje has no multi-process form yet; train it in a single process")
        kwargs = dict(options)
        return cls(encoder, hidden=kwargs.pop("head_hidden", None), **kwargs)
