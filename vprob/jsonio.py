"""JSON files written by vprob: one conversion and one policy for non-finite numbers (written as ``null``),
written atomically (temporary file, flush, fsync, rename) so that a reader never sees half a file."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from torch import Tensor


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
    path = Path(path)
    text = json.dumps(json_safe(payload), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
