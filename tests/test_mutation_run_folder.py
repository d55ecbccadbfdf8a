"""A run's folder (vprob.engine.run_folder) on real files in a temporary folder: what a new run writes and
refuses, what a resume reads, what each rank does in a fake world of two (vprob.distributed's broadcast and
barrier replaced by recorders), the checkpoint round trip, the metrics file's append / sink / truncation and
the results. Written for #19: mutation testing of this module against the training tests took minutes per
mutant; these run in about a second and read every file back with json / the PNG signature, not through the
code under test."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch

from vprob import distributed
from vprob.checkpoint import CheckpointError
from vprob.engine import run_folder as run_folder_module
from vprob.engine.run_folder import RunFolder

CONFIG = {"method": "simclr", "lr": 0.5, "path": Path("/data/x"), "nan": float("nan")}


def _fake_world(monkeypatch, rank0_error: str | None = None) -> dict[str, list]:
    """Two processes: broadcast_error returns rank 0's message (``rank0_error`` for a rank other than 0, the
    caller's own message on rank 0); the calls are recorded."""
    calls: dict[str, list] = {"broadcast_error": [], "barrier": []}

    def broadcast_error(message):
        calls["broadcast_error"].append(message)
        return message if message is not None else rank0_error

    monkeypatch.setattr(distributed, "broadcast_error", broadcast_error)
    monkeypatch.setattr(distributed, "barrier", lambda: calls["barrier"].append(True))
    return calls


def test_file_names_and_paths(tmp_path):
    run = RunFolder(str(tmp_path / "run"), rank=3, world_size=4)
    assert run.path == tmp_path / "run" and isinstance(run.path, Path)
    assert (run.rank, run.world_size) == (3, 4)
    assert run.checkpoint_path == tmp_path / "run" / "checkpoint.pt"
    assert run.metrics_path == tmp_path / "run" / "metrics.jsonl"
    assert (
        run_folder_module.CONFIG_NAME,
        run_folder_module.METRICS_NAME,
        run_folder_module.RESULTS_NAME,
    ) == (
        "config.json",
        "metrics.jsonl",
        "results.json",
    )
    default = RunFolder(tmp_path)
    assert (default.rank, default.world_size) == (0, 1)


def test_a_new_run_creates_nested_folders_config_and_empty_metrics_only(tmp_path):
    path = tmp_path / "a" / "b" / "run"
    RunFolder(path).prepare(CONFIG, resume=False)
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "metrics.jsonl"]  # no probe left
    assert json.loads((path / "config.json").read_text()) == {
        "method": "simclr",
        "lr": 0.5,
        "path": "/data/x",
        "nan": None,
    }
    assert (path / "metrics.jsonl").read_bytes() == b""


def test_a_new_run_in_an_existing_folder_replaces_config_and_metrics(tmp_path):
    (tmp_path / "config.json").write_text("old")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    (tmp_path / "notes.txt").write_text("kept")
    RunFolder(tmp_path).prepare({"a": 1}, resume=False)
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": 1}
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    assert (tmp_path / "notes.txt").read_text() == "kept"


def test_the_write_probe_writes_and_syncs_4096_bytes_inside_the_run_folder(tmp_path, monkeypatch):
    seen: dict[str, list] = {"dir": [], "written": [], "flushed": [], "fsync": []}
    real_temporary_file, real_fsync = tempfile.TemporaryFile, os.fsync

    class Probe:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            seen["written"].append(data)
            return self.f.write(data)

        def flush(self):
            seen["flushed"].append(len(seen["written"]))
            self.f.flush()

        def fileno(self):
            return self.f.fileno()

    def temporary_file(*args, **kwargs):
        seen["dir"].append((args, kwargs))
        probe = Probe(real_temporary_file(*args, **kwargs))
        seen["fd"] = probe.fileno()
        return probe

    def fsync(fd):
        seen["fsync"].append(fd)
        real_fsync(fd)

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)
    monkeypatch.setattr(os, "fsync", fsync)
    RunFolder(tmp_path / "run").prepare({}, resume=False)
    assert seen["dir"] == [((), {"dir": tmp_path / "run"})]
    assert seen["written"] == [b"0" * 4096]
    assert seen["flushed"] == [1]  # flushed after the write
    assert seen["fd"] in seen["fsync"]  # the probe's own descriptor is synced


