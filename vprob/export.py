"""Backbone weights out of a run (``vprob export``) and into a new one (``--init-from``).

An exported file (:func:`vprob.checkpoint.save_state_dict_file`) holds the trained backbone's
``state_dict`` and, beside it, JSON metadata: the run's config, the backbone, its stem, the image shape and
the torchvision model it matches. For the torchvision backbones the keys and shapes are exactly those of the
torchvision model without its classifier, so plain torchvision loads it with ``strict=True``::

    import torch, torchvision
    from vprob.checkpoint import load_weights_file

    weights = load_weights_file("resnet18.pt")            # .state_dict, .metadata (or torch.load(...,
    model = torchvision.models.resnet18()                 #  weights_only=True)["state_dict"])
    if weights.metadata["stem"] == "cifar":               # the CIFAR stem: 3x3 stride-1 conv1, no max-pool
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    model.fc = torch.nn.Identity()
    model.load_state_dict(weights.state_dict, strict=True)

(For the ViT: ``torchvision.models.VisionTransformer(size, patch, 12, 6, 384, 1536)`` with
``heads = nn.Identity()``, size and patch in the metadata. An input with other than 3 channels replaces
``conv1`` / ``conv_proj`` with that many input channels.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from vprob.backbones import default_stem, get_backbone, vit_patch_size
from vprob.checkpoint import CHECKPOINT_NAME, CheckpointError, load_weights_file, save_state_dict_file

# Classifier keys of torchvision's published weights (ResNet's fc, ViT's heads): not part of a backbone.
CLASSIFIER_PREFIXES = ("fc.", "heads.")


def backbone_metadata(config: Any, image_shape: tuple[int, int, int] | None, step: int) -> dict[str, Any]:
    """What an exported file says about its backbone (``config``: a resolved TrainConfig)."""
    from dataclasses import asdict

    spec = get_backbone(config.backbone)
    channels, size = (image_shape[0], image_shape[-1]) if image_shape else spec.default_shape
    meta: dict[str, Any] = {
        "backbone": config.backbone,
        "torchvision_model": spec.torchvision,
        "image_shape": [channels, size, size],
        "step": step,
        "config": asdict(config),
    }
    if spec.stems:
        meta["stem"] = config.stem or (spec.stems[0] if len(spec.stems) == 1 else default_stem(size))
    if spec.torchvision == "vit":
        meta["patch_size"] = vit_patch_size(size)
    return meta


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write the backbone of the run in ``run_dir`` to the weights file ``out``; returns its metadata.

    Needs no data set (the image shape is in the checkpoint). ValueError if ``out`` is the run's own
    checkpoint; :class:`vprob.checkpoint.CheckpointError` for a missing or damaged checkpoint.
    """
    from vprob.runs import load_run

    run_dir, out = Path(run_dir), Path(out)
    if out.resolve() == (run_dir / CHECKPOINT_NAME).resolve():
        raise ValueError(f"--out {out} would overwrite the run's checkpoint; choose another file")
    run = load_run(run_dir, "cpu", data=False)
    metadata = backbone_metadata(run.config, run.image_shape, run.step)
    encoder = run.model.encoder
    assert isinstance(encoder, nn.Module)  # every method keeps its backbone as ``encoder``
    save_state_dict_file(out, encoder.state_dict(), metadata)
    return metadata


def match_state_dict(
    model_state: Mapping[str, Tensor], file_state: Mapping[str, Tensor], source: str
) -> tuple[dict[str, Tensor], list[str]]:
    """``file_state`` without classifier keys, checked against ``model_state``; returns it and notes.

    Raises :class:`CheckpointError` listing every missing key, unexpected key and shape that differs."""
    notes = []
    dropped = sorted(k for k in file_state if k.startswith(CLASSIFIER_PREFIXES) and k not in model_state)
    if dropped:
        notes.append(f"{source}: dropped the classifier weights {', '.join(dropped)} (the backbone has none)")
    state = {k: v for k, v in file_state.items() if k not in dropped}
    missing = sorted(set(model_state) - set(state))
    unexpected = sorted(set(state) - set(model_state))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)}, model {tuple(model_state[k].shape)}"
        for k in set(state) & set(model_state)
        if state[k].shape != model_state[k].shape
    )
    if missing or unexpected or shapes:
        lines = []
        if missing:
            lines.append(
                f"missing from the file ({len(missing)}): {', '.join(missing[:20])}"
                + (" ..." if len(missing) > 20 else "")
            )
        if unexpected:
            lines.append(
                f"not in the model ({len(unexpected)}): {', '.join(unexpected[:20])}"
                + (" ..." if len(unexpected) > 20 else "")
            )
        if shapes:
            lines.append(f"shapes that differ ({len(shapes)}): {'; '.join(shapes[:20])}")
        hint = ""
        if any(s.startswith("conv1.weight") for s in shapes):
            hint = (
                " (conv1 differs: the file was trained with the other ResNet stem; choose it with "
                "--stem cifar / --stem imagenet)"
            )
        raise CheckpointError(f"{source} does not fit the backbone{hint}:\n  " + "\n  ".join(lines))
    return state, notes


def load_backbone_weights(encoder: nn.Module, path: str | os.PathLike) -> list[str]:
    """Load a weights file (``vprob export``'s, or a plain ``state_dict`` such as torchvision's published
    ``.pth``) into ``encoder`` (strict, after dropping ``fc.*`` / ``heads.*`` classifier keys); returns notes
    for the user. Read without running code (:func:`vprob.checkpoint.load_weights_file`)."""
    weights = load_weights_file(path)
    state, notes = match_state_dict(encoder.state_dict(), weights.state_dict, f"--init-from {path}")
    encoder.load_state_dict(state, strict=True)
    return notes


__all__ = [
    "CLASSIFIER_PREFIXES",
    "backbone_metadata",
    "export_run",
    "load_backbone_weights",
    "match_state_dict",
]
