"""SupCon (Khosla et al., 2020): every view of every image of the same class is a positive."""

from __future__ import annotations

from torch import Tensor

from vprob.losses import supcon
from vprob.methods.base import Capabilities
from vprob.methods.simclr import SimCLR


class SupCon(SimCLR):
    """Encoder -> projector -> z on the sphere, trained by :func:`vprob.losses.supcon` (SimCLR's options
    and body; the positives come from the labels)."""

    name = "supcon"
    summary = "SupCon: supervised contrastive (Khosla et al. 2020)"
    capabilities = Capabilities(needs_labels=True, num_views=None, distributed=True)

    def contrastive(self, z: Tensor, labels: Tensor | None) -> Tensor:
        return supcon(z, labels, tau=self.tau, chunk_size=self.chunk_size, gather=self.gather)
