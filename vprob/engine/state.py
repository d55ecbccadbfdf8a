"""Everything a checkpoint must hold to resume a run bit for bit, and putting it back.

Model (for VCL and VJE the guide lives in the same module), optimizer, scheduler, the step, and every random
stream: torch's global generator, CUDA's, and the engine's own generator (permutations and augmentation).
``pyro.get_param_store()`` is deliberately not used: it does not restore a module's plain parameters.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from vprob.checkpoint import CheckpointError
from vprob.config import TrainConfig, config_from_dict

# Saved values a resumed run must share with the checkpoint.
RESUME_KEYS = ("method", "data", "backbone", "stem", "batch_size", "epochs", "normal_class", "options")


def capture(
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    step: int,
    image_shape: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """The training state as plain containers and tensors (what :func:`vprob.checkpoint.save_checkpoint`
    writes); ``image_shape``: the data's (C, H, W) the backbone was built for (so that a run loads, and
    exports, without its data set)."""
    return {
        "config": asdict(config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "image_shape": None if image_shape is None else [int(n) for n in image_shape],
        "rng": {
            "torch": torch.get_rng_state(),
            "generator": generator.get_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
    }


def restore(
    state: dict[str, Any],
    config: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> int:
    """Put a captured state back and return its step; :class:`CheckpointError` if the checkpoint was written
    with other settings (``RESUME_KEYS``) or does not fit the model."""
    saved = asdict(config_from_dict(state.get("config", {})))
    for key in RESUME_KEYS:
        if saved.get(key) != getattr(config, key):
            raise CheckpointError(
                f"checkpoint was written with {key}={saved.get(key)!r}, this run has "
                f"{key}={getattr(config, key)!r}; resume with the same settings"
            )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint does not match this model: {exc}") from exc
    rng = state["rng"]
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
    generator.set_state(rng["generator"].cpu())
    return int(state["step"])
