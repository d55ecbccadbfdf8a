"""JSON files written by vprob: one conversion and one policy for non-finite numbers (written as ``null``),
written atomically (:func:`vprob.safe_io.write_atomic`: a fresh temporary file, fsync, rename) so that a
reader never sees half a file and a symbolic link planted in a run folder is never written through."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from vprob.safe_io import write_atomic


def json_safe(value: Any) -> Any:
    """Plain JSON values: tensors to lists or numbers, NaN and infinities to ``None``, paths and dict keys to
    strings, tuples to lists; TypeError for anything else."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, Tensor):
        return json_safe(value.tolist())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float) or hasattr(value, "__float__"):
        number = float(value)
        return number if math.isfinite(number) else None
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write ``json_safe(payload)`` to ``path`` atomically."""
    write_atomic(path, json.dumps(json_safe(payload), indent=2) + "\n")
