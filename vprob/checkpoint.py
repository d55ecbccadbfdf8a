"""Atomic, self-describing training checkpoints and weights files, loaded without running any code.

A checkpoint is one ``torch.save`` file holding the model's ``state_dict`` (for VCL the model and the
guide live in one module), optimizer, scheduler, every RNG state and the step. It is written to a temporary
file in the same folder, flushed to disk and renamed over the old one, so that a crash at any instant
leaves either the previous complete checkpoint or the new complete one, never a partial file.
``pyro.get_param_store()`` is deliberately not used: it does not restore the plain parameters of modules.

Loading never unpickles arbitrary objects: every file is read with ``torch.load(..., weights_only=True)``,
whose unpickler builds only tensors, plain containers (dict, list, tuple, set), strings, bytes, numbers and
a few torch value types (``torch.Size``, dtypes, devices), and refuses every other global before anything
in the file runs. Run folders are shared (a colleague's results, shared storage across the machines of a
multi-node run), so a checkpoint is untrusted input. :func:`save_checkpoint` checks that what it writes is
made of those types only (numpy scalars and arrays become Python numbers and tensors), so a checkpoint that
loads is never the first sign of a problem.

A checkpoint written before this safe loading (same format version 1) holds only such types and loads as
is. A file that holds anything else is refused; if it is the user's own, ``python -m vprob.checkpoint
convert --trust PATH`` rewrites it once in the safe form (that one command unpickles it fully).

Weights files (:func:`save_state_dict_file` / :func:`load_state_dict_file`) hold one flat ``str -> Tensor``
mapping plus a JSON metadata dict; a plain ``state_dict`` file (torchvision's published weights) loads too.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import pickle
import re
import sys
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vprob.safe_io import atomic_writer

FORMAT = "vprob-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_FORMAT = "vprob-weights"
WEIGHTS_VERSION = 1

_CONVERT_COMMAND = "python -m vprob.checkpoint convert --trust"


class CheckpointError(ValueError):
    """A checkpoint or weights file that is missing, corrupt, unsafe, or was not written by vprob."""


class UnsafeFileError(CheckpointError):
    """A file holding objects that ``torch.load(weights_only=True)`` refuses; nothing in it was run."""


# ------------------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` atomically to ``path`` (temporary file + fsync + rename).

    ``state`` may hold tensors, dicts (str/number keys), lists, tuples, sets, strings, bytes, numbers, None,
    ``torch.Size``, dtypes and devices; numpy scalars are stored as Python numbers and numpy arrays as
    tensors. Anything else raises a TypeError naming where it sits (it could not be loaded safely). The keys
    ``"format"`` and ``"version"`` are the file's own markers: a ``state`` holding them raises a ValueError.
    """
    path = Path(path)
    reserved = sorted(key for key in ("format", "version") if key in state)
    if reserved:
        raise ValueError(f"state must not hold the keys {reserved}: they are the checkpoint's own markers")
    payload = {"format": FORMAT, "version": VERSION, **_plain(state, "state")}
    _atomic_torch_save(path, payload)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; raise :class:`CheckpointError` otherwise.

    Raises :class:`UnsafeFileError` (a CheckpointError) for a file that holds any object other than
    tensors and plain data: it is refused before anything in it runs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    hint = (
        f"if you wrote this checkpoint yourself (for example with an older vprob) and trust it, convert "
        f"it once with `{_CONVERT_COMMAND} {path}`"
    )
    payload = _safe_torch_load(path, map_location, "checkpoint", hint=hint)
    return _check_checkpoint_payload(path, payload)


