"""Whether code runs under a tracer, for the few places whose fast path inspects data on the host."""

from __future__ import annotations

import torch


def is_traced() -> bool:
    """True under ``torch.jit.trace`` or ``torch.compile``: a branch on tensor values would be baked into
    the graph (or break it), so callers take their branch-free path instead."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling()
