"""CCT / CACR (Zheng et al., 2021): contrastive attraction and repulsion with learned-free weights."""

from __future__ import annotations

from torch import Tensor, nn

from vprob.losses import CCTWeights, cct
from vprob.methods.base import DIM, HEAD_HIDDEN, NUM_VIEWS, Capabilities
from vprob.methods.point import PointEmbedding
from vprob.options import Option

T_POS = Option("t_pos", float, 1.0, "CCT attraction temperature t+")
T_NEG = Option("t_neg", float, 0.9, "CCT repulsion temperature t-")
DETACH_WEIGHTS = Option(
    "detach_weights", bool, False, "CCT: no gradient through the attraction and repulsion weights"
)


class CCT(PointEmbedding):
    """Encoder -> projector -> z on the sphere, trained by :func:`vprob.losses.cct` (single process only:
    the loss has no gathered form yet)."""

    name = "cct"
    summary = "CCT / CACR: contrastive attraction and repulsion (Zheng et al. 2021)"
    capabilities = Capabilities(num_views=None)
    options = (DIM, HEAD_HIDDEN, NUM_VIEWS, T_POS, T_NEG, DETACH_WEIGHTS)

    def __init__(
        self,
        encoder: nn.Module,
        dim: int = 128,
        head_hidden: int | None = None,
        num_views: int = 2,
        t_pos: float = 1.0,
        t_neg: float = 0.9,
        detach_weights: bool = False,
        gather: bool = False,
    ) -> None:
        super().__init__(encoder, dim, head_hidden, num_views)
        if gather:
            raise ValueError("cct has no distributed (gathered) form; train it in a single process")
        self.t_pos, self.t_neg, self.detach_weights = t_pos, t_neg, detach_weights

    def contrastive(self, z: Tensor, labels: Tensor | None) -> Tensor:
        return cct(z, t_pos=self.t_pos, t_neg=self.t_neg, detach_weights=self.detach_weights)

    def weights(self, z: Tensor) -> CCTWeights:
        """The attraction and repulsion weights of unit embeddings z (V, B, d) under this method's t+, t-."""
        return cct(z, t_pos=self.t_pos, t_neg=self.t_neg, return_weights=True)[1]
