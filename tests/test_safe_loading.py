"""Nothing vprob loads can run code (issue #18): checkpoints, weights files, pickled batch files, configs.

Every malicious file here would create a marker file if it were unpickled / constructed by an unsafe loader
(``pathlib.Path.touch`` through ``__reduce__``, or YAML's ``!!python/object/apply``). Each loader must refuse
it with a clear error, the marker must never appear, and the run folder must be left exactly as it was
(same names, bytes and modification times). The command-line tests use one tiny real digits run.
"""

from __future__ import annotations

import json
import pickle
import shutil
import struct
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from vprob.checkpoint import (
    CHECKPOINT_NAME,
    FORMAT,
    VERSION,
    CheckpointError,
    UnsafeFileError,
    convert_checkpoint,
    load_checkpoint,
    load_state_dict_file,
    load_weights_file,
    save_checkpoint,
    save_state_dict_file,
)
from vprob.checkpoint import main as checkpoint_main
from vprob.safe_io import (
    UnsafePickleError,
    load_pickle_restricted,
    open_append,
    read_config_file,
    safe_relative_path,
    write_atomic,
)


class Touch:
    """Unpickling this creates ``marker``: the stand-in for an attacker's ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def vprob_main(argv: list[str]) -> int:
    """The ``vprob`` command line, in this process (imported here: the other tests need only the loaders)."""
    from vprob.cli import main

    return main(argv)


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: (kind, bytes, mtime_ns) for files, ("dir",) for folders."""
    state = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_dir():
            state[rel] = ("dir",)
        else:
            stat = path.stat()
            state[rel] = ("file", path.read_bytes(), stat.st_mtime_ns)
    return state


def malicious_checkpoint(path: Path, marker: Path, genuine: dict | None = None) -> None:
    """A file that looks like a vprob checkpoint (marker, version, config) but holds a Touch object."""
    payload = dict(genuine) if genuine is not None else {"format": FORMAT, "version": VERSION, "step": 1}
    payload["model"] = {"encoder.weight": Touch(marker)}
    torch.save(payload, path)


# ------------------------------------------------------------------------------------------------------
# Checkpoints


def test_malicious_checkpoint_is_refused_before_anything_runs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "marker"
    malicious_checkpoint(run / CHECKPOINT_NAME, marker)
    (run / "config.json").write_text("{}\n")
    before = snapshot(run)
    with pytest.raises(UnsafeFileError, match=r"holds objects other than tensors.*getattr.*nothing in it"):
        load_checkpoint(run / CHECKPOINT_NAME)
    assert not marker.exists()
    assert snapshot(run) == before
    # The unsafe loader would indeed have run it (so the test's payload is a real one).
    torch.load(run / CHECKPOINT_NAME, weights_only=False)
    assert marker.exists()


