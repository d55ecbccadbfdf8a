"""A training run's folder: ``config.json``, ``metrics.jsonl``, ``checkpoint.pt``, ``results.json``.

Rank 0 writes; every rank reads the checkpoint when resuming (several machines need the folder on shared
storage). A new run never overwrites an existing checkpoint; checkpoints are atomic
(:mod:`vprob.checkpoint`), so a crash leaves the last good one.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any

from vprob import distributed
from vprob.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint
from vprob.jsonio import write_json_atomic
from vprob.safe_io import open_append, write_atomic

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.jsonl"
RESULTS_NAME = "results.json"


class RunFolder:
    """The files of one run in ``path``, written by process ``rank`` 0 only."""

    def __init__(self, path: str | os.PathLike, rank: int = 0, world_size: int = 1) -> None:
        self.path, self.rank, self.world_size = Path(path), rank, world_size
        self.checkpoint_path = self.path / CHECKPOINT_NAME
        self.metrics_path = self.path / METRICS_NAME

    def prepare(self, config: dict[str, Any], resume: bool) -> None:
        """Check the folder (rank 0 creates it, probes that it is writable and writes ``config.json`` and an
        empty ``metrics.jsonl`` for a new run); every rank raises the same error if it fails."""
        error = None
        if self.rank == 0:
            try:
                self._prepare_here(config, resume)
            except (OSError, CheckpointError) as exc:
                if self.world_size == 1:
                    raise
                error = f"{type(exc).__name__}: {exc}"
        error = distributed.broadcast_error(error)
        if error is not None:
            raise CheckpointError(f"rank 0 could not prepare the run folder: {error}")
        if resume and not self.checkpoint_path.is_file():
            raise CheckpointError(
                f"--resume: rank {self.rank} sees no checkpoint at {self.checkpoint_path} "
                "(several machines need the run folder on shared storage)"
            )

    def _prepare_here(self, config: dict[str, Any], resume: bool) -> None:
        if resume:
            if not self.checkpoint_path.is_file():
                raise CheckpointError(f"--resume: no checkpoint at {self.checkpoint_path}")
            return
        if self.checkpoint_path.exists():
            raise CheckpointError(
                f"{self.path} already holds a checkpoint; pass --resume to continue it or "
                "choose another --run-dir (it is never overwritten by a new run)"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.path) as probe:  # a fresh name: no planted link followed
                probe.write(b"0" * 4096)
                probe.flush()
                os.fsync(probe.fileno())
        except OSError as exc:
            raise OSError(f"run folder {self.path} is not writable: {exc}") from exc
        write_json_atomic(self.path / CONFIG_NAME, config)
        write_atomic(self.metrics_path, "")

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Rank 0 writes the checkpoint (every rank holds the same state); all ranks wait for it."""
        if self.rank == 0:
            save_checkpoint(self.checkpoint_path, state)
        distributed.barrier()

    def load_checkpoint(self, map_location: Any = "cpu") -> dict[str, Any]:
        return load_checkpoint(self.checkpoint_path, map_location=map_location)

    def open_metrics(self) -> IO[str]:
        """The metrics file for appending (a sink on ranks other than 0)."""
        return open_append(self.metrics_path) if self.rank == 0 else Path(os.devnull).open("a")

    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines written after ``step`` (a resumed run writes them again)."""
        if self.rank != 0 or not self.metrics_path.exists():
            return
        kept = [
            line
            for line in self.metrics_path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        write_atomic(self.metrics_path, "".join(line + "\n" for line in kept))

    def write_results(self, results: dict[str, Any]) -> None:
        """``results.json`` and the loss-curve figure (rank 0)."""
        if self.rank != 0:
            return
        write_json_atomic(self.path / RESULTS_NAME, results)
        from vprob.plots import plot_training_curves

        plot_training_curves(self.metrics_path, self.path / "loss_curve.png")
