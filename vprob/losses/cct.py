"""CCT / CACR: contrastive attraction and contrastive repulsion (Zheng et al. 2021), small-scale semantics."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from vprob.losses._checks import check_embeddings, check_finite, full_precision, prepare


class CCTWeights(NamedTuple):
    """The "interpretable contrastive weights" of a :func:`cct` call (detached, for analysis and plots).

    Attributes:
        attraction: (V, B, V−1), w⁺ of query (view v, image i) over the other views u ≠ v in increasing
            order.
        repulsion: (P, B, B−1), w⁻ of query (view x, image i) over the images j ≠ i (increasing) of view y,
            for the P = V(V−1)/2 view pairs (x, y), x < y, listed in ``pairs``.
        pairs: (P, 2) int64, the (x, y) view pair of each slice of ``repulsion``.
    """

    attraction: Tensor
    repulsion: Tensor
    pairs: Tensor


def cct(
    z: Tensor,
    t_pos: float = 1.0,
    t_neg: float = 0.9,
    *,
    detach_weights: bool = False,
    normalize: bool = True,
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, CCTWeights]:
    """CACR loss L_CA + L_CR with cost d(z, z') = |z − z'|² (= 2 − 2 z·z' for unit rows).

    Attraction, each view v of image i as query, the V−1 other views u of the same image as positives:

        L_CA = mean_{v,i} Σ_u w⁺_{vi,u} d(z[v,i], z[u,i]),  w⁺ = softmax_u(+t⁺ d)  (far positives: more)

    Repulsion, for each view pair x < y, query z[x,i] against the B−1 other images j ≠ i of view y:

        L_CR = −mean_{(x,y),i} Σ_j w⁻_{ij} d(z[x,i], z[y,j]),  w⁻ = softmax_j(−t⁻ d)  (close negatives: more)

    With t⁺ = 0, V = 2, detached weights and t⁻ = 1/(2τ), the gradient is 2τ times that of the
    one-directional InfoNCE whose denominator leaves the positive out,
    mean_i −log( e^{z¹_i·z²_i/τ} / Σ_{j≠i} e^{z¹_i·z²_j/τ} ) (see tests/test_losses.py); the standard
    InfoNCE differs by the positive in its denominator (and by its same-view negatives).

    Args:
        z: (V, B, d) embeddings, views first, V >= 2 (V = 5 is the paper's K = 4 setting), B >= 2.
        t_pos: inverse temperature t⁺ of the attraction weights (1.0 default).
        t_neg: inverse temperature t⁻ of the repulsion weights (0.9 for CIFAR-10; 2.0 for CIFAR-100, STL-10).
        detach_weights: stop the gradient through w⁺ and w⁻ (the MoCo-style variant); default: live weights,
            as in the small-scale official code.
        normalize: L2-normalize the rows inside (in float32) first; pass False if they already are.
        return_weights: also return a :class:`CCTWeights` with w⁺ and w⁻.
    Returns:
        Scalar loss in float32 (float64 for float64 input), or ``(loss, weights)``.
    """
    check_embeddings(z, min_views=2)
    t_pos = check_finite(t_pos, "t_pos")
    t_neg = check_finite(t_neg, "t_neg")
    with full_precision(z.device):
        z = prepare(z, normalize)
        views, batch, _ = z.shape

        # Attraction: (B, V, V) costs between the views of each image, diagonal (u = v) removed.
        cost_pos = _off_diagonal(_squared_distances(z.transpose(0, 1), z.transpose(0, 1))).permute(1, 0, 2)
        w_pos = torch.softmax(t_pos * _maybe_detach(cost_pos, detach_weights), dim=-1)
        attraction = (w_pos * cost_pos).sum(dim=-1).mean()

        # Repulsion: (P, B, B) costs from view x to view y for every pair x < y, own image removed.
        pairs = torch.triu_indices(views, views, offset=1, device=z.device).T
        cost_neg = _off_diagonal(_squared_distances(z[pairs[:, 0]], z[pairs[:, 1]]))
        w_neg = torch.softmax(-t_neg * _maybe_detach(cost_neg, detach_weights), dim=-1)
        repulsion = -(w_neg * cost_neg).sum(dim=-1).mean()

        loss = attraction + repulsion
        if return_weights:
            return loss, CCTWeights(w_pos.detach(), w_neg.detach(), pairs)
        return loss


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """|a_i − b_j|² = |a_i|² + |b_j|² − 2 a_i·b_j, batched: (..., n, d), (..., n, d) → (..., n, n)."""
    return (a * a).sum(-1)[..., :, None] + (b * b).sum(-1)[..., None, :] - 2.0 * a @ b.transpose(-1, -2)


def _off_diagonal(x: Tensor) -> Tensor:
    """(..., n, n) → (..., n, n−1): each row without its diagonal entry, other columns in order."""
    n = x.shape[-1]
    flat = x.reshape(*x.shape[:-2], n * n)[..., 1:]
    return flat.reshape(*x.shape[:-2], n - 1, n + 1)[..., :-1].reshape(*x.shape[:-2], n, n - 1)


def _maybe_detach(x: Tensor, detach: bool) -> Tensor:
    return x.detach() if detach else x
