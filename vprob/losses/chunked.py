"""The memory-lean log-sum-exp shared by the SupCon family (InfoNCE, SupCon, ProjNCE).

Every one of these losses needs, for each anchor row a_i, the log of its softmax denominator

    lse_i = log Σ_{j ≠ e(i)} exp(s · a_i·c_j + b_j)

over the contrast rows c_j (j = e(i), the anchor's own row, excluded; b an optional constant column bias).
The naive path builds the whole (n, m) score matrix. The chunked path never holds more than ``rows`` × m
scores at a time, in forward or backward: forward keeps only lse (n,), and backward recomputes each chunk's
scores and accumulates the analytic gradient

    ∂L/∂a_i = s Σ_j g_i W_ij c_j,   ∂L/∂c_j = s Σ_i g_i W_ij a_i,   W_ij = exp(s a_i·c_j + b_j − lse_i),

on the row side and the column side. The positive terms of the losses are linear in the rows (see
:mod:`vprob.losses.supcon`) and need no chunking, so this one function is all the memory-lean machinery.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

#: Score entries per chunk, and the size (n·m) above which ``chunk_size=None`` switches to chunking:
#: 2^26 float32 scores = 256 MiB per block.
AUTO_CHUNK_ELEMENTS = 2**26


def auto_chunk_rows(num_contrast: int) -> int:
    """Anchor rows per chunk so that one block of scores holds about ``AUTO_CHUNK_ELEMENTS`` entries."""
    return max(1, AUTO_CHUNK_ELEMENTS // max(1, num_contrast))


def resolve_chunk_size(num_anchors: int, num_contrast: int, chunk_size: int | None) -> int:
    """0 for the naive path, else the number of anchor rows per chunk.

    ``None``: naive while num_anchors · num_contrast <= ``AUTO_CHUNK_ELEMENTS``, chunked above it;
    0: naive; k > 0: chunks of k anchor rows.
    """
    if chunk_size is None:
        if num_anchors * num_contrast <= AUTO_CHUNK_ELEMENTS:
            return 0
        return auto_chunk_rows(num_contrast)
    return chunk_size


def masked_logsumexp(
    anchors: Tensor,
    contrast: Tensor,
    exclude: Tensor | None,
    scale: float,
    *,
    bias: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """lse_i = log Σ_{j ≠ exclude_i} exp(scale · anchors_i·contrast_j + bias_j).

    Args:
        anchors: (n, d) anchor rows.
        contrast: (m, d) contrast rows (may be the same tensor as ``anchors``).
        exclude: (n,) int64 index of the contrast column left out of row i (the anchor itself), or None.
        scale: multiplies every dot product (1/τ).
        bias: optional (m,) constant added to column j (no gradient flows into it).
        chunk_size: see :func:`resolve_chunk_size`.
    Returns:
        (n,) log-sum-exp per anchor; differentiable in ``anchors`` and ``contrast``.
    """
    if exclude is not None and contrast.shape[0] < 2:
        raise ValueError("contrast needs at least 2 rows when each anchor excludes one of them")
    if bias is not None and bias.requires_grad:
        raise ValueError("bias is treated as a constant: pass it detached")
    rows = resolve_chunk_size(anchors.shape[0], contrast.shape[0], chunk_size)
    if rows == 0:
        return torch.logsumexp(_scores(anchors, contrast, exclude, bias, scale), dim=1)
    return _ChunkedMaskedLogSumExp.apply(anchors, contrast, exclude, bias, scale, rows)


def _scores(
    anchors: Tensor, contrast: Tensor, exclude: Tensor | None, bias: Tensor | None, scale: float
) -> Tensor:
    """The (n, m) block of scores, excluded entries at −inf (so they vanish from sums and softmaxes)."""
    # Scaling the (n, d) anchors instead of the (n, m) product saves a pass over the big block.
    scores = (anchors * scale) @ contrast.T
    if bias is not None:
        scores = scores + bias
    if exclude is not None:
        rows = torch.arange(scores.shape[0], device=scores.device)
        # In place is safe for autograd: neither mm nor add saves its output for backward.
        scores.index_put_((rows, exclude), scores.new_full((), float("-inf")))
    return scores


class _ChunkedMaskedLogSumExp(torch.autograd.Function):
    """Chunk-by-chunk forward and recomputing backward of :func:`masked_logsumexp`."""

    @staticmethod
    def forward(ctx, anchors, contrast, exclude, bias, scale, rows):
        lse = anchors.new_empty(anchors.shape[0])
        for start in range(0, anchors.shape[0], rows):
            block = slice(start, start + rows)
            part = None if exclude is None else exclude[block]
            lse[block] = torch.logsumexp(_scores(anchors[block], contrast, part, bias, scale), dim=1)
        ctx.save_for_backward(anchors, contrast, exclude, bias, lse)
        ctx.scale, ctx.rows = scale, rows
        return lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_lse):
        anchors, contrast, exclude, bias, lse = ctx.saved_tensors
        need_anchors, need_contrast = ctx.needs_input_grad[:2]
        grad_anchors = torch.empty_like(anchors) if need_anchors else None
        grad_contrast = torch.zeros_like(contrast) if need_contrast else None
        for start in range(0, anchors.shape[0], ctx.rows):
            block = slice(start, start + ctx.rows)
            part = None if exclude is None else exclude[block]
            # W = softmax over the non-excluded columns, recomputed in place from the stored lse.
            weights = _scores(anchors[block], contrast, part, bias, ctx.scale)
            weights.sub_(lse[block, None]).exp_()
            factor = (grad_lse[block] * ctx.scale)[:, None]
            if need_anchors:
                grad_anchors[block] = (weights @ contrast) * factor
            if need_contrast:
                grad_contrast.addmm_(weights.T, anchors[block] * factor)
        return grad_anchors, grad_contrast, None, None, None, None
