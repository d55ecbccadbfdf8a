"""Reading a finished or interrupted run folder back: one loader for evaluation, diagnostics and notebooks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vprob.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint
from vprob.config import TrainConfig, build_model, config_from_dict
from vprob.data import ImageSet, SimCLRAugment, augmentation_for, load_dataset
from vprob.devices import resolve_device
from vprob.evaluate import evaluate_backbone
from vprob.jsonio import write_json_atomic


@dataclass
class LoadedRun:
    """A run folder read back: its resolved config, the model (eval mode, on ``device``) with the
    checkpoint's weights, its data set's splits and augmentation, and the step the checkpoint was taken at."""

    run_dir: Path
    config: TrainConfig
    model: nn.Module
    train_set: ImageSet
    test_set: ImageSet
    augment: SimCLRAugment
    step: int
    device: torch.device


def load_run(run_dir: str | Path, device: str | torch.device = "auto",
             data_dir: str | None = None) -> LoadedRun:
    """The run in ``run_dir`` ready for analysis; ``data_dir`` overrides the data folder stored in the run.

    Raises :class:`vprob.checkpoint.CheckpointError` for a missing, corrupt or foreign checkpoint, or one
    whose weights do not match its own config."""
    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    config = config_from_dict(state["config"])
    config.run_dir = str(run_dir)  # where it is now, never a path read from the file
    if data_dir is not None:
        config.data_dir = data_dir
    config = config.resolved()
    device = device if isinstance(device, torch.device) else resolve_device(device)
    model = build_model(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint does not match its own config: {exc}") from exc
    model.to(device).eval()
    train_set, test_set = load_dataset(config.data, config.data_dir, device=device)
    augment = augmentation_for(config.data, train_set)
    return LoadedRun(run_dir, config, model, train_set, test_set, augment, int(state.get("step", 0)), device)


def evaluate_run(run_dir: str | Path, data_dir: str | None = None, device: str = "auto") -> dict[str, Any]:
    """kNN and linear-probe accuracy of a run's checkpoint; writes ``eval.json`` beside it."""
    run = load_run(run_dir, device, data_dir)
    results: dict[str, Any] = evaluate_backbone(
        run.model.encoder, run.train_set, run.test_set, run.augment.normalize, knn_k=run.config.knn_k,
        seed=run.config.seed, device=run.device, amp=run.device.type == "cuda")
    results.update({"steps": run.step, "run_dir": str(run.run_dir)})
    write_json_atomic(run.run_dir / "eval.json", results)
    return results
