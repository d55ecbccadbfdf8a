"""What a training run shows and writes as it goes: the progress bar, ``metrics.jsonl`` (rank 0),
TensorBoard (optional), the image rate between log lines, and the time budget checked at checkpoints."""

from __future__ import annotations

import json
import sys
import time
from types import TracebackType
from typing import Any

import torch

from vprob import distributed
from vprob.engine.run_folder import RunFolder
from vprob.engine.tensorboard import MetricsWriter


class Progress:
    """Use as a context manager around the training loop; :meth:`log` writes one metrics record."""

    def __init__(
        self,
        run: RunFolder,
        total_steps: int,
        step: int,
        batch_size: int,
        description: str,
        show: bool | None,
        budget_s: float | None,
        tensorboard: bool,
    ) -> None:
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if show is None else show
        self.bar = tqdm(
            total=total_steps,
            initial=step,
            disable=not show,
            unit="step",
            desc=description,
            dynamic_ncols=True,
        )
        self.run, self.batch_size, self.budget_s = run, batch_size, budget_s
        self.start_step = self.window_step = step
        self.start = self.last_save = self.window_start = time.perf_counter()
        self.board = MetricsWriter(run.path, step) if tensorboard and run.rank == 0 else None
        self.postfix: dict[str, str] = {}

    def __enter__(self) -> Progress:
        self.metrics = self.run.open_metrics()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.bar.close()
        self.metrics.close()
        if self.board is not None:
            self.board.close()

    def log(
        self, step: int, epoch: float, lr: float, stats: dict[str, torch.Tensor], extra: dict[str, float]
    ) -> dict[str, Any]:
        """Write one record: step, epoch, learning rate, images/s since the last record, the step's stats and
        ``extra`` (online evaluation), to the metrics file, TensorBoard and the progress bar."""
        if any(value.is_cuda for value in stats.values()):
            torch.cuda.synchronize()
        now = time.perf_counter()
        rate = (step - self.window_step) * self.batch_size / max(now - self.window_start, 1e-9)
        record = {
            "step": step,
            "epoch": epoch,
            "lr": lr,
            "images_per_s": rate,
            **{k: float(v) for k, v in stats.items()},
            **extra,
        }
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        if self.board is not None:
            self.board.write(record)
        self.postfix.update(loss=f"{record['loss']:.4f}", img_s=f"{rate:,.0f}")
        if extra:
            self.postfix["knn"] = f"{next(iter(extra.values())):.3f}"
        self.bar.set_postfix(self.postfix)
        # The evaluation's time is not training throughput.
        self.window_start, self.window_step = time.perf_counter() if extra else now, step
        return record

    def advance(self) -> None:
        self.bar.update(1)

    def final(self, step: int, results: dict[str, Any]) -> None:
        if self.board is not None:
            self.board.write(
                {
                    "step": step,
                    **{f"final/{k}": v for k, v in results.items() if k.startswith(("knn_", "linear_"))},
                }
            )

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def out_of_time_after_checkpoint(self) -> bool:
        """Whether the stretch to the next checkpoint, assumed as long as the last one, would overrun the
        budget (rank 0's clock decides for every rank)."""
        now = time.perf_counter()
        last_stretch, self.last_save = now - self.last_save, now
        if self.budget_s is None:
            return False
        return bool(distributed.broadcast_from_rank0(now - self.start + last_stretch > self.budget_s))