def test_an_unwritable_folder_raises_oserror_naming_it_with_the_cause(tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", full_disk)
    run = RunFolder(tmp_path / "run")
    with pytest.raises(OSError) as info:
        run.prepare(CONFIG, resume=False)
    assert type(info.value) is OSError  # world of one: re-raised as is, not wrapped
    assert str(info.value).startswith(f"run folder {tmp_path / 'run'} is not writable: [Errno 28] No space")
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_path_that_is_a_file_is_not_a_writable_folder(tmp_path):
    (tmp_path / "run").write_text("a file")
    with pytest.raises(OSError, match=r"^run folder .*run is not writable: ") as info:
        RunFolder(tmp_path / "run").prepare({}, resume=False)
    assert isinstance(info.value.__cause__, FileExistsError)


def test_a_new_run_never_overwrites_a_checkpoint(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"old")
    (tmp_path / "config.json").write_text("old config")
    with pytest.raises(CheckpointError) as info:
        RunFolder(tmp_path).prepare({"a": 1}, resume=False)
    assert str(info.value) == (
        f"{tmp_path} already holds a checkpoint; pass --resume to continue it or "
        "choose another --run-dir (it is never overwritten by a new run)"
    )
    assert (tmp_path / "checkpoint.pt").read_bytes() == b"old"
    assert (tmp_path / "config.json").read_text() == "old config"
    assert not (tmp_path / "metrics.jsonl").exists()


def test_resume_keeps_config_and_metrics_and_needs_a_checkpoint_file(tmp_path):
    run = RunFolder(tmp_path)
    with pytest.raises(CheckpointError) as info:
        run.prepare({"a": 1}, resume=True)
    assert str(info.value) == f"--resume: no checkpoint at {tmp_path / 'checkpoint.pt'}"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "checkpoint.pt").mkdir()  # a folder is not a checkpoint file
    with pytest.raises(CheckpointError, match="--resume: no checkpoint at"):
        run.prepare({"a": 1}, resume=True)
    (tmp_path / "checkpoint.pt").rmdir()
    (tmp_path / "checkpoint.pt").write_bytes(b"ckpt")
    (tmp_path / "config.json").write_text("old config")
    (tmp_path / "metrics.jsonl").write_text('{"step": 3}\n')
    run.prepare({"a": 1}, resume=True)
    assert (tmp_path / "config.json").read_text() == "old config"
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 3}\n'


def test_world_of_one_shares_no_error_and_raises_the_checkpoint_error_itself(tmp_path, monkeypatch):
    calls = _fake_world(monkeypatch)
    RunFolder(tmp_path / "ok").prepare({}, resume=False)
    assert calls["broadcast_error"] == [None]  # every rank takes part in the broadcast, even without error
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError) as info:
        RunFolder(tmp_path, world_size=1).prepare({}, resume=False)
    assert "already holds a checkpoint" in str(info.value) and "rank 0" not in str(info.value)
    assert calls["broadcast_error"] == [None]  # raised before the broadcast: no other rank waits on it