def _check_checkpoint_payload(path: Path, payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vprob checkpoint (no '{FORMAT}' marker)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {payload.get('version')}, expected {VERSION}")
    return payload


# ------------------------------------------------------------------------------------------------------
# Weights files


@dataclass(frozen=True)
class WeightsFile:
    """The content of a weights file: ``state_dict`` (flat ``str -> Tensor``) and its JSON ``metadata``."""

    state_dict: dict[str, Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)


def save_state_dict_file(
    path: str | os.PathLike, state_dict: Mapping[str, Tensor], metadata: Mapping[str, Any] | None = None
) -> None:
    """Write a weights file atomically: ``state_dict`` (str -> Tensor, stored on the CPU) and ``metadata``.

    ``metadata`` must be JSON-serializable (it is stored as JSON text: tuples come back as lists); a
    TypeError / ValueError names what is wrong with either argument.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a mapping of str to Tensor, got {type(state_dict).__name__}")
    stored: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise TypeError(f"state_dict keys must be str, got {key!r} ({type(key).__name__})")
        if not isinstance(value, Tensor):
            raise TypeError(f"state_dict[{key!r}] must be a Tensor, got {type(value).__name__}")
        stored[key] = _compact_cpu(value)
    # torch's per-module version numbers (BatchNorm's, for instance) travel with the weights.
    versions = getattr(state_dict, "_metadata", None)
    if isinstance(versions, Mapping):
        stored._metadata = _plain(dict(versions), "state_dict._metadata")  # type: ignore[attr-defined]
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
    try:
        metadata_json = json.dumps(dict(metadata), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serializable (finite numbers, str keys): {exc}") from exc
    payload = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "state_dict": stored,
        "metadata_json": metadata_json,
    }
    _atomic_torch_save(Path(path), payload)


def load_weights_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> WeightsFile:
    """Read a weights file: vprob's (:func:`save_state_dict_file`) or a plain flat ``state_dict`` file.

    Raises :class:`CheckpointError` for anything else (nested or non-tensor values, a training
    checkpoint, another version of the format), :class:`UnsafeFileError` for a file holding objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no weights file at {path}")
    payload = _safe_torch_load(
        path,
        map_location,
        "weights file",
        hint="weights are plain tensors: export them again from a run you trust",
    )
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{path} is not a weights file (a {type(payload).__name__}, not a mapping of names to tensors)"
        )
    if payload.get("format") == FORMAT:
        raise CheckpointError(f"{path} is a vprob training checkpoint, not a weights file")
    if payload.get("format") != WEIGHTS_FORMAT:
        # A plain state_dict (torchvision's published weights): no metadata.
        return WeightsFile(_check_flat(path, payload))
    if payload.get("version") != WEIGHTS_VERSION:
        raise CheckpointError(
            f"{path} has weights file version {payload.get('version')}, expected {WEIGHTS_VERSION}"
        )
    expected = {"format", "version", "state_dict", "metadata_json"}
    if set(payload) != expected:
        raise CheckpointError(
            f"{path} is a damaged weights file: keys {sorted(map(str, payload))}, expected {sorted(expected)}"
        )
    state_dict = payload["state_dict"]
    if not isinstance(state_dict, dict):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(state_dict).__name__}, not a mapping")
    try:
        metadata = json.loads(payload["metadata_json"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its metadata is not JSON text: {exc}") from exc
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: its metadata is a {type(metadata).__name__}, not a JSON object")
    return WeightsFile(_check_flat(path, state_dict), metadata)


def load_state_dict_file(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Tensor]:
    """The flat ``str -> Tensor`` state dict of a weights file (see :func:`load_weights_file`)."""
    return load_weights_file(path, map_location).state_dict


def _check_flat(path: Path, mapping: dict[Any, Any]) -> dict[str, Tensor]:
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise CheckpointError(
                f"{path} is not a flat mapping of names to tensors: key {key!r} is a {type(key).__name__}"
            )
        if not isinstance(value, Tensor):
            raise CheckpointError(
                f"{path} is not a flat mapping of names to tensors: {key!r} holds a {type(value).__name__}"
            )
    return mapping


def _compact_cpu(tensor: Tensor) -> Tensor:
    tensor = tensor.detach().cpu()
    # torch.save writes a view's whole storage: copy views of larger tensors so the file holds only this.
    own_bytes = tensor.numel() * tensor.element_size()
    if tensor.untyped_storage().nbytes() != own_bytes or not tensor.is_contiguous():
        tensor = tensor.clone(memory_format=torch.contiguous_format)
    return tensor


# ------------------------------------------------------------------------------------------------------
# The safe load and the plain form


# What torch's weights-only unpickler rebuilds (torch/_weights_only_unpickler.py), as exact types: a
# subclass (a namedtuple, a defaultdict) is pickled by its class name and would be refused at load time.
_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray, torch.dtype, torch.device)
_TENSORS = (Tensor, torch.nn.Parameter)
_NUMERIC_KINDS = frozenset("biufc")  # numpy dtype kinds: bool, signed, unsigned, float, complex


def _plain(obj: Any, where: str) -> Any:
    """``obj`` in the form the weights-only loader accepts (the same object where nothing changes)."""
    kind = type(obj)
    if kind in _SCALARS or kind in _TENSORS or kind is torch.Size:
        return obj
    if isinstance(obj, np.generic) and obj.dtype.kind in _NUMERIC_KINDS:
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in _NUMERIC_KINDS:
            raise TypeError(f"{where} is a numpy array of dtype {obj.dtype}, which a checkpoint cannot hold")
        return torch.from_numpy(np.ascontiguousarray(obj).copy())
    if kind in (dict, OrderedDict):
        items = {}
        changed = False
        for key, value in obj.items():
            new_key = _plain(key, f"a key of {where}")
            if type(new_key) not in _SCALARS or isinstance(new_key, bytearray):
                raise TypeError(
                    f"{where} has a key of type {type(key).__name__}: checkpoint keys must be "
                    "strings or numbers"
                )
            new_value = _plain(value, f"{where}[{key!r}]")
            changed |= new_key is not key or new_value is not value
            items[new_key] = new_value
        if not changed:
            return obj
        result = kind(items)
        if hasattr(obj, "_metadata"):
            result._metadata = obj._metadata  # state_dict()'s per-module versions
        return result
    if kind in (list, tuple, set):
        values = [_plain(value, f"{where}[{i}]") for i, value in enumerate(obj)]
        if all(map(operator.is_, values, obj)):  # one value per element, in order
            return obj
        return kind(values)
    raise TypeError(
        f"{where} is a {kind.__module__}.{kind.__qualname__}, which cannot be stored in a checkpoint that "
        "loads safely: store tensors, numbers, strings, bytes, None, or dicts / lists / tuples of them"
    )


# torch's message ends "... WeightsUnpickler error: Unsupported global: GLOBAL os.system was not an allowed
# global by default. Please use `torch.serialization.add_safe_globals(...)` ...": keep the middle part.
_REFUSAL = re.compile(
    r"WeightsUnpickler error:\s*(Unsupported (?:global|class)[^\n]*?)(?:\s+Please use|\n|$)"
)
_UNPICKLER_ERROR = re.compile(r"WeightsUnpickler error:\s*([^\n]*)")


def _safe_torch_load(path: Path, map_location: str | torch.device, what: str, hint: str) -> Any:
    try:
        with warnings.catch_warnings():
            # A protocol-4 pickle (pickle.dump of a dict) loads fine; torch warns about it nonetheless.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        refused = _REFUSAL.search(message)
        if refused:
            raise UnsafeFileError(
                f"{path} holds objects other than tensors and plain data "
                f"({refused.group(1).rstrip('.')}), so vprob refused to load it as a {what}; nothing in it "
                f"was run. {hint[0].upper()}{hint[1:]}; otherwise delete it"
            ) from None
        detail = _UNPICKLER_ERROR.search(message)
        raise CheckpointError(
            f"{what} {path} is corrupt or unreadable: "
            f"{detail.group(1) if detail else message.splitlines()[0]}"
        ) from exc
    except Exception as exc:  # torch raises many types for a damaged zip/pickle
        raise CheckpointError(f"{what} {path} is corrupt or unreadable: {type(exc).__name__}: {exc}") from exc


def _atomic_torch_save(path: Path, payload: dict[str, Any]) -> None:
    # Never a partial file, whatever interrupts the write (disk full, a signal): see atomic_writer.
    with atomic_writer(path) as f:
        torch.save(payload, f)


# ------------------------------------------------------------------------------------------------------
# One-time conversion of a trusted checkpoint: python -m vprob.checkpoint convert --trust PATH


def convert_checkpoint(
    path: str | os.PathLike, out: str | os.PathLike | None = None, trust: bool = False
) -> str:
    """Rewrite a checkpoint that the safe loader refuses in the safe form; returns what was done.

    With ``trust=False`` only checks: a file that loads safely needs nothing; one that does not raises
    :class:`UnsafeFileError`. ``trust=True`` unpickles it fully (``weights_only=False``: this runs whatever
    the file holds, so only for a file one wrote oneself), checks it is a vprob checkpoint of this version,
    and writes it atomically to ``out`` (default: over ``path``) in the form :func:`load_checkpoint` reads.
    """
    path = Path(path)
    target = Path(out) if out is not None else path
    try:
        load_checkpoint(path)
    except UnsafeFileError:
        if not trust:
            raise
    else:
        return f"{path} already loads safely; nothing to convert"
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {exc}") from exc
    payload = _check_checkpoint_payload(path, payload)
    state = {key: value for key, value in payload.items() if key not in ("format", "version")}
    save_checkpoint(target, state)
    load_checkpoint(target)  # the converted file must pass the safe loader
    return f"converted {path} -> {target}: it now loads without running code"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vprob.checkpoint",
        description="Convert a vprob checkpoint that the safe loader refuses (one you trust) to the safe "
        "form.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="rewrite a trusted checkpoint so that it loads safely")
    convert.add_argument("path", help="the checkpoint file (RUN_DIR/checkpoint.pt)")
    convert.add_argument("--out", help="write the converted checkpoint here (default: over PATH)")
    convert.add_argument(
        "--trust",
        action="store_true",
        help="unpickle PATH fully to convert it: this runs any code it holds, so pass it "
        "only for a checkpoint you wrote yourself",
    )
    args = parser.parse_args(argv)
    try:
        print(convert_checkpoint(args.path, args.out, trust=args.trust))
    except UnsafeFileError as exc:
        print(f"convert: {exc}", file=sys.stderr)
        print(
            "convert: nothing was changed; converting unpickles the file fully and runs any code in it: "
            "pass --trust only for a checkpoint you wrote yourself",
            file=sys.stderr,
        )
        return 2
    except (CheckpointError, TypeError, OSError) as exc:
        print(f"convert: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
