"""ProjNCE: SupCon's positives replaced by a projection of the class, plus an adjustment term."""

from __future__ import annotations

from torch import Tensor, nn

from vprob.losses import PROJECTIONS, MLPProjection, proj_nce
from vprob.methods.base import CHUNK_SIZE, DIM, HEAD_HIDDEN, TAU, Capabilities
from vprob.methods.point import PointEmbedding
from vprob.options import Option

PROJECTION = Option("projection", str, "centroid", "ProjNCE's projection function", choices=PROJECTIONS)
ADJUSTMENT_WEIGHT = Option("beta", float, 1.0, "ProjNCE: weight of the adjustment term")


class ProjNCE(PointEmbedding):
    """Encoder -> projector -> z on the sphere, trained by :func:`vprob.losses.proj_nce`; with the ``"mlp"``
    projection the method owns the learned projection network."""

    name = "projnce"
    summary = "ProjNCE: projection-based supervised InfoNCE"
    capabilities = Capabilities(needs_labels=True, distributed=True)
    options = (DIM, HEAD_HIDDEN, TAU, PROJECTION, ADJUSTMENT_WEIGHT, CHUNK_SIZE)

    def __init__(
        self,
        encoder: nn.Module,
        dim: int = 128,
        head_hidden: int | None = None,
        tau: float = 0.07,
        projection: str = "centroid",
        beta: float = 1.0,
        chunk_size: int | None = None,
        gather: bool = False,
    ) -> None:
        super().__init__(encoder, dim, head_hidden)
        if projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        self.tau, self.projection, self.beta = tau, projection, beta
        self.chunk_size, self.gather = chunk_size, gather
        self.projection_mlp = MLPProjection(dim) if projection == "mlp" else None

    def contrastive(self, z: Tensor, labels: Tensor | None) -> Tensor:
        return proj_nce(
            z,
            labels,
            tau=self.tau,
            projection=self.projection,
            beta=self.beta,
            mlp=self.projection_mlp,
            chunk_size=self.chunk_size,
            gather=self.gather,
        )
