"""Device names from the command line to ``torch.device``."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """ "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1", ...; ValueError for an unknown name
    or for CUDA without a CUDA device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:  # torch's own message; a user error, not a crash
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:1, ...): {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available")
    return device
