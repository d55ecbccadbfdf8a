"""Fault tolerance (issue #7): kill -9 at random points of a CPU training run, then ``--resume``.

Every trial checks that the checkpoint on disk is never corrupt (it loads, or there is none yet), that the
resumed run ends with exactly the numbers of an uninterrupted run with the same seed (results.json and the
checkpoint's model state), and that a run killed before its first checkpoint is refused by ``--resume``
with a clear message and then simply starts again. Also: an unwritable run folder or a full disk fails
before training with a clear error and never leaves a partial checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from vprob.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint
from vprob.cli import main

TRAIN_ARGS = [
    "train",
    "--method",
    "simclr",
    "--data",
    "digits",
    "--epochs",
    "3",
    "--batch-size",
    "128",
    "--dim",
    "8",
    "--device",
    "cpu",
    "--no-progress",
]
# One thread per run: bitwise-reproducible on CPU, and polite on a shared 2-core machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
RUN_TIMEOUT_S = 300


def run_cli(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vprob", *TRAIN_ARGS, "--run-dir", str(run_dir), *extra],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def start_run(run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vprob", *TRAIN_ARGS, "--run-dir", str(run_dir)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(process: subprocess.Popen, run_dir: Path) -> float | None:
    """Poll until the run's first checkpoint appears; its time since now, or None if the run ended first."""
    start = time.perf_counter()
    while not (run_dir / CHECKPOINT_NAME).exists():
        if process.poll() is not None:
            return None
        if time.perf_counter() - start > RUN_TIMEOUT_S:
            raise TimeoutError("no checkpoint within the time limit")
        time.sleep(0.01)
    return time.perf_counter() - start


def kill_after(process: subprocess.Popen, delay_s: float) -> int | None:
    """SIGKILL ``process`` after ``delay_s``; its exit code if it finished first, else None."""
    try:
        return process.wait(timeout=delay_s)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        return None


def final_numbers(run_dir: Path) -> tuple[dict[str, float], dict[str, torch.Tensor], int]:
    results = json.loads((run_dir / "results.json").read_text())
    accuracies = {key: value for key, value in results.items() if "top1" in key}
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    return accuracies, state["model"], int(state["step"])


@dataclass
class Reference:
    """The uninterrupted run (same seed) and its timing: when its first checkpoint appeared (end of epoch
    1, after start-up and data loading) and how long after that it ran to its end."""

    numbers: tuple[dict[str, float], dict[str, torch.Tensor], int]
    first_checkpoint_s: float
    after_first_checkpoint_s: float


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    process = start_run(run_dir)
    first_checkpoint_s = wait_for_checkpoint(process, run_dir)
    start = time.perf_counter()
    _, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    assert process.returncode == 0, stderr
    assert first_checkpoint_s is not None
    return Reference(final_numbers(run_dir), first_checkpoint_s, time.perf_counter() - start)


@dataclass
class KillPoint:
    """Where a trial kills the run: ``delay_s`` after its start or, with ``after_checkpoint``, after its
    first checkpoint appeared (the random points then fall in epochs 2-3, the last save and evaluation,
    which a delay from the start would rarely hit: start-up dominates a run this small)."""

    after_checkpoint: bool
    delay_s: float


def kill_and_resume_trial(run_dir: Path, kill_point: KillPoint, reference_numbers) -> str:
    """One trial; returns what happened ("finished", "no checkpoint yet" or "resumed from step N")."""
    process = start_run(run_dir)
    if kill_point.after_checkpoint and wait_for_checkpoint(process, run_dir) is None:
        code = process.wait()
    else:
        code = kill_after(process, kill_point.delay_s)
    checkpoint = run_dir / CHECKPOINT_NAME
    resumed_from = None
    if checkpoint.exists():
        # Never corrupt: the atomic write leaves the previous complete checkpoint or the new one.
        resumed_from = int(load_checkpoint(checkpoint)["step"])
    if code is not None:
        assert code == 0, f"the run failed on its own (exit {code}): {process.stderr.read()}"
        outcome = "finished"
    elif resumed_from is None:
        completed = run_cli(run_dir, "--resume")
        assert completed.returncode != 0
        assert "nothing to resume" in completed.stderr, completed.stderr
        assert "Traceback" not in completed.stderr
        # The sensible next step the message names: start again, in the same folder.
        completed = run_cli(run_dir)
        assert completed.returncode == 0, completed.stderr
        outcome = "no checkpoint yet"
    else:
        completed = run_cli(run_dir, "--resume")
        assert completed.returncode == 0, completed.stderr
        outcome = f"resumed from step {resumed_from}"
    accuracies, model_state, step = final_numbers(run_dir)
    ref_accuracies, ref_state, ref_step = reference_numbers
    assert step == ref_step
    assert accuracies == ref_accuracies, f"{outcome}: {accuracies} != {ref_accuracies}"
    assert model_state.keys() == ref_state.keys()
    for name, tensor in model_state.items():
        assert torch.equal(tensor, ref_state[name]), f"{outcome}: {name} differs from the uninterrupted run"
    # No stray temporary files other than those a SIGKILL mid-save may leave (never named checkpoint.pt).
    assert [p.name for p in run_dir.glob("checkpoint*")] == [CHECKPOINT_NAME]
    return outcome