@pytest.mark.parametrize("cause", ["checkpoint", "oserror"])
def test_rank0_of_two_shares_its_error_and_every_rank_raises_it(tmp_path, monkeypatch, cause):
    calls = _fake_world(monkeypatch)
    if cause == "checkpoint":
        (tmp_path / "checkpoint.pt").write_bytes(b"x")
        expected = f"CheckpointError: {tmp_path} already holds a checkpoint"
    else:

        def denied(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(tempfile, "TemporaryFile", denied)
        expected = f"OSError: run folder {tmp_path} is not writable: [Errno 13] Permission denied"
    with pytest.raises(CheckpointError) as info:
        RunFolder(tmp_path, rank=0, world_size=2).prepare({}, resume=False)
    assert str(info.value).startswith(f"rank 0 could not prepare the run folder: {expected}")
    assert len(calls["broadcast_error"]) == 1 and calls["broadcast_error"][0].startswith(expected)


def test_other_ranks_write_nothing_and_raise_rank0s_error(tmp_path, monkeypatch):
    calls = _fake_world(monkeypatch, rank0_error="OSError: disk full")
    with pytest.raises(CheckpointError) as info:
        RunFolder(tmp_path / "run", rank=1, world_size=2).prepare({"a": 1}, resume=False)
    assert str(info.value) == "rank 0 could not prepare the run folder: OSError: disk full"
    assert calls["broadcast_error"] == [None]
    assert not (tmp_path / "run").exists()

    _fake_world(monkeypatch, rank0_error=None)
    RunFolder(tmp_path / "run", rank=1, world_size=2).prepare({"a": 1}, resume=False)
    assert not (tmp_path / "run").exists()  # rank 1 never creates the folder


def test_other_ranks_check_the_checkpoint_themselves_on_resume(tmp_path, monkeypatch):
    _fake_world(monkeypatch, rank0_error=None)
    run = RunFolder(tmp_path, rank=1, world_size=2)
    with pytest.raises(CheckpointError) as info:
        run.prepare({}, resume=True)
    assert str(info.value) == (
        f"--resume: rank 1 sees no checkpoint at {tmp_path / 'checkpoint.pt'} "
        "(several machines need the run folder on shared storage)"
    )
    (tmp_path / "checkpoint.pt").write_bytes(b"x")
    run.prepare({}, resume=True)
    run.prepare({}, resume=False)  # a new run: rank 1 does not look for a checkpoint


def test_checkpoint_round_trip_rank0_writes_every_rank_waits(tmp_path, monkeypatch):
    calls = _fake_world(monkeypatch)
    state = {"step": 7, "weights": torch.arange(3.0)}
    RunFolder(tmp_path, rank=1, world_size=2).save_checkpoint(state)
    assert not (tmp_path / "checkpoint.pt").exists() and calls["barrier"] == [True]
    run = RunFolder(tmp_path, rank=0, world_size=2)
    run.save_checkpoint(state)
    assert calls["barrier"] == [True, True]
    assert (tmp_path / "checkpoint.pt").is_file()
    loaded = run.load_checkpoint()
    assert loaded["step"] == 7 and torch.equal(loaded["weights"], torch.arange(3.0))
    assert loaded["weights"].device.type == "cpu"
    assert run.load_checkpoint(map_location="meta")["weights"].device.type == "meta"


def test_load_checkpoint_maps_to_the_cpu_by_default(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(
        run_folder_module, "load_checkpoint", lambda path, map_location: seen.append((path, map_location))
    )
    RunFolder(tmp_path).load_checkpoint()
    assert seen == [(tmp_path / "checkpoint.pt", "cpu")]


def test_metrics_append_on_rank0_and_go_nowhere_elsewhere(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    with RunFolder(tmp_path).open_metrics() as f:
        f.write('{"step": 2}\n')
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
    with RunFolder(tmp_path, rank=1, world_size=2).open_metrics() as f:
        assert f.name == os.devnull
        f.write('{"step": 3}\n')
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'


def test_truncate_metrics_keeps_lines_up_to_the_step(tmp_path):
    lines = [
        '{"step": 1, "loss": 2.0}',
        "",
        '{"step": 2}',
        "  ",
        '{"loss": 1.0}',
        '{"step": 3}',
        '{"step": 10}',
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    RunFolder(tmp_path, rank=1, world_size=2).truncate_metrics(0)  # not rank 0: untouched
    assert (tmp_path / "metrics.jsonl").read_text() == "\n".join(lines) + "\n"
    RunFolder(tmp_path).truncate_metrics(2)
    assert (
        tmp_path / "metrics.jsonl"
    ).read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2}\n{"loss": 1.0}\n'
    RunFolder(tmp_path).truncate_metrics(0)  # a line without a step counts as step 0
    assert (tmp_path / "metrics.jsonl").read_text() == '{"loss": 1.0}\n'
    RunFolder(tmp_path).truncate_metrics(-1)
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    RunFolder(tmp_path / "none").truncate_metrics(5)  # no metrics file: nothing created
    assert not (tmp_path / "none").exists()


def test_results_json_and_loss_curve_on_rank0_only(tmp_path, monkeypatch):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    RunFolder(tmp_path, rank=1, world_size=2).write_results({"knn_top1": 0.5})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]
    RunFolder(tmp_path).write_results({"knn_top1": 0.5, "bad": float("inf")})
    assert json.loads((tmp_path / "results.json").read_text()) == {"knn_top1": 0.5, "bad": None}
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    import vprob.plots

    seen = []
    monkeypatch.setattr(vprob.plots, "plot_training_curves", lambda *args: seen.append(args))
    RunFolder(tmp_path).write_results({})
    assert seen == [(tmp_path / "metrics.jsonl", tmp_path / "loss_curve.png")]
