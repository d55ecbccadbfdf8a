"""Dimensional collapse: the singular-value spectrum of an embedding matrix and its effective rank.

A representation that uses only k of its D directions has a centred embedding matrix with k non-negligible
singular values (Jing et al. 2022, "Understanding dimensional collapse in contrastive self-supervised
learning"). The effective rank (Roy & Vetterli 2007, "The effective rank: a measure of effective
dimensionality") summarises the spectrum in one number:

    p_k = s_k / sum_j s_j,      erank = exp(H(p)) = exp(-sum_k p_k log p_k),

which equals k for k equal non-zero singular values and lies in [1, min(N, D)] for any non-zero matrix.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def singular_value_spectrum(embeddings: Tensor) -> Tensor:
    """Singular values of the centred embedding matrix, in descending order.

    Args:
        embeddings: (N, D) one row per input; any float dtype, any device.

    Returns:
        (min(N, D),) float64 on the input's device. The columns are centred (mean over the N rows removed)
        first, so a constant offset shared by all embeddings does not count as a direction.
    """
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be a matrix (N, D), got shape {tuple(embeddings.shape)}")
    if embeddings.shape[0] < 2:
        raise ValueError("the spectrum needs at least 2 embeddings")
    # float64: the small singular values are what collapse is about, and float32 SVD floors them at ~1e-7 s_1.
    x = embeddings.detach().to(torch.float64)
    x = x - x.mean(dim=0, keepdim=True)
    return torch.linalg.svdvals(x)  # already descending


def effective_rank(embeddings_or_spectrum: Tensor) -> float:
    """Effective rank exp(H(p)) of an (N, D) embedding matrix or of a 1-D spectrum of singular values.

    A 2-D input is centred and decomposed with :func:`singular_value_spectrum`; a 1-D input is taken to be
    the singular values themselves (non-negative). Returns 0.0 for an all-zero spectrum (every embedding
    identical: total collapse), where the entropy is undefined.
    """
    values = embeddings_or_spectrum
    if values.ndim == 2:
        values = singular_value_spectrum(values)
    elif values.ndim != 1:
        raise ValueError(f"expected an (N, D) matrix or a 1-D spectrum, got shape {tuple(values.shape)}")
    values = values.detach().to(torch.float64)
    if bool((values < 0).any()):
        raise ValueError("singular values must be non-negative")
    total = values.sum()
    if not total > 0:
        return 0.0
    p = values / total
    # 0 log 0 = 0: zero singular values contribute nothing to the entropy.
    entropy = -torch.where(p > 0, p * p.log(), torch.zeros_like(p)).sum()
    return float(math.exp(float(entropy)))


def spectrum_report(embeddings: Tensor) -> dict[str, object]:
    """The spectrum (as a list, descending) and effective rank of an (N, D) matrix, ready for JSON."""
    spectrum = singular_value_spectrum(embeddings)
    return {
        "num_rows": int(embeddings.shape[0]),
        "num_dims": int(embeddings.shape[1]),
        "effective_rank": effective_rank(spectrum),
        "singular_values": [float(s) for s in spectrum.cpu()],
    }
