"""SimCLR (Chen et al., 2020): InfoNCE / NT-Xent on the unit embeddings of V augmented views."""

from __future__ import annotations

from torch import Tensor, nn

from vprob.losses import info_nce
from vprob.methods.base import CHUNK_SIZE, DIM, HEAD_HIDDEN, NUM_VIEWS, TAU, Capabilities
from vprob.methods.point import PointEmbedding


class SimCLR(PointEmbedding):
    """Encoder -> projector -> z on the sphere, trained by :func:`vprob.losses.info_nce`."""

    name = "simclr"
    summary = "SimCLR: InfoNCE / NT-Xent (Chen et al. 2020)"
    capabilities = Capabilities(num_views=None, distributed=True)
    options = (DIM, HEAD_HIDDEN, TAU, NUM_VIEWS, CHUNK_SIZE)

    def __init__(
        self,
        encoder: nn.Module,
        dim: int = 128,
        head_hidden: int | None = None,
        tau: float = 0.07,
        num_views: int = 2,
        chunk_size: int | None = None,
        gather: bool = False,
    ) -> None:
        super().__init__(encoder, dim, head_hidden, num_views)
        self.tau, self.chunk_size, self.gather = tau, chunk_size, gather

    def contrastive(self, z: Tensor, labels: Tensor | None) -> Tensor:
        return info_nce(z, tau=self.tau, chunk_size=self.chunk_size, gather=self.gather)
