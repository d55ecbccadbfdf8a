"""The decoded-set cache: a data set decoded once is kept as one uncompressed ``.npz`` so that the next run
starts in seconds.

Where: ``cache_dir`` if given, else ``$VPROB_CACHE_DIR``, else ``$XDG_CACHE_HOME/vprob`` (``~/.cache/vprob``);
never inside the data folder (which may be read-only or shared). One file per (source folder, split, image
size): ``{kind}-{split}-{size}px-{hash of the folder's absolute path}.npz``.

Staleness: each file records a fingerprint of its sources (every source file's relative path, size and
modification time in ns, and the image size and a format version). A cache whose fingerprint differs is
rebuilt and replaced; one that cannot be read (truncated, foreign) is rebuilt too, with a warning.

Atomicity: a cache is written through :func:`vprob.safe_io.atomic_writer` (a temporary file in the same
folder, fsync, rename), so a reader sees either the old file or the whole new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from vprob.safe_io import atomic_writer

__all__ = ["CACHE_VERSION", "cache_folder", "cached_arrays", "fingerprint"]

CACHE_VERSION = 1  # bump when the decoding or resizing changes what a cache holds


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder caches go to (see the module notes for the order of precedence)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("VPROB_CACHE_DIR"):
        return Path(os.environ["VPROB_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "vprob"


def fingerprint(root: Path, files: Iterable[Path], **extra: object) -> str:
    """A digest of ``files``' paths relative to ``root``, sizes and mtimes (ns), with ``extra`` settings."""
    h = hashlib.sha256(json.dumps({"version": CACHE_VERSION, **extra}, sort_keys=True).encode())
    for path in files:
        st = path.stat()
        h.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file whose fingerprint is ``key``; None if it is stale or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if str(npz["fingerprint"]) != key:
                return None
            return {name: npz[name] for name in npz.files if name != "fingerprint"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        warnings.warn(f"decoded-set cache {path} is unreadable ({err}); rebuilding it", stacklevel=3)
        return None


def cached_arrays(
    kind: str,
    split: str,
    root: Path,
    image_size: int,
    key: str,
    build: Callable[[], dict[str, np.ndarray]],
    cache_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, np.ndarray], bool]:
    """The arrays ``build()`` returns for this source, from the cache when its fingerprint ``key`` matches.

    Returns (arrays, hit). A cache folder that cannot be created or written (read-only) only costs the
    cache, with a warning: the freshly built arrays are returned either way.
    """
    folder = cache_folder(cache_dir)
    where = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    path = folder / f"{kind}-{split}-{image_size}px-{where}.npz"
    if path.is_file():
        arrays = _read(path, key)
        if arrays is not None:
            return arrays, True
    arrays = build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_writer(path) as f:
            np.savez(f, fingerprint=np.asarray(key), **arrays)
    except OSError as err:
        warnings.warn(
            f"could not write the decoded-set cache {path} ({err}); the next run decodes again", stacklevel=2
        )
    return arrays, False
