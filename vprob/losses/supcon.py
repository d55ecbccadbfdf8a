"""Supervised contrastive loss (Khosla et al. 2020)."""

from __future__ import annotations

from torch import Tensor

from vprob.losses._batch import anchor_mean, contrast_batch
from vprob.losses._checks import (
    check_chunk_size,
    check_embeddings,
    check_labels,
    check_positive,
    full_precision,
    prepare,
)
from vprob.losses.log_softmax import held_out_centroid, log_softmax_terms


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
