"""The decoded-set cache (vprob.data.cache) on real files: where caches go (argument, environment, XDG,
home), the fingerprint against a digest assembled here with hashlib from its documented parts, the file name,
hits and misses, stale and unreadable files (truncated, empty, foreign, without a fingerprint, holding a
pickle) rebuilt with a warning, and a cache folder that cannot be written. Written for #19 (mutation testing
left these unpinned by the layout tests)."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from vprob.data import cache
from vprob.data.cache import CACHE_VERSION, cache_folder, cached_arrays, fingerprint


@pytest.fixture
def home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("VPROB_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return home


def test_cache_folder_precedence(home, monkeypatch):
    assert cache_folder() == home / ".cache" / "vprob"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # empty: as if unset
    assert cache_folder() == home / ".cache" / "vprob"
    monkeypatch.setenv("XDG_CACHE_HOME", "~/xdg")
    assert cache_folder() == home / "xdg" / "vprob"
    monkeypatch.setenv("VPROB_CACHE_DIR", "")
    assert cache_folder() == home / "xdg" / "vprob"
    monkeypatch.setenv("VPROB_CACHE_DIR", "~/mine")
    assert cache_folder() == home / "mine"  # no vprob/ below the folder named
    assert cache_folder("~/given") == home / "given"
    assert cache_folder(Path("/abs")) == Path("/abs")


def _files(root: Path) -> list[Path]:
    (root / "b").mkdir(parents=True)
    paths = [root / "a.png", root / "b" / "c.jpg"]
    paths[0].write_bytes(b"12345")
    paths[1].write_bytes(b"xy")
    os.utime(paths[0], ns=(0, 1_000_000_123))
    os.utime(paths[1], ns=(0, 2_000_000_456))
    return paths


def test_fingerprint_is_the_documented_digest(tmp_path):
    root = tmp_path / "data"
    paths = _files(root)
    h = hashlib.sha256(b'{"image_size": 16, "labels": ["a", "b"], "version": 1}')
    h.update(b"a.png\x005\x001000000123\n")
    h.update(b"b/c.jpg\x002\x002000000456\n")
    assert CACHE_VERSION == 1
    assert fingerprint(root, paths, labels=["a", "b"], image_size=16) == h.hexdigest()
    # the order of the keyword settings does not matter, their values do
    assert fingerprint(root, paths, image_size=16, labels=["a", "b"]) == h.hexdigest()
    assert fingerprint(root, paths, image_size=17, labels=["a", "b"]) != h.hexdigest()


def test_fingerprint_sees_size_mtime_name_and_version(tmp_path, monkeypatch):
    root = tmp_path / "data"
    paths = _files(root)
    base = fingerprint(root, paths)
    assert fingerprint(root, paths) == base
    os.utime(paths[1], ns=(0, 2_000_000_457))
    touched = fingerprint(root, paths)
    assert touched != base
    paths[1].write_bytes(b"xz")
    os.utime(paths[1], ns=(0, 2_000_000_457))
    assert fingerprint(root, paths) == touched  # same size and mtime: the content is not read
    paths[1].write_bytes(b"xyz")
    os.utime(paths[1], ns=(0, 2_000_000_457))
    assert fingerprint(root, paths) != touched
    monkeypatch.setattr(cache, "CACHE_VERSION", 2)
    h = hashlib.sha256(json.dumps({"version": 2}).encode())
    h.update(b"a.png\x005\x001000000123\n")
    h.update(b"b/c.jpg\x003\x002000000457\n")
    assert fingerprint(root, paths) == h.hexdigest()


def _name(kind: str, split: str, size: int, root: Path) -> str:
    return f"{kind}-{split}-{size}px-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]}.npz"


class _Build:
    def __init__(self, value: int = 7) -> None:
        self.calls, self.value = 0, value

    def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        return {"x": np.full((2, 3), self.value, dtype=np.uint8), "y": np.arange(2)}


def test_miss_then_hit_in_a_nested_folder_named_by_source(tmp_path, monkeypatch):
    root = tmp_path / "data"
    root.mkdir()
    where = tmp_path / "a" / "b" / "cache"  # created with its parents
    build = _Build()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arrays, hit = cached_arrays("imagefolder", "train", root, 16, "key1", build, where)
        assert hit is False and build.calls == 1
        assert [p.name for p in where.iterdir()] == [_name("imagefolder", "train", 16, root)]
        with np.load(where / _name("imagefolder", "train", 16, root), allow_pickle=False) as npz:
            assert sorted(npz.files) == ["fingerprint", "x", "y"] and str(npz["fingerprint"]) == "key1"
        monkeypatch.chdir(tmp_path)
        again, hit = cached_arrays("imagefolder", "train", Path("data"), 16, "key1", build, where)  # relative
    assert hit is True and build.calls == 1
    assert sorted(again) == ["x", "y"]  # the fingerprint is not one of the arrays
    assert np.array_equal(again["x"], arrays["x"]) and np.array_equal(again["y"], np.arange(2))
    # another split, size or kind is another file
    cached_arrays("imagefolder", "val", root, 16, "key1", build, where)
    cached_arrays("imagefolder", "train", root, 32, "key1", build, where)
    assert build.calls == 3 and len(list(where.iterdir())) == 3


def test_the_environment_folder_is_used_without_an_argument(tmp_path, home, monkeypatch):
    monkeypatch.setenv("VPROB_CACHE_DIR", str(tmp_path / "env"))
    root = tmp_path
    cached_arrays("k", "s", root, 8, "key", _Build(), None)
    assert [p.name for p in (tmp_path / "env").iterdir()] == [_name("k", "s", 8, root)]


def test_a_stale_cache_is_rebuilt_and_replaced(tmp_path):
    where = tmp_path / "cache"
    cached_arrays("k", "s", tmp_path, 8, "old", _Build(1), where)
    build = _Build(2)
    arrays, hit = cached_arrays("k", "s", tmp_path, 8, "new", build, where)
    assert hit is False and build.calls == 1 and arrays["x"][0, 0] == 2
    arrays, hit = cached_arrays("k", "s", tmp_path, 8, "new", _Build(3), where)
    assert hit is True and arrays["x"][0, 0] == 2


def _corrupt(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:40])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "foreign":
        path.write_text("not an npz file")
    elif how == "no fingerprint":
        np.savez(path, x=np.zeros(2))
    elif how == "pickle":  # an object array: read only with allow_pickle, which the cache never sets
        np.savez(path, fingerprint=np.asarray("key"), x=np.array([{"a": 1}], dtype=object))


@pytest.mark.parametrize("how", ["truncated", "empty", "foreign", "no fingerprint", "pickle"])
def test_an_unreadable_cache_warns_and_is_rebuilt(tmp_path, how):
    where = tmp_path / "cache"
    cached_arrays("k", "s", tmp_path, 8, "key", _Build(1), where)
    path = where / _name("k", "s", 8, tmp_path)
    _corrupt(path, how)
    build = _Build(5)
    with pytest.warns(UserWarning) as record:
        arrays, hit = cached_arrays("k", "s", tmp_path, 8, "key", build, where)
    ours = [str(w.message) for w in record if "decoded-set cache" in str(w.message)]
    assert len(ours) == 1  # (a truncated zip also gets numpy's own warning)
    message = ours[0]
    assert message.startswith(f"decoded-set cache {path} is unreadable (") and message.endswith(
        "); rebuilding it"
    )
    assert hit is False and build.calls == 1 and arrays["x"][0, 0] == 5
    assert cached_arrays("k", "s", tmp_path, 8, "key", _Build(6), where)[1] is True  # replaced


def test_a_cache_folder_that_cannot_be_written_only_costs_the_cache(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the folder should be")
    build = _Build(4)
    with pytest.warns(UserWarning) as record:
        arrays, hit = cached_arrays("k", "s", tmp_path, 8, "key", build, blocked)
    assert hit is False and arrays["x"][0, 0] == 4 and sorted(arrays) == ["x", "y"]
    path = blocked / _name("k", "s", 8, tmp_path)
    message = str(record[0].message)
    assert message.startswith(f"could not write the decoded-set cache {path} (")
    assert message.endswith("); the next run decodes again")
    assert blocked.read_text() == "a file where the folder should be"


@pytest.mark.skipif(
    hasattr(cached_arrays, "__wrapped__"), reason="a mutation tool's wrapper adds stack frames"
)
def test_both_warnings_name_the_line_that_called_cached_arrays(tmp_path):
    where = tmp_path / "cache"
    cached_arrays("k", "s", tmp_path, 8, "key", _Build(), where)
    _corrupt(where / _name("k", "s", 8, tmp_path), "foreign")
    blocked = tmp_path / "file"
    blocked.write_text("")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        cached_arrays("k", "s", tmp_path, 8, "key", _Build(), where)
        cached_arrays("k", "s", tmp_path, 8, "key", _Build(), blocked)
    assert [Path(w.filename).name for w in record] == ["test_mutation_cache.py"] * 2


def test_the_warnings_stack_levels_point_past_the_cache_module(tmp_path, monkeypatch):
    """The same as above in a form that a mutation tool's wrappers do not disturb: ``_read`` warns two
    frames up (its caller cached_arrays, then cached_arrays' caller), cached_arrays one frame up."""
    seen = []

    class Warnings:
        @staticmethod
        def warn(message, category=UserWarning, stacklevel=1):
            seen.append((message.split(" ")[0], stacklevel))

    monkeypatch.setattr(cache, "warnings", Warnings)
    where = tmp_path / "cache"
    cached_arrays("k", "s", tmp_path, 8, "key", _Build(), where)
    _corrupt(where / _name("k", "s", 8, tmp_path), "foreign")
    cached_arrays("k", "s", tmp_path, 8, "key", _Build(), where)
    (tmp_path / "file").write_text("")
    cached_arrays("k", "s", tmp_path, 8, "key", _Build(), tmp_path / "file")
    assert seen == [("decoded-set", 3), ("could", 2)]
