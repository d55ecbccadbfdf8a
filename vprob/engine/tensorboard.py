"""TensorBoard event files of the logged metrics (``--tensorboard``; the optional ``tensorboard`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TENSORBOARD_DIR = "tensorboard"


class MissingExtraError(ImportError):
    """An optional dependency a chosen option needs is not installed (the message says what to install)."""


def summary_writer_class() -> type:
    """torch's ``SummaryWriter``, or :class:`MissingExtraError` saying how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise MissingExtraError(
            f"--tensorboard needs the tensorboard package: pip install 'vprob[tensorboard]' ; {exc}"
        ) from None
    return SummaryWriter


class MetricsWriter:
    """Every number of each metrics record as a scalar at its step, in ``RUN_DIR/tensorboard``.

    ``first_step``: a resumed run's checkpoint step; events an interrupted session wrote after it are
    purged (TensorBoard's ``purge_step``), as ``metrics.jsonl`` drops its lines after the step.
    """

    def __init__(self, run_dir: str | Path, first_step: int = 0) -> None:
        writer = summary_writer_class()
        self.writer = writer(
            log_dir=str(Path(run_dir) / TENSORBOARD_DIR), purge_step=first_step if first_step > 0 else None
        )

    def write(self, record: dict[str, Any]) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()