def test_refusal_message_names_the_conversion_command(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    malicious_checkpoint(path, tmp_path / "marker")
    with pytest.raises(UnsafeFileError) as info:
        load_checkpoint(path)
    assert f"python -m vprob.checkpoint convert --trust {path}" in str(info.value)
    assert isinstance(info.value, CheckpointError)  # the command line reports it as a user error


def test_checkpoint_round_trip_keeps_every_value_and_type(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(5)
    state = {
        "config": {"lr": 0.1, "knn_k": (10, 200), "run_dir": None, "amp": True, "name": "x"},
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": 7,
        "rng": {"torch": torch.get_rng_state(), "cuda": [], "generator": generator.get_state()},
        "python_random": (3, tuple(range(625)), None),
        "numpy_bit_generator": np.random.default_rng(3).bit_generator.state,  # 128-bit ints
        "sizes": torch.Size([2, 3]),
        "dtype": torch.float64,
        "tags": {1, 2},
    }
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["format"] == FORMAT and loaded["version"] == VERSION
    reference = torch.load(path, weights_only=False)  # the unrestricted reading of our own file
    assert loaded.keys() == reference.keys()
    for key in ("config", "step", "python_random", "numpy_bit_generator", "sizes", "dtype", "tags"):
        assert loaded[key] == state[key] and type(loaded[key]) is type(state[key])
    for key, value in state["model"].items():
        assert torch.equal(loaded["model"][key], value)
    assert loaded["model"]._metadata == state["model"]._metadata  # BatchNorm's version travels with it
    assert torch.equal(loaded["rng"]["generator"], generator.get_state())
    restored = torch.optim.AdamW(model.parameters(), lr=0.1)
    restored.load_state_dict(loaded["optimizer"])
    assert torch.equal(
        restored.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )
    rng = np.random.default_rng()
    rng.bit_generator.state = loaded["numpy_bit_generator"]
    assert rng.integers(1 << 30) == np.random.default_rng(3).integers(1 << 30)


def test_numpy_values_are_stored_as_python_numbers_and_tensors(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(
        path,
        {
            "config": {"lr": np.float64(0.25), "dim": np.int64(8)},
            "legacy_rng": ("MT19937", np.arange(4, dtype=np.int64)),
        },
    )
    loaded = load_checkpoint(path)
    assert loaded["config"] == {"lr": 0.25, "dim": 8}
    assert type(loaded["config"]["lr"]) is float and type(loaded["config"]["dim"]) is int
    assert torch.equal(loaded["legacy_rng"][1], torch.arange(4))


@pytest.mark.parametrize(
    "bad, where",
    [
        (object(), r"state\['x'\]"),
        (OrderedDict(a=[1, Path("p")]), r"state\['x'\]\['a'\]\[1\]"),
        (np.array(["a"], dtype=object), "numpy array of dtype object"),
    ],
)
def test_save_refuses_what_could_not_be_loaded_safely(tmp_path, bad, where):
    path = tmp_path / CHECKPOINT_NAME
    with pytest.raises(TypeError, match=where):
        save_checkpoint(path, {"x": bad})
    assert not list(tmp_path.iterdir())  # nothing written, not even a temporary file


def test_version_and_marker_checks_stay_strict(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    for payload, message in (
        ({"format": FORMAT, "version": VERSION + 1}, "checkpoint version 2, expected 1"),
        ({"format": FORMAT, "version": "1"}, "checkpoint version 1, expected 1"),
        ({"format": FORMAT}, "version None"),
        ({"step": 1}, "not a vprob checkpoint"),
        ([1, 2], "not a vprob checkpoint"),
    ):
        torch.save(payload, path)
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(path)


def test_a_checkpoint_of_the_previous_release_loads_safely(tmp_path):
    """Version-1 files written by the old save (plain torch.save of the same layout) load as they are."""
    path = tmp_path / CHECKPOINT_NAME
    model = torch.nn.Linear(2, 2)
    payload = {
        "format": FORMAT,
        "version": 1,
        "config": {"method": "vsimclr", "knn_k": (10, 200)},
        "model": model.state_dict(),
        "step": 3,
        "rng": {"torch": torch.get_rng_state(), "cuda": [], "generator": torch.Generator().get_state()},
    }
    torch.save(payload, path)
    loaded = load_checkpoint(path)
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["weight"], model.weight)


def test_convert_needs_trust_then_rewrites_a_trusted_checkpoint(tmp_path, capsys):
    """A checkpoint of one's own holding a numpy float (refused by the safe loader) is converted once."""
    path = tmp_path / CHECKPOINT_NAME
    torch.save(
        {
            "format": FORMAT,
            "version": VERSION,
            "config": {"lr": np.float64(0.5)},
            "step": 2,
            "model": {"w": torch.ones(2)},
        },
        path,
    )
    original = path.read_bytes()
    with pytest.raises(UnsafeFileError, match="numpy"):
        load_checkpoint(path)
    assert checkpoint_main(["convert", str(path)]) == 2
    assert "pass --trust only for a checkpoint you wrote yourself" in capsys.readouterr().err
    assert path.read_bytes() == original
    assert checkpoint_main(["convert", "--trust", str(path)]) == 0
    assert "converted" in capsys.readouterr().out
    loaded = load_checkpoint(path)
    assert loaded["config"] == {"lr": 0.5} and type(loaded["config"]["lr"]) is float
    assert loaded["step"] == 2 and torch.equal(loaded["model"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # atomic: no temporary file left
    assert convert_checkpoint(path) == f"{path} already loads safely; nothing to convert"


def test_convert_refuses_a_foreign_file_even_when_trusted(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": np.float32(1.0)}, path)
    original = path.read_bytes()
    with pytest.raises(CheckpointError, match="not a vprob checkpoint"):
        convert_checkpoint(path, trust=True)
    assert path.read_bytes() == original


def test_convert_command_runs_as_a_module(tmp_path):
    """The command the refusal message prints exists, and without --trust never unpickles the file."""
    path = tmp_path / CHECKPOINT_NAME
    marker = tmp_path / "marker"
    malicious_checkpoint(path, marker)
    result = subprocess.run(
        [sys.executable, "-m", "vprob.checkpoint", "convert", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "refused" in result.stderr and "--trust" in result.stderr
    assert not marker.exists()


# ------------------------------------------------------------------------------------------------------
# Weights files


def test_weights_file_round_trip(tmp_path):
    path = tmp_path / "backbone.pt"
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    metadata = {"backbone": "resnet18", "knn_k": (10, 200), "dim": 128}
    save_state_dict_file(path, model.state_dict(), metadata)
    weights = load_weights_file(path)
    assert weights.metadata == {"backbone": "resnet18", "knn_k": [10, 200], "dim": 128}
    fresh = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    fresh.load_state_dict(load_state_dict_file(path), strict=True)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)
    assert [p.name for p in tmp_path.iterdir()] == ["backbone.pt"]


def test_weights_file_stores_only_the_tensor_not_its_whole_storage(tmp_path):
    big = torch.arange(100_000.0)
    save_state_dict_file(tmp_path / "w.pt", {"row": big[:10]})
    assert (tmp_path / "w.pt").stat().st_size < 10_000
    assert torch.equal(load_state_dict_file(tmp_path / "w.pt")["row"], torch.arange(10.0))


def test_plain_state_dict_file_loads_without_metadata(tmp_path):
    """torchvision's published weights are a bare OrderedDict of tensors."""
    path = tmp_path / "resnet.pth"
    state = torch.nn.Linear(2, 3).state_dict()
    torch.save(state, path)
    weights = load_weights_file(path)
    assert weights.metadata == {} and weights.state_dict.keys() == state.keys()


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"layer": {"weight": torch.ones(1)}}, r"'layer' holds a dict"),
        ({"weight": 1.0}, r"'weight' holds a float"),
        ({3: torch.ones(1)}, "key 3 is a int"),
        ([torch.ones(1)], "a list, not a mapping"),
        ({"format": FORMAT, "version": VERSION}, "training checkpoint, not a weights file"),
        ({"format": "vprob-weights", "version": 2, "state_dict": {}, "metadata_json": "{}"}, "version 2"),
        (
            {"format": "vprob-weights", "version": 1, "state_dict": {}, "metadata_json": "[]"},
            "not a JSON object",
        ),
        ({"format": "vprob-weights", "version": 1, "state_dict": {}}, "damaged"),
    ],
)
def test_weights_file_refuses_anything_but_a_flat_tensor_mapping(tmp_path, payload, message):
    path = tmp_path / "w.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        load_state_dict_file(path)


def test_malicious_weights_file_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "marker"
    torch.save(
        {"format": "vprob-weights", "version": 1, "state_dict": {"w": Touch(marker)}, "metadata_json": "{}"},
        run / "init.pt",
    )
    before = snapshot(run)
    with pytest.raises(UnsafeFileError, match="as a weights file; nothing in it was run"):
        load_state_dict_file(run / "init.pt")
    assert not marker.exists() and snapshot(run) == before


@pytest.mark.parametrize(
    "state_dict, metadata, error, message",
    [
        ({"w": [1.0]}, None, TypeError, r"state_dict\['w'\] must be a Tensor"),
        ({1: torch.ones(1)}, None, TypeError, "keys must be str"),
        ([("w", torch.ones(1))], None, TypeError, "state_dict must be a mapping"),
        ({"w": torch.ones(1)}, {"lr": float("nan")}, ValueError, "metadata must be JSON-serializable"),
        ({"w": torch.ones(1)}, {"path": Path("x")}, ValueError, "metadata must be JSON-serializable"),
        ({"w": torch.ones(1)}, ["x"], TypeError, "metadata must be a mapping"),
    ],
)
def test_save_weights_refuses_bad_arguments(tmp_path, state_dict, metadata, error, message):
    with pytest.raises(error, match=message):
        save_state_dict_file(tmp_path / "w.pt", state_dict, metadata)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------------
# Pickled data sets (CIFAR's python batch files)


def _op_bytes(data: bytes) -> bytes:
    if len(data) < 256:
        return pickle.SHORT_BINSTRING + bytes([len(data)]) + data
    return pickle.BINSTRING + struct.pack("<i", len(data)) + data


def _op(value) -> bytes:
    """Protocol-2 opcodes for ``value`` as Python 2's cPickle wrote CIFAR's files: a byte string is a
    BINSTRING (no _codecs.encode), an array goes through numpy.core.multiarray._reconstruct."""
    if isinstance(value, bytes):
        return _op_bytes(value)
    if isinstance(value, int):
        return pickle.BININT + struct.pack("<i", value)
    if isinstance(value, list):
        return pickle.EMPTY_LIST + pickle.MARK + b"".join(map(_op, value)) + pickle.APPENDS
    if isinstance(value, dict):
        items = b"".join(_op(k) + _op(v) for k, v in value.items())
        return pickle.EMPTY_DICT + pickle.MARK + items + pickle.SETITEMS
    assert isinstance(value, np.ndarray) and value.dtype == np.uint8
    shape = pickle.MARK + b"".join(_op(n) for n in value.shape) + pickle.TUPLE
    dtype = (
        pickle.GLOBAL
        + b"numpy\ndtype\n"
        + _op(b"u1")
        + _op(0)
        + _op(1)
        + pickle.TUPLE3
        + pickle.REDUCE
        + pickle.MARK
        + _op(3)
        + _op(b"|")
        + pickle.NONE * 3
        + _op(-1)
        + _op(-1)
        + _op(0)
        + pickle.TUPLE
        + pickle.BUILD
    )
    return (
        pickle.GLOBAL
        + b"numpy.core.multiarray\n_reconstruct\n"
        + pickle.GLOBAL
        + b"numpy\nndarray\n"
        + _op(0)
        + pickle.TUPLE1
        + _op(b"b")
        + pickle.TUPLE3
        + pickle.REDUCE
        + pickle.MARK
        + _op(1)
        + shape
        + dtype
        + pickle.NEWFALSE
        + _op_bytes(value.tobytes())
        + pickle.TUPLE
        + pickle.BUILD
    )


def cifar_batch(n: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def assert_same_batch(loaded: dict, batch: dict) -> None:
    assert loaded.keys() == batch.keys()
    assert loaded[b"data"].dtype == np.uint8 and loaded[b"data"].shape == batch[b"data"].shape
    assert np.array_equal(loaded[b"data"], batch[b"data"])
    for key in (b"labels", b"filenames", b"batch_label"):
        assert loaded[key] == batch[key]


def test_python2_cifar_batch_file_loads(tmp_path):
    batch = cifar_batch()
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.PROTO + b"\x02" + _op(batch) + pickle.STOP)
    # Oracle: the unrestricted unpickler (as CIFAR's own reader) agrees with the hand-written stream.
    assert_same_batch(pickle.loads(path.read_bytes(), encoding="bytes"), batch)
    assert_same_batch(load_pickle_restricted(path), batch)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
def test_cifar_batch_file_written_by_python3_loads(tmp_path, protocol):
    """A miniature CIFAR-10 / CIFAR-100 file written with pickle.dump (protocol 2 as the originals)."""
    batch = cifar_batch()
    batch[b"coarse_labels"] = [v // 2 for v in batch[b"labels"]]
    batch[b"float_features"] = np.linspace(0, 1, 6).reshape(2, 3)  # other numpy arrays inside
    path = tmp_path / "train"
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=protocol)
    loaded = load_pickle_restricted(path)
    assert_same_batch(
        {k: v for k, v in loaded.items() if k in (b"batch_label", b"labels", b"data", b"filenames")},
        {k: batch[k] for k in (b"batch_label", b"labels", b"data", b"filenames")},
    )
    assert loaded[b"coarse_labels"] == batch[b"coarse_labels"]
    np.testing.assert_array_equal(loaded[b"float_features"], batch[b"float_features"])


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_malicious_batch_file_is_refused_naming_file_and_global(tmp_path, protocol):
    data = tmp_path / "cifar-10-batches-py"
    data.mkdir()
    marker = tmp_path / "marker"
    batch = cifar_batch()
    batch[b"labels"] = Touch(marker)
    (data / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=protocol))
    before = snapshot(data)
    refusal = r"data_batch_1: refused to load the global (\w+\.getattr|pathlib\.Path\.touch)"
    with pytest.raises(UnsafePickleError, match=refusal):
        load_pickle_restricted(data / "data_batch_1")
    assert not marker.exists() and snapshot(data) == before


def test_os_system_and_codecs_misuse_are_refused(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(b"\x80\x02cos\nsystem\nX\x05\x00\x00\x00touch\x85R.")
    with pytest.raises(UnsafePickleError, match="os.system"):
        load_pickle_restricted(path)
    # _codecs.encode is allowed only as pickle uses it for bytes (latin1), not with another codec.
    path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x06\x00\x00\x00base64\x86R.")
    with pytest.raises(UnsafePickleError, match="'base64'"):
        load_pickle_restricted(path)


def test_truncated_batch_file_is_a_clear_error(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(cifar_batch(), protocol=2)[:500])
    with pytest.raises(ValueError, match="data_batch_1 is not a readable pickle file"):
        load_pickle_restricted(path)


# ------------------------------------------------------------------------------------------------------
# Config files


def test_json_and_yaml_configs_read_the_same(tmp_path):
    settings = {"method": "vcl", "epochs": 3, "lr": 0.002, "knn_k": [10, 200], "run_dir": None}
    (tmp_path / "c.json").write_text(json.dumps(settings))
    assert read_config_file(tmp_path / "c.json") == settings
    pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text("method: vcl\nepochs: 3\nlr: 0.002\nknn_k: [10, 200]\nrun_dir: null\n")
    assert read_config_file(tmp_path / "c.yaml") == settings
    (tmp_path / "c.yml").write_text("base: &b {epochs: 3}\nrun:\n  <<: *b\n  epochs: 4\n")
    assert read_config_file(tmp_path / "c.yml") == {"base": {"epochs": 3}, "run": {"epochs": 4}}


def test_malicious_yaml_config_is_refused(tmp_path):
    yaml = pytest.importorskip("yaml")
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "marker"
    for tag in ("!!python/object/apply:pathlib.Path.touch", "!!python/object/apply:os.system"):
        argument = str(marker) if "pathlib" in tag else f"touch {marker}"
        (run / "config.yaml").write_text(f"method: vcl\nepochs: {tag} [{json.dumps(argument)}]\n")
        before = snapshot(run)
        with pytest.raises(ValueError, match=r"config.yaml is not YAML that the safe loader accepts"):
            read_config_file(run / "config.yaml")
        assert not marker.exists() and snapshot(run) == before
    # The payload is real: PyYAML's unsafe loader would run it.
    yaml.unsafe_load((run / "config.yaml").read_text())
    assert marker.exists()


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("c.json", "[1, 2]", "must hold a mapping of settings at its top level, not a list"),
        ("c.json", '{"epochs": 1, "epochs": 2}', "key 'epochs' appears twice"),
        ("c.json", "{epochs: 1}", "is not valid JSON"),
        ("c.yaml", "- 1\n- 2\n", "not a list"),
        ("c.yaml", "epochs: 1\nepochs: 2\n", r"key 'epochs' appears twice \(line 2\)"),
        ("c.yaml", "1: a\n", "top-level key 1 is not a string"),
        ("c.toml", "epochs = 1", "unknown extension '.toml'"),
    ],
)
def test_bad_config_files_are_refused_naming_the_file(tmp_path, name, text, message):
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    (tmp_path / name).write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        read_config_file(tmp_path / name)
    assert name in str(info.value)


# ------------------------------------------------------------------------------------------------------
# Paths taken from loaded files


def test_safe_relative_path_keeps_names_inside_the_base(tmp_path):
    assert safe_relative_path(tmp_path, "report/figure.png") == tmp_path / "report" / "figure.png"
    assert safe_relative_path(tmp_path, "class_3") == tmp_path / "class_3"
    assert safe_relative_path(tmp_path, "a/./b") == tmp_path / "a" / "b"


@pytest.mark.parametrize(
    "name",
    [
        "/etc/passwd",
        "../outside",
        "a/../../b",
        "..",
        "~/x",
        "",
        "C:\\Windows",
        "a\\..\\..\\b",
        "\\\\server\\share",
        "a\0b",
    ],
)
def test_safe_relative_path_refuses_escapes(tmp_path, name):
    with pytest.raises(ValueError, match=r"relative|inside|empty|home"):
        safe_relative_path(tmp_path, name)


def test_safe_relative_path_refuses_a_symlink_leading_out(tmp_path):
    base = tmp_path / "run"
    base.mkdir()
    (base / "report").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="leads out of"):
        safe_relative_path(base, "report/x.json")
    with pytest.raises(TypeError, match="name must be a str"):
        safe_relative_path(base, 3)


