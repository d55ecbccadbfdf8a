"""Reading files from outside without running code: pickled data sets, config files, and paths in them.

- :func:`load_pickle_restricted`: a pickle file (CIFAR-10/100's python batch files) read by an unpickler
  that builds only builtin containers, strings, bytes, numbers and numpy arrays; any other global (the way
  a pickle calls ``os.system`` or any other function) is refused, naming the file and the global, before
  anything runs.
- :func:`read_config_file`: JSON with the standard library, YAML only with PyYAML's safe loader (which
  builds plain data only); the top level must be a mapping.
- :func:`safe_relative_path`: a path taken from a loaded file, joined to a base folder only if it stays
  inside it (no absolute paths, no ``..``, no symbolic link leading out).
- :func:`atomic_writer`, :func:`write_atomic` and :func:`open_append`: writing into a run folder someone
  else prepared without following a symbolic link planted there (``eval.json.tmp -> ~/.bashrc``) out of it.

Checkpoints and weights files are read by :mod:`vprob.checkpoint` (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import io
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np


class UnsafePickleError(ValueError, pickle.UnpicklingError):
    """A pickle file that names a global outside the allowed set; nothing in it was run."""


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as pickle uses it: a Python 3 ``bytes`` object pickled with protocol 2 or lower
    is stored as ``_codecs.encode(text, "latin1")``. Only that codec is accepted."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(
            f"_codecs.encode is allowed only as pickle uses it (a str and 'latin1'), "
            f"got encoding {encoding!r}"
        )
    return codecs.encode(text, "latin1")


# numpy's own array constructors, taken from the installed numpy (numpy 1.x pickles name
# numpy.core.multiarray, numpy 2.x numpy._core.multiarray: both map to the installed function, so the
# deprecated numpy.core shim is never imported).
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_FROMBUFFER = np.empty(0).__reduce_ex__(5)[0]

_ALLOWED: dict[tuple[str, str], Any] = {
    # What CIFAR-10/100's batch files (Python 2 cPickle, protocol 2) hold: a dict of byte strings, lists
    # of ints / byte strings and uint8 arrays, the arrays as _reconstruct(ndarray, (0,), b"b") + state.
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # The same files written by Python 3: bytes under protocol <= 2, arrays under protocol >= 5.
    ("_codecs", "encode"): _latin1_encode,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    # Builtin containers and numbers that some protocols build through their class.
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "complex"): complex,
}
# Python 2 pickles name the builtins module __builtin__.
_ALLOWED.update(
    {("__builtin__", name): value for (module, name), value in list(_ALLOWED.items()) if module == "builtins"}
)


class RestrictedUnpickler(pickle.Unpickler):
    """A ``pickle.Unpickler`` whose ``find_class`` returns only the globals in :data:`ALLOWED_GLOBALS`."""

    def __init__(self, file: io.BufferedIOBase, *, source: str = "<pickle>", encoding: str = "bytes") -> None:
        super().__init__(file, encoding=encoding, fix_imports=True)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refused to load the global {module}.{name}: this file may hold only "
                "builtin containers, strings, bytes, numbers and numpy arrays (nothing in it was run)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: refused a persistent id ({pid!r}) (nothing in it was run)")


ALLOWED_GLOBALS: frozenset[str] = frozenset(f"{module}.{name}" for module, name in _ALLOWED)


def load_pickle_restricted(path: str | os.PathLike, *, encoding: str = "bytes") -> Any:
    """Unpickle ``path`` allowing only builtin containers, strings, bytes, numbers and numpy arrays.

    Args:
        path: a pickle file, such as a CIFAR-10 ``data_batch_1`` or CIFAR-100 ``train`` file.
        encoding: how Python 2 byte strings are decoded; ``"bytes"`` (the default, as CIFAR's own reader
            does) keeps them as ``bytes``, so a CIFAR batch has keys ``b"data"``, ``b"labels"``, ...

    Raises:
        UnsafePickleError (a ValueError): the file names any other global; the message names the file and
            the global, and nothing in the file was run.
        ValueError: the file is not a readable pickle (truncated, not a pickle), naming the file.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    with path.open("rb") as f:
        try:
            return RestrictedUnpickler(f, source=str(path), encoding=encoding).load()
        except UnsafePickleError:
            raise
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
            UnicodeDecodeError,
            MemoryError,
        ) as exc:
            raise ValueError(f"{path} is not a readable pickle file: {type(exc).__name__}: {exc}") from exc


