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
from pathlib import Path

import pytest
import torch

from vprob.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint
from vprob.cli import main

TRAIN_ARGS = ["train", "--method", "simclr", "--data", "digits", "--epochs", "3", "--batch-size", "128",
              "--dim", "8", "--device", "cpu", "--no-progress"]
# One thread per run: bitwise-reproducible on CPU, and polite on a shared 2-core machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
RUN_TIMEOUT_S = 300


def run_cli(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vprob", *TRAIN_ARGS, "--run-dir", str(run_dir), *extra],
                          env=ENV, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def start_and_kill(run_dir: Path, delay_s: float) -> int | None:
    """Start a run and SIGKILL it after ``delay_s``; returns its exit code if it finished first, else None."""
    process = subprocess.Popen([sys.executable, "-m", "vprob", *TRAIN_ARGS, "--run-dir", str(run_dir)],
                               env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[tuple[dict[str, float], dict[str, torch.Tensor], int], float]:
    """The uninterrupted run (same seed) and how long it took."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    start = time.perf_counter()
    completed = run_cli(run_dir)
    duration = time.perf_counter() - start
    assert completed.returncode == 0, completed.stderr
    return final_numbers(run_dir), duration


def kill_and_resume_trial(run_dir: Path, delay_s: float, reference_numbers) -> str:
    """One trial; returns what happened ("finished", "no checkpoint yet" or "resumed from step N")."""
    code = start_and_kill(run_dir, delay_s)
    checkpoint = run_dir / CHECKPOINT_NAME
    resumed_from = None
    if checkpoint.exists():
        # Never corrupt: the atomic write leaves the previous complete checkpoint or the new one.
        resumed_from = int(load_checkpoint(checkpoint)["step"])
    if code is not None:
        assert code == 0, f"the run failed on its own (exit {code}) before the kill"
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


def kill_delays(trials: int, duration_s: float, seed: int) -> list[float]:
    """Random kill times stratified over the run (0.1 s .. its whole length), so a few trials still cover
    the start (before the first checkpoint), the middle and the end."""
    rng = random.Random(seed)
    edges = [0.1 + (duration_s - 0.1) * k / trials for k in range(trials + 1)]
    return [rng.uniform(lo, hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]


def run_trials(tmp_path: Path, reference, trials: int, seed: int) -> list[str]:
    numbers, duration = reference
    outcomes = []
    for trial, delay in enumerate(kill_delays(trials, duration, seed)):
        outcomes.append(kill_and_resume_trial(tmp_path / f"trial{trial}", delay, numbers))
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


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root writes into read-only folders: chmod cannot make one unwritable here")
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
    real_write_bytes = Path.write_bytes

    def full_disk(self, data):
        if self.name == ".write-test":
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    run_dir = tmp_path / "run"
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
