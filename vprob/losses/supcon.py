"""Supervised contrastive loss (Khosla et al. 2020), and the log-softmax core the SupCon family shares."""

from __future__ import annotations

from torch import Tensor

from vprob.losses._batch import ContrastBatch, anchor_mean, contrast_batch
from vprob.losses._checks import (
    check_chunk_size,
    check_embeddings,
    check_labels,
    check_positive,
    full_precision,
    prepare,
)
from vprob.losses.chunked import masked_logsumexp


def supcon(
    z: Tensor,
    labels: Tensor,
    tau: float = 0.07,
    *,
    normalize: bool = True,
    chunk_size: int | None = None,
    gather: bool = False,
) -> Tensor:
    """SupCon: every other row of the same class is a positive.

    With N = V·B anchor rows z_i (row v·B + i is view v of image i), P(i) = {p ≠ i : y_p = y_i}:

        ℓ_i = −(1/|P(i)|) Σ_{p∈P(i)} log( exp(z_i·z_p/τ) / Σ_{a≠i} exp(z_i·z_a/τ) ),   loss = mean_i ℓ_i,

    which is the reference SupContrast ``SupConLoss`` (contrast_mode "all", base_temperature = τ) on
    features ``z.transpose(0, 1)``. SimCLR's NT-Xent is the case where each image is its own class.
    It is computed as ℓ_i = lse_i − z_i·c_i/τ, with lse_i the log of the denominator and c_i the mean of the
    anchor's positives (the centroid, anchor left out), which needs no (N, N) mask.

    Args:
        z: (V, B, d) embeddings, views first; any V >= 1 (with V = 1 the positives come from labels only).
        labels: (B,) integer class of each image.
        tau: temperature τ > 0.
        normalize: L2-normalize the rows inside (in float32) before the loss; pass False if they already are.
        chunk_size: None picks the naive path for small batches and the memory-lean chunked one above
            ``vprob.losses.chunked.AUTO_CHUNK_ELEMENTS`` scores; 0 forces naive; k > 0: chunks of k anchors.
        gather: with torch.distributed initialized, use every process's rows as contrast rows (this process's
            rows stay the anchors); see ``vprob.distributed`` for the loss and gradient convention.
    Returns:
        Scalar loss in float32 (float64 for float64 input), the mean over anchors that have a positive
        (anchors without one, possible only with V = 1, are left out; none at all raises ValueError).
    """
    check_embeddings(z)
    labels = check_labels(labels, z.shape[1])
    tau = check_positive(tau, "tau")
    chunk_size = check_chunk_size(chunk_size)
    with full_precision(z.device):
        batch = contrast_batch(prepare(z, normalize), labels, gather=gather)
        log_denominator, positive = log_softmax_terms(batch, held_out_centroid(batch), tau, chunk_size)
        return anchor_mean(log_denominator - positive, batch)


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