def kill_points(trials: int, reference: Reference, seed: int) -> list[KillPoint]:
    """Random kill points: the first trial early (within the first half of the reference's start-up, so
    most likely before the first checkpoint), the others uniformly over the rest of the run after the
    first checkpoint, a quarter of the later ones early again. Timing varies on a shared machine, so the
    outcome of each point is recorded, not assumed: every outcome must end with the reference numbers."""
    rng = random.Random(seed)
    points = []
    for trial in range(trials):
        if trial == 0 or (trial >= 3 and rng.random() < 0.25):
            points.append(KillPoint(False, rng.uniform(0.1, 0.5 * reference.first_checkpoint_s)))
        else:
            points.append(KillPoint(True, rng.uniform(0.0, reference.after_first_checkpoint_s)))
    return points


def run_trials(tmp_path: Path, reference: Reference, trials: int, seed: int) -> list[str]:
    outcomes = []
    for trial, kill_point in enumerate(kill_points(trials, reference, seed)):
        outcomes.append(kill_and_resume_trial(tmp_path / f"trial{trial}", kill_point, reference.numbers))
    print(f"kill -9 trials: {len(outcomes)}, outcomes: {outcomes}")
    return outcomes


def test_kill9_then_resume_matches_uninterrupted_run(tmp_path, reference):
    outcomes = run_trials(tmp_path, reference, trials=3, seed=7)
    assert len(outcomes) == 3


@pytest.mark.slow
def test_kill9_then_resume_matches_uninterrupted_run_20_trials(tmp_path, reference):
    outcomes = run_trials(tmp_path, reference, trials=20, seed=20)
    assert len(outcomes) == 20
    # The stratified delays must have exercised a real resume, not only finished or fresh runs.
    assert any(outcome.startswith("resumed") for outcome in outcomes), outcomes


# --------------------------------------------------------------------------------------------------
# Unwritable run folder, full disk.


def test_run_folder_under_a_file_fails_before_training(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    run_dir = a_file / "run"
    code = main([*TRAIN_ARGS, "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code != 0
    assert "not writable" in err and str(run_dir) in err
    assert not list(tmp_path.rglob("checkpoint*"))


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root writes into read-only folders: chmod cannot make one unwritable here",
)
def test_read_only_run_folder_fails_before_training(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_dir.chmod(0o500)
    try:
        code = main([*TRAIN_ARGS, "--run-dir", str(run_dir)])
    finally:
        run_dir.chmod(0o700)
    assert code != 0
    assert "not writable" in capsys.readouterr().err
    assert not list(run_dir.iterdir())


def test_full_disk_at_the_probe_fails_before_training(tmp_path, monkeypatch, capsys):
    """The engine's write probe stands in for the first checkpoint: ENOSPC there stops the run at once."""
    import vprob.engine.run_folder as run_folder

    run_dir = tmp_path / "run"
    real_temporary_file = run_folder.tempfile.TemporaryFile

    def full_disk(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == run_dir:
            raise OSError(errno.ENOSPC, "No space left on device", str(dir))
        return real_temporary_file(*args, dir=dir, **kwargs)

    monkeypatch.setattr(run_folder.tempfile, "TemporaryFile", full_disk)
    code = main([*TRAIN_ARGS, "--run-dir", str(run_dir)])
    err = capsys.readouterr().err
    assert code != 0
    assert "not writable" in err and "No space left on device" in err
    assert not list(tmp_path.rglob("checkpoint*")) and not list(tmp_path.rglob("*.tmp"))


def test_full_disk_during_a_checkpoint_leaves_the_previous_one_intact(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {"step": 1, "model": {"w": torch.ones(3)}})
    real_save = torch.save

    def save_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)  # some bytes reach the temporary file...
        raise OSError(errno.ENOSPC, "No space left on device")  # ...then the disk is full

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, {"step": 2, "model": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_NAME]  # no partial temporary file
    state = load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))


def test_truncated_checkpoint_is_reported_as_corrupt(tmp_path):
    path = tmp_path / CHECKPOINT_NAME
    save_checkpoint(path, {"step": 1, "model": {"w": torch.ones(1000)}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)