def test_write_atomic_never_follows_a_planted_link(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.json.tmp").symlink_to(victim)  # the predictable temporary name of today's writers
    (run / "results.json").symlink_to(victim)
    write_atomic(run / "eval.json", '{"a": 1}')
    write_atomic(run / "results.json", b"{}")
    assert victim.read_text() == "precious"
    assert (run / "eval.json").read_text() == '{"a": 1}' and not (run / "results.json").is_symlink()
    assert sorted(p.name for p in run.iterdir()) == ["eval.json", "eval.json.tmp", "results.json"]
    with pytest.raises(TypeError, match="data must be bytes or str"):
        write_atomic(run / "x", 3)


def test_open_append_refuses_a_link_and_appends_to_a_file(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "metrics.jsonl").symlink_to(victim)
    with pytest.raises(OSError, match="is a symbolic link"):
        open_append(tmp_path / "metrics.jsonl")
    assert victim.read_text() == "precious"
    for line in ("a\n", "b\n"):
        with open_append(tmp_path / "log.jsonl") as f:
            f.write(line)
    assert (tmp_path / "log.jsonl").read_text() == "a\nb\n"


# ------------------------------------------------------------------------------------------------------
# The command line on a real run folder holding a malicious checkpoint


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One real digits run (2 steps), shared by the command-line tests; copy it before changing it."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    code = vprob_main(
        [
            "train",
            "--epochs",
            "1",
            "--max-steps",
            "2",
            "--run-dir",
            str(run),
            "--no-progress",
            "--device",
            "cpu",
            "--batch-size",
            "64",
        ]
    )
    assert code == 0 and (run / CHECKPOINT_NAME).is_file()
    return run