# ------------------------------------------------------------------------------------------------------
# Config files


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a ``.json``, ``.yaml`` or ``.yml`` config file, read without running any code.

    JSON is read with the standard library, YAML with PyYAML's safe loader only (install PyYAML for YAML
    files: ``pip install pyyaml``). Duplicate keys are refused (a silent override hides typos); so is a top
    level that is not a mapping with string keys. Which keys are valid is the caller's business
    (``vprob.train.config_from_dict`` refuses unknown ones).

    Raises:
        ValueError: unknown extension, a file that does not parse, duplicate keys, a top level that is not a
            mapping; the message names the file.
        ImportError: a YAML file without PyYAML installed.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ValueError(f"config file {path}: unknown extension {path.suffix!r} (use .json, .yaml or .yml)")
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text, object_pairs_hook=_no_duplicates(path))
        except json.JSONDecodeError as exc:
            raise ValueError(f"config file {path} is not valid JSON: {exc}") from exc
    else:
        data = _safe_yaml(path, text)
    if not isinstance(data, dict):
        raise ValueError(
            f"config file {path} must hold a mapping of settings at its top level, "
            f"not a {type(data).__name__}"
        )
    for key in data:
        if not isinstance(key, str):
            raise ValueError(f"config file {path}: top-level key {key!r} is not a string")
    return data


def _no_duplicates(path: Path):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ValueError(f"config file {path}: key {key!r} appears twice")
            result[key] = value
        return result

    return hook


def _safe_yaml(path: Path, text: str) -> Any:
    try:
        import yaml
    except ImportError as exc:
        raise ImportError(
            f"config file {path} is YAML, which needs PyYAML: pip install pyyaml "
            "(or write the config as JSON)"
        ) from exc

    class _Loader(yaml.SafeLoader):
        """PyYAML's safe loader (plain data only), refusing duplicate keys."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<" merges may be overridden by explicit keys, as YAML intends
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:
                    continue  # an unhashable key: SafeLoader refuses it with its own message
                if duplicate:
                    raise ValueError(
                        f"config file {path}: key {key!r} appears twice (line {key_node.start_mark.line + 1})"
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: plain data only
    except yaml.YAMLError as exc:
        raise ValueError(
            f"config file {path} is not YAML that the safe loader accepts (plain data only): {exc}"
        ) from exc


# ------------------------------------------------------------------------------------------------------
# Paths taken from loaded files


def safe_relative_path(base: str | os.PathLike, name: str | os.PathLike) -> Path:
    """``base / name`` for a ``name`` read from a file, refused unless it stays inside ``base``.

    ``name`` must be a non-empty relative path without ``..`` components (in POSIX or Windows form), and
    ``base / name`` must resolve inside ``base`` after following symbolic links that already exist (a link
    planted in a shared run folder cannot lead out of it). Returns ``base / name`` (unresolved).

    Raises:
        ValueError: ``name`` is empty, absolute, has a drive, contains ``..`` or a NUL byte, or leads out
            of ``base``; the message names both.
        TypeError: ``name`` is not a string or path.
    """
    if not isinstance(name, str | os.PathLike):
        raise TypeError(f"name must be a str or path, got {type(name).__name__}")
    text = os.fspath(name)
    if not isinstance(text, str):
        raise TypeError(f"name must be a str or path, got {type(text).__name__}")
    if not text.strip() or "\0" in text:
        raise ValueError(f"path {text!r} (to go under {base}) is empty or holds a NUL byte")
    if text.startswith("~"):
        raise ValueError(f"path {text!r} must be relative to {base}, not to a home folder")
    for flavour in (PurePosixPath(text), PureWindowsPath(text)):
        if flavour.is_absolute() or flavour.anchor:
            raise ValueError(f"path {text!r} must be relative to {base}, not absolute")
        if ".." in flavour.parts:
            raise ValueError(f"path {text!r} must stay inside {base} (no '..')")
    base_path = Path(base)
    joined = base_path / text
    root = base_path.resolve()
    if not joined.resolve().is_relative_to(root):
        raise ValueError(f"path {text!r} leads out of {base} (through a symbolic link) to {joined.resolve()}")
    return joined


# ------------------------------------------------------------------------------------------------------
# Writing into a run folder that may hold planted symbolic links


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[io.BufferedWriter]:
    """A binary file that replaces ``path`` atomically when the block ends without an error, never through a
    symbolic link; on any error (disk full, a signal) the temporary file is removed and ``path`` is left as
    it was.

    The temporary file is created by ``tempfile.mkstemp`` in the same folder (a fresh name, opened with
    O_EXCL, so a link planted under a predictable name like ``eval.json.tmp`` is never followed), flushed
    to disk and renamed over ``path`` (which replaces a link at ``path`` itself, not its target); the
    folder is synced so that the rename survives a crash.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Replace ``path`` with ``data`` atomically (str is written as UTF-8): :func:`atomic_writer`."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if not isinstance(payload, bytes | bytearray):
        raise TypeError(f"data must be bytes or str, got {type(data).__name__}")
    with atomic_writer(path) as f:
        f.write(payload)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_append(path: str | os.PathLike) -> io.TextIOWrapper:
    """``path`` opened for appending text (created if missing), refusing a symbolic link at ``path``.

    Raises:
        OSError: ``path`` is a symbolic link (ELOOP), naming it.
    """
    refusal = f"{path} is a symbolic link; vprob does not write through links in a run folder"
    if os.path.islink(path):  # where O_NOFOLLOW does not exist (Windows)
        raise OSError(errno.ELOOP, refusal)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a link planted between the check and the open
            raise OSError(errno.ELOOP, refusal) from exc
        raise
    return os.fdopen(fd, "a", encoding="utf-8")
