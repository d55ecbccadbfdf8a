"""InfoNCE / NT-Xent (SimCLR), with V >= 2 views per image."""

from __future__ import annotations

from torch import Tensor

from vprob.losses._batch import anchor_mean, contrast_batch
from vprob.losses._checks import check_chunk_size, check_embeddings, check_positive, full_precision, prepare
from vprob.losses.log_softmax import held_out_centroid, log_softmax_terms


def info_nce(
    z: Tensor,
    tau: float = 0.07,
    *,
    normalize: bool = True,
    chunk_size: int | None = None,
    gather: bool = False,
) -> Tensor:
    """NT-Xent: the positives of an anchor are the other views of the same image.

    With N = V·B anchor rows z_i (row v·B + i is view v of image i) and P(i) the V−1 other views of i's image,

        ℓ_i = −(1/(V−1)) Σ_{p∈P(i)} log( exp(z_i·z_p/τ) / Σ_{a≠i} exp(z_i·z_a/τ) ),   loss = mean_i ℓ_i.

    For V = 2 this is exactly SimCLR's NT-Xent (one positive; the denominator runs over the 2B−1 other
    rows). For V > 2 it is the SupCon-style average over the V−1 positives, i.e. ``supcon`` with each image
    its own class (both go through the same code).

    Args:
        z: (V, B, d) embeddings, views first, V >= 2, B >= 2.
        tau: temperature τ > 0.
        normalize: L2-normalize the rows inside (in float32) before the loss; pass False if they already are.
        chunk_size: None = automatic (naive for small batches, memory-lean chunks above
            ``vprob.losses.chunked.AUTO_CHUNK_ELEMENTS`` scores), 0 = naive, k > 0 = chunks of k anchor rows.
        gather: with torch.distributed initialized, every process's rows are contrast rows and this process's
            rows its anchors; the mean over processes of the returned values is the single-process loss on the
            concatenated batch (gradient convention in ``vprob.distributed``).
    Returns:
        Scalar loss, float32 (float64 for float64 input), the mean over this process's anchors.
    """
    check_embeddings(z, min_views=2)
    tau = check_positive(tau, "tau")
    chunk_size = check_chunk_size(chunk_size)
    with full_precision(z.device):
        batch = contrast_batch(prepare(z, normalize), None, gather=gather)
        log_denominator, positive = log_softmax_terms(batch, held_out_centroid(batch), tau, chunk_size)
        return anchor_mean(log_denominator - positive, batch)