def poisoned_copy(tiny_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the tiny run whose checkpoint is replaced by a malicious one (same marker and config)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    genuine = load_checkpoint(run / CHECKPOINT_NAME)
    marker = tmp_path / "marker"
    malicious_checkpoint(run / CHECKPOINT_NAME, marker, genuine)
    return run, marker


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "{run}", "--device", "cpu"],
        ["train", "--resume", "--run-dir", "{run}", "--no-progress", "--device", "cpu"],
    ],
)
def test_command_line_refuses_a_malicious_checkpoint(tiny_run, tmp_path, capsys, command):
    run, marker = poisoned_copy(tiny_run, tmp_path)
    before = snapshot(run)
    code = vprob_main([part.format(run=run) for part in command])
    err = capsys.readouterr().err
    assert code == 2
    assert "holds objects other than tensors and plain data" in err and "nothing in it was run" in err
    assert not marker.exists()
    assert snapshot(run) == before


def test_diagnose_refuses_a_malicious_checkpoint(tiny_run, tmp_path, capsys):
    run, marker = poisoned_copy(tiny_run, tmp_path)
    before = snapshot(run)
    code = vprob_main(["diagnose", str(run), "--no-posterior", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "nothing in it was run" in err
    assert not marker.exists()
    assert snapshot(run) == before  # not even an empty report folder


def test_anomaly_resume_refuses_a_malicious_class_checkpoint(tiny_run, tmp_path, capsys):
    run = tmp_path / "anomaly"
    class_dir = run / "class_0"
    class_dir.mkdir(parents=True)
    marker = tmp_path / "marker"
    genuine = load_checkpoint(tiny_run / CHECKPOINT_NAME)
    malicious_checkpoint(class_dir / CHECKPOINT_NAME, marker, genuine)
    (class_dir / "config.json").write_text("{}\n")
    (class_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    before = snapshot(run)
    code = vprob_main(
        [
            "anomaly",
            "--method",
            "vsimclr",
            "--normal-class",
            "0",
            "--resume",
            "--run-dir",
            str(run),
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "holds objects other than tensors and plain data" in err
    assert not marker.exists()
    assert snapshot(run) == before


def test_genuine_checkpoint_still_resumes_and_evaluates(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert (
        vprob_main(
            [
                "train",
                "--resume",
                "--run-dir",
                str(run),
                "--max-steps",
                "3",
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert load_checkpoint(run / CHECKPOINT_NAME)["step"] == 3
    assert json.loads((run / "results.json").read_text())["steps"] == 3
    assert vprob_main(["evaluate", str(run), "--device", "cpu"]) == 0
    assert json.loads((run / "eval.json").read_text())["steps"] == 3
