"""Reading a finished or interrupted run folder back: :func:`load_run` is the one loader, used by
``vprob evaluate``, ``vprob diagnose``, ``vprob export`` and the notebooks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vprob.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint
from vprob.config import TrainConfig, build_model, config_from_dict, data_options
from vprob.data import ImageSet, SimCLRAugment, augmentation_for, evaluation_sets, load_dataset
from vprob.devices import resolve_device
from vprob.evaluate import evaluate_backbone
from vprob.jsonio import write_json_atomic


@dataclass
class LoadedRun:
    """A run folder read back: its resolved config, the model (eval mode, on ``device``) with the
    checkpoint's weights, its data set's splits and augmentation (``None`` when loaded with
    ``data=False``), the step the checkpoint was taken at, and the (C, H, W) shape the backbone was built
    for (``None`` for checkpoints older than that record: the backbone's default shape)."""

    run_dir: Path
    config: TrainConfig
    model: nn.Module
    train_set: ImageSet | None
    test_set: ImageSet | None
    augment: SimCLRAugment | None
    step: int
    device: torch.device
    image_shape: tuple[int, int, int] | None = None


def load_run(
    run_dir: str | Path, device: str | torch.device = "auto", data_dir: str | None = None, data: bool = True
) -> LoadedRun:
    """The run in ``run_dir`` ready for analysis (in a notebook: ``run = load_run("runs/...", "cpu")``, then
    ``run.model``, ``run.config``, ``run.test_set``, ``run.augment.normalize``).

    ``data_dir`` overrides the data folder stored in the run; ``data=False`` skips loading the data set
    (``train_set``, ``test_set`` and ``augment`` are then ``None``). Paths stored in the checkpoint are
    never used to write: ``run_dir`` is where the run is now.

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
    train_set = test_set = augment = None
    if data:
        full_train, full_test = load_dataset(
            config.data, config.data_dir, device=device, **data_options(config)
        )
        augment = augmentation_for(config.data, full_train)
        sets = evaluation_sets(config.data, full_train, full_test)
        if sets.skipped:
            raise ValueError(f"{run_dir}: {sets.reason}; nothing to evaluate or diagnose")
        train_set, test_set = sets.train, sets.test
    image_shape = state.get("image_shape")
    if image_shape is None and train_set is not None:  # a checkpoint older than the record: the data's
        image_shape = train_set.images.shape[1:]
    image_shape = None if image_shape is None else tuple(int(n) for n in image_shape)
    model = build_model(config, image_shape=image_shape)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint does not match its own config: {exc}") from exc
    model.to(device).eval()
    return LoadedRun(
        run_dir, config, model, train_set, test_set, augment, int(state.get("step", 0)), device, image_shape
    )


def evaluate_run(run_dir: str | Path, data_dir: str | None = None, device: str = "auto") -> dict[str, Any]:
    """kNN and linear-probe accuracy of a run's checkpoint; writes ``eval.json`` beside it."""
    run = load_run(run_dir, device, data_dir)
    results: dict[str, Any] = evaluate_backbone(
        run.model.encoder,
        run.train_set,
        run.test_set,
        run.augment.normalize,
        knn_k=run.config.knn_k,
        device=run.device,
        amp=run.device.type == "cuda",
    )
    results.update({"steps": run.step, "run_dir": str(run.run_dir)})
    write_json_atomic(run.run_dir / "eval.json", results)
    return results
