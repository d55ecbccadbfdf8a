"""vprob.checkpoint contracts that mutation testing (#19) found unpinned: every error message whole
(the file's path, what was expected, what was found), ``map_location``, the weights-only load under an
environment that asks torch for unsafe loads, the module versions and sorted JSON metadata of weights
files, the copies made (and not made) on save, the plain form's identity, and the convert command's
arguments, help and exit codes. Files are written in ``tmp_path``; every test is fast."""

from __future__ import annotations

import pickle
import re
import sys
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch

from vprob import checkpoint as ck
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

STORE_ONLY = (
    "which cannot be stored in a checkpoint that loads safely: store tensors, numbers, strings, bytes, None, "
    "or dicts / lists / tuples of them"
)


def _message(excinfo) -> str:
    return str(excinfo.value)


def _unsafe_checkpoint(path):
    """A vprob-looking checkpoint holding a reference to the builtin ``print`` (harmless if it were loaded,
    but a global the weights-only unpickler refuses)."""
    torch.save({"format": FORMAT, "version": VERSION, "step": 1, "hook": print}, path)


def _convertible_checkpoint(path):
    """A checkpoint of one's own that the safe loader refuses (a numpy float) and convert can rewrite."""
    torch.save({"format": FORMAT, "version": VERSION, "step": 1, "lr": np.float64(0.5)}, path)


# ------------------------------------------------------------------------------------------------ loading


def test_missing_files_are_named(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(missing)
    assert _message(info) == f"no checkpoint at {missing}"
    with pytest.raises(CheckpointError) as info:
        load_weights_file(missing)
    assert _message(info) == f"no weights file at {missing}"


def test_map_location_is_passed_to_the_loader(tmp_path):
    """``map_location`` reaches torch.load: the meta device (no data) stands in for a GPU."""
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {"model": {"w": torch.ones(2)}})
    assert load_checkpoint(path)["model"]["w"].device.type == "cpu"
    assert load_checkpoint(path, map_location="meta")["model"]["w"].device.type == "meta"
    weights = tmp_path / "w.pt"
    save_state_dict_file(weights, {"w": torch.ones(2)})
    assert load_weights_file(weights, map_location="meta").state_dict["w"].device.type == "meta"
    assert load_state_dict_file(weights, map_location="meta")["w"].device.type == "meta"
    assert load_state_dict_file(weights)["w"].device.type == "cpu"


