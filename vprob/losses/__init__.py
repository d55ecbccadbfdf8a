"""Contrastive losses on embeddings z of shape (V, B, d) (views first): pure PyTorch.

Every loss L2-normalizes the rows inside by default (``normalize=True``, in float32), computes in float32 even
for bf16/fp16 input (float64 stays float64, autocast is switched off inside), and returns the scalar mean over
anchors. The SupCon family (``info_nce``, ``supcon``, ``proj_nce``) has a memory-lean chunked path
(``chunk_size``) and a distributed mode (``gather=True``).
"""

from vprob.losses._checks import set_value_checks, value_checks
from vprob.losses.cct import CCTWeights, cct
from vprob.losses.chunked import AUTO_CHUNK_ELEMENTS, masked_logsumexp
from vprob.losses.info_nce import info_nce
from vprob.losses.proj_nce import PROJECTIONS, MLPProjection, proj_nce, proj_nce_terms
from vprob.losses.supcon import supcon

__all__ = [
    "AUTO_CHUNK_ELEMENTS",
    "CCTWeights",
    "MLPProjection",
    "PROJECTIONS",
    "cct",
    "info_nce",
    "masked_logsumexp",
    "proj_nce",
    "proj_nce_terms",
    "set_value_checks",
    "value_checks",
    "supcon",
]
