"""The shared body of the deterministic contrastive methods: encoder -> MLP projector -> unit embedding z.

SimCLR, SupCon, ProjNCE and CCT differ only in the loss on z; they share the engine, the data path and the
head with VSimCLR/VSupCon, so that a comparison differs only in the objective. A subclass implements
:meth:`PointEmbedding.contrastive`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from vprob.methods.base import Method
from vprob.nets import MLPHead, feature_dim_of


class PointEmbedding(Method, nn.Module):
    """A point-embedding learner: ``embed(x) = normalize(head(encoder(x)))``.

    Args:
        encoder: any module mapping images (N, C, H, W) to features (N, F); F is ``feature_dim`` if given,
            else found by :func:`vprob.nets.feature_dim_of` (its ``feature_dim`` attribute or a dry pass).
        dim: embedding dimension d.
        head_hidden: hidden width of the projector; defaults to F.
        num_views: views per image V (>= 2).
        feature_dim: the encoder's output width F (default: found as described for ``encoder``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        dim: int = 128,
        head_hidden: int | None = None,
        num_views: int = 2,
        feature_dim: int | None = None,
    ) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
        if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 2:
            raise ValueError(f"num_views must be an integer >= 2, got {num_views!r}")
        feature_dim = feature_dim_of(encoder, feature_dim)
        self.encoder = encoder
        self.head = MLPHead(feature_dim, head_hidden or feature_dim, dim)
        self.dim = dim
        self.num_views = num_views

    def forward(self, x: Tensor) -> Tensor:
        """Unit embeddings of images x (N, C, H, W): (N, d), float32."""
        return F.normalize(self.head(self.encoder(x)).float(), dim=-1)

    def embed(self, x: Tensor) -> Tensor:
        return self(x)

    def contrastive(self, z: Tensor, labels: Tensor | None) -> Tensor:
        """The loss on unit embeddings z (V, B, d) with labels (B,) (``None`` if unsupervised)."""
        raise NotImplementedError

    def training_loss(self, views: Tensor, labels: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The objective on views (V, B, C, H, W), with labels (B,) for the supervised objectives."""
        num_views, batch = views.shape[:2]
        if num_views != self.num_views:
            raise ValueError(f"{self.name} expects {self.num_views} views, got {num_views}")
        if self.capabilities.needs_labels and labels is None:
            raise ValueError(f"labels are required for method {self.name!r}")
        z = self(views.flatten(0, 1)).view(num_views, batch, self.dim)
        loss = self.contrastive(z, labels)
        return loss, {"contrastive": loss.detach()}
