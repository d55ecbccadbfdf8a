"""The data-set registry: one record per data set.

A record says how to load the set (and its class names, without decoding it), its augmentation recipe,
its training and one-class anomaly defaults, and the far-OOD companion set the diagnostics score against.
To add a data set: write its loader and add one :class:`DatasetSpec` to ``DATASETS``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vprob.data.augment import SimCLRAugment
from vprob.data.datasets import CIFAR10_FORMAT_HELP, ImageSet, load_cifar10, load_digits


@dataclass(frozen=True)
class DatasetSpec:
    """One data set.

    Attributes:
        name: the ``--data`` name.
        load: ``load(data_dir, device) -> (train, test)`` ImageSets of uint8 images on ``device``.
        classes: ``classes(data_dir) -> class names``, cheap (no decoding).
        augment: the :class:`SimCLRAugment` recipe (constructor arguments besides size and statistics).
        train_defaults: defaults of the engine (``TrainConfig`` fields) and of method options (``dim``,
            ``tau``, ...; applied to methods that declare them) for this data set.
        anomaly_defaults: the one-class protocol's defaults (its classes are much smaller sets).
        far_ood: another registered data set, always available offline, used as far OOD by the
            diagnostics (``None``: uniform noise only).
        needs_data_dir: ``--data-dir`` is required.
        description: one line for ``--help``.
    """

    name: str
    load: Callable[[str | None, torch.device], tuple[ImageSet, ImageSet]]
    classes: Callable[[str | None], tuple[str, ...]]
    augment: dict[str, Any]
    train_defaults: dict[str, Any]
    anomaly_defaults: dict[str, Any] = field(default_factory=dict)
    far_ood: str | None = None
    needs_data_dir: bool = False
    description: str = ""


def _load_digits(data_dir: str | None, device: torch.device) -> tuple[ImageSet, ImageSet]:
    train, test = load_digits()
    return train.to(device), test.to(device)


def _digits_classes(data_dir: str | None) -> tuple[str, ...]:
    return tuple(str(k) for k in range(10))


def _load_cifar10(data_dir: str | None, device: torch.device) -> tuple[ImageSet, ImageSet]:
    if data_dir is None:
        raise ValueError(f"data set 'cifar10' needs a data folder (--data-dir). {CIFAR10_FORMAT_HELP}")
    return load_cifar10(data_dir, device=device)


def _cifar10_classes(data_dir: str | None) -> tuple[str, ...]:
    if data_dir is None:
        raise ValueError(f"data set 'cifar10' needs a data folder (--data-dir). {CIFAR10_FORMAT_HELP}")
    path = Path(data_dir).expanduser() / "test.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing. {CIFAR10_FORMAT_HELP}")
    with np.load(path, allow_pickle=False) as npz:  # reads the small `classes` array only
        if "classes" not in npz.files:
            raise ValueError(f"{path}: missing array 'classes'. {CIFAR10_FORMAT_HELP}")
        return tuple(str(c) for c in npz["classes"])


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "digits", _load_digits, _digits_classes,
            # Crops of 50-100 % of the area, no flip (a flipped 2, 3 or 7 is not a digit), mild brightness
            # and contrast, no colour ops (one channel).
            augment=dict(crop_scale=(0.5, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.0,
                         jitter=(0.2, 0.2, 0.0, 0.0), jitter_p=0.8, grayscale_p=0.0),
            train_defaults=dict(backbone="digits_convnet", epochs=30, batch_size=256, dim=32, head_hidden=256,
                                optimizer="adamw", lr=2e-3, weight_decay=1e-4, warmup_epochs=2, tau=0.2),
            # One class of digits has about 144 training images: small batches keep a few steps an epoch.
            anomaly_defaults=dict(epochs=100, batch_size=32),
            description="scikit-learn's bundled 8x8 digits (1,797 images), embedded: no --data-dir",
        ),
        DatasetSpec(
            "cifar10", _load_cifar10, _cifar10_classes,
            # The SimCLR recipe (Chen et al. 2020) with crop scale (0.2, 1): on 32x32 images the ImageNet
            # lower bound 0.08 leaves 9x9-pixel crops that rarely show the object; 0.2 is what the
            # single-file SimCLR yardstick and SupCon's CIFAR recipe use. No blur (as SimCLR on CIFAR).
            augment=dict(crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5,
                         jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, grayscale_p=0.2),
            # The recipe of the single-file SimCLR yardstick (dkobak/simclr-cifar10): SGD, lr 0.03 x
            # batch/256, weight decay 5e-4, tau 0.5, a 1024-wide projector; LARS (tau 0.2, lr 0.6) gave 1.8
            # points less kNN (k = 10) at 100 epochs on an H100 (BENCHMARKS.md).
            train_defaults=dict(backbone="resnet18_cifar", epochs=100, batch_size=512, dim=128,
                                head_hidden=1024, optimizer="sgd", lr=0.06, weight_decay=5e-4,
                                warmup_epochs=2, tau=0.5),
            # A starting point for the 5,000 images of one class (not tuned).
            anomaly_defaults=dict(epochs=200, batch_size=256),
            far_ood="digits",
            needs_data_dir=True,
            description="CIFAR-10 from a folder of train.npz / test.npz JPEG archives (--data-dir)",
        ),
    )
}


def get_dataset(name: str) -> DatasetSpec:
    """The record of data set ``name``; ValueError listing the registered names otherwise."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}") from None


def load_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 device: torch.device | str = "cpu") -> tuple[ImageSet, ImageSet]:
    """(train, test) of a registered data set, uint8 on ``device``."""
    return get_dataset(name).load(None if data_dir is None else str(data_dir), torch.device(device))


def augmentation_for(name: str, image_set: ImageSet, **overrides: Any) -> SimCLRAugment:
    """The data set's augmentation recipe, sized and normalized for ``image_set``; ``overrides`` replace
    any :class:`SimCLRAugment` argument."""
    common = dict(image_size=image_set.images.shape[-1], channels=image_set.images.shape[1],
                  mean=image_set.mean, std=image_set.std)
    return SimCLRAugment(**{**common, **get_dataset(name).augment, **overrides})
