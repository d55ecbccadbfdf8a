"""The log-softmax core the SupCon family shares (InfoNCE, SupCon, ProjNCE's I_proj): the log of an anchor's
denominator over the contrast rows, its score against a positive target, and the held-out class centroid
that makes SupCon's positive term linear in the rows."""

from __future__ import annotations

from torch import Tensor

from vprob.losses._batch import ContrastBatch
from vprob.losses.chunked import masked_logsumexp


def log_softmax_terms(
    batch: ContrastBatch, positive_target: Tensor, tau: float, chunk_size: int | None
) -> tuple[Tensor, Tensor]:
    """The two halves of −log softmax shared by InfoNCE, SupCon and ProjNCE's I_proj.

    Returns (lse, s): lse_i = log Σ_{j≠i} exp(z_i·z_j/τ) over the contrast rows (chunked when asked) and
    s_i = z_i·t_i/τ, the score of anchor i against its positive target t_i (n, d).
    """
    log_denominator = masked_logsumexp(
        batch.anchors, batch.contrast, batch.self_index, 1.0 / tau, chunk_size=chunk_size
    )
    positive = (batch.anchors * positive_target).sum(dim=-1) / tau
    return log_denominator, positive


def held_out_centroid(batch: ContrastBatch) -> Tensor:
    """(n, d) mean of each anchor's positives: the other contrast rows of its class, the anchor left out.

    (1/|P(i)|) Σ_{p∈P(i)} z_i·z_p = z_i·centroid_i, so SupCon's positive term is linear in the rows.
    Anchors without a positive get a zero vector (they are masked out of every mean).
    """
    num_classes, dim = batch.counts.shape[0], batch.contrast.shape[1]
    class_sums = batch.contrast.new_zeros(num_classes, dim).index_add(0, batch.classes, batch.contrast)
    classes = batch.anchor_classes
    own = batch.contrast.index_select(0, batch.self_index)
    others = (batch.counts[classes] - 1).clamp(min=1).to(batch.contrast.dtype)
    return (class_sums[classes] - own) / others[:, None]
