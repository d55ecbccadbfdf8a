"""Deterministic contrastive baselines: SimCLR, SupCon, ProjNCE and CCT.

Encoder -> MLP projector -> unit embedding z, trained by a contrastive loss of :mod:`vprob.losses`.
They share the engine, the data path and the head with :class:`vprob.models.VCL`, so that a comparison
differs only in the objective.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vprob.losses import MLPProjection, cct, info_nce, proj_nce, supcon
from vprob.nets import MLPHead, feature_dim_of

OBJECTIVES = ("simclr", "supcon", "projnce", "cct")
SUPERVISED_OBJECTIVES = ("supcon", "projnce")


class ContrastiveBaseline(nn.Module):
    """A point-embedding contrastive learner.

    Args:
        encoder: backbone (N, C, H, W) -> (N, F) with an integer ``feature_dim``.
        dim: embedding dimension d.
        objective: one of ``OBJECTIVES``; "supcon" and "projnce" need labels.
        tau: temperature (SimCLR, SupCon, ProjNCE).
        head_hidden: hidden width of the projector; defaults to ``encoder.feature_dim``.
        num_views: views per image V (>= 2; CCT's K = 4 setting uses V = 5).
        projection, beta: ProjNCE's projection function and weight of its adjustment term.
        t_pos, t_neg, detach_weights: CCT's attraction/repulsion temperatures and weight detaching.
        chunk_size: passed to InfoNCE/SupCon (``None`` = automatic memory-lean path).
        gather: contrast against every process's embeddings (``torch.distributed`` data parallelism) for
            the SupCon family (simclr, supcon, projnce); CCT has no distributed form and refuses it.
    """

    def __init__(
        self,
        encoder: nn.Module,
        dim: int,
        objective: str = "simclr",
        tau: float = 0.07,
        head_hidden: int | None = None,
        num_views: int = 2,
        projection: str = "centroid",
        beta: float = 1.0,
        t_pos: float = 1.0,
        t_neg: float = 0.9,
        detach_weights: bool = False,
        chunk_size: int | None = None,
        gather: bool = False,
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
        if not isinstance(num_views, int) or num_views < 2:
            raise ValueError(f"num_views must be an integer >= 2, got {num_views!r}")
        feature_dim = feature_dim_of(encoder)
        self.encoder = encoder
        self.head = MLPHead(feature_dim, head_hidden or feature_dim, dim)
        self.objective = objective
        self.supervised = objective in SUPERVISED_OBJECTIVES
        self.dim = dim
        self.tau = tau
        self.num_views = num_views
        self.projection = projection
        self.beta = beta
        self.t_pos = t_pos
        self.t_neg = t_neg
        self.detach_weights = detach_weights
        if gather and objective == "cct":
            raise ValueError("cct has no distributed (gathered) form; train it in a single process")
        self.chunk_size = chunk_size
        self.gather = gather
        self.projection_mlp = MLPProjection(dim) if objective == "projnce" and projection == "mlp" else None

    def forward(self, x: Tensor) -> Tensor:
        """Unit embeddings of images x (N, C, H, W): (N, d), float32."""
        return F.normalize(self.head(self.encoder(x)).float(), dim=-1)

    def embed(self, x: Tensor) -> Tensor:
        return self(x)

    def training_loss(self, views: Tensor, labels: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The objective on views (V, B, C, H, W), with labels (B,) for the supervised objectives."""
        num_views, batch = views.shape[:2]
        if num_views != self.num_views:
            raise ValueError(f"expected {self.num_views} views, got {num_views}")
        if self.supervised and labels is None:
            raise ValueError(f"labels are required for objective {self.objective!r}")
        z = self(views.flatten(0, 1)).view(num_views, batch, self.dim)
        if self.objective == "simclr":
            loss = info_nce(z, tau=self.tau, chunk_size=self.chunk_size, gather=self.gather)
        elif self.objective == "supcon":
            loss = supcon(z, labels, tau=self.tau, chunk_size=self.chunk_size, gather=self.gather)
        elif self.objective == "projnce":
            loss = proj_nce(
                z, labels, tau=self.tau, projection=self.projection, beta=self.beta, mlp=self.projection_mlp,
                gather=self.gather,
            )
        else:
            loss = cct(z, t_pos=self.t_pos, t_neg=self.t_neg, detach_weights=self.detach_weights)
        return loss, {"contrastive": loss.detach()}