def test_marker_and_version_messages_name_the_file(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    torch.save({"step": 1}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert _message(info) == f"{path} is not a vprob checkpoint (no 'vprob-checkpoint' marker)"
    torch.save({"format": FORMAT, "version": 2}, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert _message(info) == f"{path} has checkpoint version 2, expected 1"


@pytest.mark.parametrize(
    "payload, message",
    [
        (
            {"format": "vprob-weights", "version": 1, "state_dict": [1], "metadata_json": "{}"},
            "{path}: 'state_dict' is a list, not a mapping",
        ),
        (
            {"format": "vprob-weights", "version": 1, "state_dict": {}, "metadata_json": 3},
            "{path}: its metadata is not JSON text: the JSON object must be str, bytes or bytearray, not int",
        ),
        (
            {"format": "vprob-weights", "version": 1, "state_dict": {}, "metadata_json": "[]"},
            "{path}: its metadata is a list, not a JSON object",
        ),
        (
            {"format": "vprob-weights", "version": 1, "state_dict": {"w": 1}, "metadata_json": "{}"},
            "{path} is not a flat mapping of names to tensors: 'w' holds a int",
        ),
        ({"w": torch.ones(1), "b": "x"}, "{path} is not a flat mapping of names to tensors: 'b' holds a str"),
    ],
)
def test_weights_file_messages_name_the_file(tmp_path, payload, message):
    path = tmp_path / "w.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as info:
        load_weights_file(path)
    assert _message(info) == message.format(path=path)


def test_weights_file_without_the_vprob_marker_has_empty_metadata(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(OrderedDict(w=torch.ones(1)), path)
    weights = load_weights_file(path)
    assert weights.metadata == {} and list(weights.state_dict) == ["w"]


def test_corrupt_files_say_what_they_were_read_as_and_why(tmp_path, monkeypatch):
    zip_head = tmp_path / "zip.pt"
    zip_head.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(zip_head)
    assert _message(info).startswith(f"checkpoint {zip_head} is corrupt or unreadable: RuntimeError: ")
    with pytest.raises(CheckpointError) as info:
        load_weights_file(zip_head)
    assert _message(info).startswith(f"weights file {zip_head} is corrupt or unreadable: RuntimeError: ")
    # The weights-only unpickler's own reason, not the first line of torch's long message around it.
    raw = tmp_path / "raw.pt"
    raw.write_bytes(b"\x80\x02garbage")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(raw)
    assert _message(info) == f"checkpoint {raw} is corrupt or unreadable: Unsupported operand 103"
    assert not isinstance(info.value, UnsafeFileError)

    # An unpickling error without that part: its first line.
    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError("first line\nsecond line")

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(raw)
    assert _message(info) == f"checkpoint {raw} is corrupt or unreadable: first line"


def test_protocol_3_checkpoint_loads_without_torchs_warning(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    torch.save({"format": FORMAT, "version": VERSION, "w": torch.ones(2)}, path, pickle_protocol=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(load_checkpoint(path)["w"], torch.ones(2))


def test_unsafe_file_messages_whole(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    _unsafe_checkpoint(path)
    refused = r"\(Unsupported global: GLOBAL [\w.]*print was not an allowed global by default\)"
    with pytest.raises(UnsafeFileError) as info:
        load_checkpoint(path)
    expected = (
        rf"{re.escape(str(path))} holds objects other than tensors and plain data {refused}, so vprob "
        r"refused to load it as a checkpoint; nothing in it was run\. If you wrote this checkpoint "
        r"yourself \(for example with an older vprob\) and trust it, convert it once with "
        rf"`python -m vprob\.checkpoint convert --trust {re.escape(str(path))}`; otherwise delete it"
    )
    assert re.fullmatch(expected, _message(info)), _message(info)
    weights = tmp_path / "w.pt"
    torch.save({"w": print}, weights)
    with pytest.raises(UnsafeFileError) as info:
        load_weights_file(weights)
    expected = (
        rf"{re.escape(str(weights))} holds objects other than tensors and plain data {refused}, so vprob "
        r"refused to load it as a weights file; nothing in it was run\. Weights are plain tensors: export "
        r"them again from a run you trust; otherwise delete it"
    )
    assert re.fullmatch(expected, _message(info)), _message(info)


def test_weights_only_even_when_the_environment_asks_torch_for_unsafe_loads(tmp_path, monkeypatch):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 turns torch.load's default into the unsafe load, but not an
    explicit ``weights_only=True``."""
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path = tmp_path / CHECKPOINT_NAME
    _unsafe_checkpoint(path)
    with pytest.raises(UnsafeFileError):
        load_checkpoint(path)
    torch.save({"w": print}, tmp_path / "w.pt")
    with pytest.raises(UnsafeFileError):
        load_weights_file(tmp_path / "w.pt")


# ------------------------------------------------------------------------------------------------ saving


def test_save_checkpoint_refuses_the_marker_keys(tmp_path):
    for state, keys in (
        ({"version": 3}, "['version']"),
        ({"format": "x", "version": 1}, "['format', 'version']"),
    ):
        with pytest.raises(ValueError) as info:
            save_checkpoint(tmp_path / CHECKPOINT_NAME, {"step": 1, **state})
        assert _message(info) == f"state must not hold the keys {keys}: they are the checkpoint's own markers"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "state_dict, metadata, error, message",
    [
        ([("w", torch.ones(1))], None, TypeError, "state_dict must be a mapping of str to Tensor, got list"),
        ({1: torch.ones(1)}, None, TypeError, "state_dict keys must be str, got 1 (int)"),
        ({"w": [1.0]}, None, TypeError, "state_dict['w'] must be a Tensor, got list"),
        ({"w": torch.ones(1)}, ["x"], TypeError, "metadata must be a mapping, got list"),
    ],
)
def test_save_weights_messages_whole(tmp_path, state_dict, metadata, error, message):
    with pytest.raises(error) as info:
        save_state_dict_file(tmp_path / "w.pt", state_dict, metadata)
    assert _message(info) == message


def test_weights_file_keeps_module_versions_and_sorted_metadata(tmp_path):
    """torch's per-module versions (BatchNorm's is 2) travel with the weights and are checked like the rest;
    the metadata JSON is written with sorted keys (the same bytes whatever the dict order)."""
    path = tmp_path / "w.pt"
    state = torch.nn.BatchNorm1d(3).state_dict()
    save_state_dict_file(path, state, {"b": 1, "a": [2]})
    loaded = load_state_dict_file(path)
    assert loaded._metadata == state._metadata == OrderedDict([("", {"version": 2})])
    assert torch.load(path, weights_only=True)["metadata_json"] == '{"a": [2], "b": 1}'
    state._metadata = {"": {"version": object()}}
    with pytest.raises(TypeError) as info:
        save_state_dict_file(path, state)
    assert _message(info) == f"state_dict._metadata['']['version'] is a builtins.object, {STORE_ONLY}"


def test_saved_tensors_are_compact_and_contiguous_and_not_copied_otherwise(tmp_path):
    """A transposed tensor is stored contiguous, a view as its own elements only, and a tensor that is
    already compact is not copied on its way to the file."""
    path = tmp_path / "w.pt"
    square = torch.arange(12.0).reshape(3, 4)
    save_state_dict_file(path, {"t": square.T, "row": square[1]})
    loaded = load_state_dict_file(path)
    assert loaded["t"].is_contiguous() and torch.equal(loaded["t"], square.T)
    assert loaded["row"].untyped_storage().nbytes() == 4 * 4
    assert ck._compact_cpu(square).data_ptr() == square.data_ptr()
    assert ck._compact_cpu(square.T).data_ptr() != square.data_ptr()
    assert ck._compact_cpu(square[1]).data_ptr() != square.data_ptr()


# --------------------------------------------------------------------------------------------- the plain form


def test_plain_form_returns_the_same_objects_where_nothing_changes():
    inner = [1, (2.0, "x", None), {"t": torch.ones(1)}]
    state = {"a": inner, 3: b"raw", "dtype": torch.float32, "size": torch.Size([2])}
    assert ck._plain(state, "state") is state
    assert ck._plain(inner, "state") is inner


def test_plain_form_converts_numpy_in_keys_values_lists_and_keeps_module_versions():
    values = ck._plain([np.float64(1.5), np.bool_(True), np.uint8(3), np.complex64(1j)], "s")
    assert values == [1.5, True, 3, 1j] and [type(v) for v in values] == [float, bool, int, complex]
    mixed = ck._plain((1, np.int64(2)), "s")
    assert mixed == (1, 2) and type(mixed) is tuple and type(mixed[1]) is int
    keyed = ck._plain({np.int64(3): "x"}, "s")
    assert keyed == {3: "x"} and type(next(iter(keyed))) is int
    versions = OrderedDict(w=np.float32(2.0))
    versions._metadata = {"": {"version": 2}}
    out = ck._plain(versions, "s")
    assert type(out) is OrderedDict and out == {"w": 2.0} and out._metadata == {"": {"version": 2}}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({(1, 2): 1}, "state has a key of type tuple: checkpoint keys must be strings or numbers"),
        ({object(): 1}, f"a key of state is a builtins.object, {STORE_ONLY}"),
        ({"x": np.str_("s")}, f"state['x'] is a numpy.str_, {STORE_ONLY}"),
        ({"x": np.array(["a"])}, "state['x'] is a numpy array of dtype <U1, which a checkpoint cannot hold"),
    ],
)
def test_plain_form_messages_whole(bad, message):
    with pytest.raises(TypeError) as info:
        ck._plain(bad, "state")
    assert _message(info) == message


# ------------------------------------------------------------------------------------------------ convert


class _Gone:
    """Pickled by reference, then removed from this module, so that only the full unpickling fails."""


def test_convert_defaults_out_and_errors(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT_NAME
    _convertible_checkpoint(path)
    with pytest.raises(UnsafeFileError):
        convert_checkpoint(path)  # trust defaults to False
    out = tmp_path / "safe.pt"
    original = path.read_bytes()
    message = convert_checkpoint(path, out, trust=True)
    assert message == f"converted {path} -> {out}: it now loads without running code"
    assert path.read_bytes() == original and load_checkpoint(out)["lr"] == 0.5
    foreign = tmp_path / "foreign.pt"
    torch.save({"hook": print}, foreign)
    with pytest.raises(CheckpointError) as info:
        convert_checkpoint(foreign, trust=True)
    assert _message(info) == f"{foreign} is not a vprob checkpoint (no 'vprob-checkpoint' marker)"
    gone = tmp_path / "gone.pt"
    torch.save({"format": FORMAT, "version": VERSION, "x": _Gone()}, gone)
    monkeypatch.delattr(sys.modules[__name__], "_Gone")
    with pytest.raises(CheckpointError) as info:
        convert_checkpoint(gone, trust=True)
    assert _message(info).startswith(
        f"checkpoint {gone} is corrupt or unreadable: Can't get attribute '_Gone'"
    )


def _normalized(text: str) -> str:
    """Help text on one line, words separated by single spaces, with a space at both ends."""
    return " " + " ".join(text.split()) + " "


def test_convert_command_help_arguments_and_exit_codes(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        checkpoint_main([])
    assert info.value.code == 2
    assert "the following arguments are required: command" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        checkpoint_main(["--help"])
    assert info.value.code == 0
    top = _normalized(capsys.readouterr().out)
    assert top.startswith(" usage: python -m vprob.checkpoint ")
    description = "Convert a vprob checkpoint that the safe loader refuses (one you trust) to the safe form."
    assert f" {description} " in top
    assert " rewrite a trusted checkpoint so that it loads safely " in top
    with pytest.raises(SystemExit):
        checkpoint_main(["convert", "--help"])
    sub = _normalized(capsys.readouterr().out)
    for text in (
        "the checkpoint file (RUN_DIR/checkpoint.pt)",
        "write the converted checkpoint here (default: over PATH)",
        "unpickle PATH fully to convert it: this runs any code it holds, so pass it only for a checkpoint "
        "you wrote yourself",
    ):
        assert f" {text} " in sub, text

    path = tmp_path / CHECKPOINT_NAME
    _convertible_checkpoint(path)
    assert checkpoint_main(["convert", str(path)]) == 2
    out, err = capsys.readouterr()
    first, second = err.splitlines()
    assert out == "" and first.startswith(f"convert: {path} holds objects other than tensors")
    assert second == (
        "convert: nothing was changed; converting unpickles the file fully and runs any code in it: "
        "pass --trust only for a checkpoint you wrote yourself"
    )
    missing = tmp_path / "missing.pt"
    assert checkpoint_main(["convert", str(missing)]) == 2
    assert capsys.readouterr() == ("", f"convert: error: no checkpoint at {missing}\n")
    target = tmp_path / "out.pt"
    assert checkpoint_main(["convert", "--trust", str(path), "--out", str(target)]) == 0
    assert capsys.readouterr() == (f"converted {path} -> {target}: it now loads without running code\n", "")
    assert load_checkpoint(target)["lr"] == 0.5
