"""Input validation shared by every loss: each failure is a ``ValueError`` that names the argument."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

_CHECK_VALUES = True


def set_value_checks(enabled: bool) -> None:
    """Turn the losses' check for non-finite embeddings on (default) or off.

    The check costs one host-device synchronization per call, which stalls a CUDA training step; a training
    loop that watches the loss for NaN itself (as ``vprob.train`` does) turns it off, in the manner of
    ``torch.distributions.Distribution.set_default_validate_args``. Shape and argument checks always run.
    """
    global _CHECK_VALUES
    _CHECK_VALUES = bool(enabled)


@contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Within the block, the non-finite check of :func:`set_value_checks` is on or off; restored after."""
    global _CHECK_VALUES
    previous, _CHECK_VALUES = _CHECK_VALUES, bool(enabled)
    try:
        yield
    finally:
        _CHECK_VALUES = previous


def check_embeddings(z: Tensor, *, min_views: int = 1, name: str = "z") -> None:
    """``z`` must be a finite floating tensor of shape (V, B, d) with V >= ``min_views`` and B >= 2."""
    if not isinstance(z, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (V, B, d), got {type(z).__name__}")
    if z.dim() != 3:
        raise ValueError(f"{name} must have shape (V, B, d) (views first), got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {z.dtype}")
    views, batch, dim = z.shape
    if views < min_views:
        raise ValueError(f"{name} needs at least {min_views} views (dimension 0), got V = {views}")
    if batch < 2:
        raise ValueError(f"{name} needs at least B = 2 images (dimension 1), got B = {batch}")
    if dim < 1:
        raise ValueError(f"{name} has an empty embedding dimension: {tuple(z.shape)}")
    # One host sync; a NaN here would otherwise surface far away as a NaN loss.
    if _CHECK_VALUES and not bool(torch.isfinite(z).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def check_labels(labels: Tensor, batch: int, *, name: str = "labels") -> Tensor:
    """``labels`` must be an integer tensor of shape (B,); returned as int64."""
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be an integer torch.Tensor of shape (B,), got {type(labels).__name__}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{name} must have an integer dtype, got {labels.dtype}")
    if labels.shape != (batch,):
        raise ValueError(f"{name} must have shape (B,) = ({batch},), got {tuple(labels.shape)}")
    return labels.long()


def check_positive(value: float, name: str) -> float:
    """A finite, strictly positive scalar (temperatures, bandwidths)."""
    value = _as_float(value, name)
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_finite(value: float, name: str) -> float:
    """A finite scalar (weights, CCT inverse temperatures)."""
    return _as_float(value, name)


def check_chunk_size(chunk_size: int | None) -> int | None:
    """None (automatic), 0 (naive) or a positive number of anchor rows per chunk."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 0:
        raise ValueError(f"chunk_size must be None, 0 (naive) or a positive int, got {chunk_size!r}")
    return chunk_size


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Losses run in float32, or float64 when given float64 (bf16/fp16 are cast up)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def prepare(z: Tensor, normalize: bool) -> Tensor:
    """Cast up to the compute dtype and, if asked, L2-normalize the rows (last dimension)."""
    z = z.to(compute_dtype(z.dtype))
    return F.normalize(z, dim=-1) if normalize else z


def _as_float(value: float, name: str) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def full_precision(device: torch.device) -> torch.autocast:
    """Context with autocast off: a loss called inside a bf16 autocast region still computes in float32."""
    return torch.autocast(device_type=device.type, enabled=False)
