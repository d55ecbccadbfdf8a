"""The data-set registry: one record per data set.

A record says how to load the set (and its class names, without decoding it), its augmentation recipe,
its training and one-class anomaly defaults, and the far-OOD companion set the diagnostics score against.
To add a data set: write its loader and add one :class:`DatasetSpec` to ``DATASETS``.

What the engine calls (the contract for sets with unlabelled images, STL-10 and image folders):

- ``train, test = load_dataset(name, data_dir, device)`` (optionally ``image_size=``, ``cache_dir=``):
  ``train`` is what self-supervised training draws from; it may hold unlabelled images (label -1,
  ``train.unlabelled``), so a method that needs labels trains on ``training_set(train, needs_labels=True)``.
- ``evaluation_sets(name, train, test)``: the (fit, score) pair for kNN, the linear probe and diagnostics,
  or ``.reason`` (a sentence to print) when there is no labelled split and evaluation is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from vprob.data.augment import SimCLRAugment
from vprob.data.cache import cache_folder
from vprob.data.cifar import cifar10_classes, cifar100_classes, load_cifar10_any, load_cifar100
from vprob.data.datasets import ImageSet, channel_stats, load_digits
from vprob.data.decode import resize_square
from vprob.data.image_folder import image_folder_classes, load_image_folder
from vprob.data.stl10 import STL10_SIZE, load_stl10, stl10_classes

# ------------------------------------------------------------------------------------ augmentation recipes

# The SimCLR recipe (Chen et al. 2020) with crop scale (0.2, 1): on 32x32 images the ImageNet lower bound 0.08
# leaves 9x9-pixel crops that rarely show the object; 0.2 is what the single-file SimCLR yardstick and
# SupCon's CIFAR recipe use. No blur (as SimCLR on CIFAR).
CIFAR_RECIPE: dict[str, Any] = dict(
    crop_scale=(0.2, 1.0),
    crop_ratio=(3 / 4, 4 / 3),
    flip_p=0.5,
    jitter=(0.4, 0.4, 0.4, 0.1),
    jitter_p=0.8,
    grayscale_p=0.2,
)
# STL-10 at 96 px: ImageNet's crop scale (0.08, 1) (a 96-pixel image keeps 27-pixel crops), CIFAR's colour
# strengths, no blur, as in the STL-10 recipes of Wang & Isola (2020) and solo-learn. Not tuned here.
STL10_RECIPE: dict[str, Any] = dict(CIFAR_RECIPE, crop_scale=(0.08, 1.0))
# SimCLR's ImageNet recipe: colour strength 1 (0.8, 0.8, 0.8, 0.2), Gaussian blur with probability 0.5,
# sigma in (0.1, 2), kernel 10 % of the image size; used from 64 px up.
IMAGENET_RECIPE: dict[str, Any] = dict(
    STL10_RECIPE, jitter=(0.8, 0.8, 0.8, 0.2), blur_p=0.5, blur_sigma=(0.1, 2.0)
)


def recipe_for_size(image_size: int) -> dict[str, Any]:
    """The recipe for RGB images of a resolution: CIFAR's below 64 px, ImageNet's (with blur) from 64 px."""
    return dict(CIFAR_RECIPE if image_size < 64 else IMAGENET_RECIPE)


@dataclass(frozen=True)
class DatasetSpec:
    """One data set.

    Attributes:
        name: the ``--data`` name.
        load: ``load(data_dir, device) -> (train, test)`` ImageSets of uint8 images on ``device``; ``train``
            is what self-supervised training draws from (it may hold unlabelled images, label -1). A loader
            of a record with ``image_size`` also takes keywords ``image_size`` and ``cache_dir``.
        classes: ``classes(data_dir) -> class names``, cheap (no decoding).
        augment: the :class:`SimCLRAugment` recipe (constructor arguments besides size and statistics), or
            a function of the image size returning one (a set whose resolution is chosen).
        train_defaults: defaults of the engine (``TrainConfig`` fields) and of method options (``dim``,
            ``tau``, ...; applied to methods that declare them) for this data set.
        anomaly_defaults: the one-class protocol's defaults (its classes are much smaller sets).
        far_ood: another registered data set, always available offline, used as far OOD by the
            diagnostics (``None``: uniform noise only).
        needs_data_dir: ``--data-dir`` is required.
        description: one line for ``--help``.
        image_size: the size images are resized to when the engine gives none (``None``: the files' own
            fixed size, and the loader takes no ``image_size``).
        eval_train: ``eval_train(train) -> ImageSet`` the split kNN and linear evaluation fit on
            (default: ``train.labelled()``, the images with a class).
    """

    name: str
    load: Callable[..., tuple[ImageSet, ImageSet]]
    classes: Callable[[str | None], tuple[str, ...]]
    augment: dict[str, Any] | Callable[[int], dict[str, Any]]
    train_defaults: dict[str, Any]
    anomaly_defaults: dict[str, Any] = field(default_factory=dict)
    far_ood: str | None = None
    needs_data_dir: bool = False
    description: str = ""
    image_size: int | None = None
    eval_train: Callable[[ImageSet], ImageSet] | None = None


def _load_digits(data_dir: str | None, device: torch.device) -> tuple[ImageSet, ImageSet]:
    train, test = load_digits()
    return train.to(device), test.to(device)


def _digits_classes(data_dir: str | None) -> tuple[str, ...]:
    return tuple(str(k) for k in range(10))


def _resized(sets: tuple[ImageSet, ImageSet], image_size: int | None) -> tuple[ImageSet, ImageSet]:
    """Both splits resized to ``image_size`` (statistics recomputed on the resized train split)."""
    train, test = sets
    if image_size is None or image_size == train.image_size:
        return sets
    x = [resize_square(s.images, image_size) for s in sets]
    mean, std = channel_stats(x[0])
    return tuple(
        ImageSet(xi, s.labels, s.classes, mean, std, s.unlabelled, s.coarse_labels, s.coarse_classes)
        for xi, s in zip(x, sets, strict=True)
    )


def _load_cifar10(
    data_dir: str | None, device: torch.device, *, image_size: int | None = None, cache_dir: str | None = None
) -> tuple[ImageSet, ImageSet]:
    # The JPEG archives' decoded arrays are cached (15.7 s -> 3.0 s to load on the loaded 2-core machine).
    cache = cache_folder(cache_dir)
    return _resized(load_cifar10_any(data_dir, device=device, cache_dir=cache), image_size)


def _load_cifar100(
    data_dir: str | None, device: torch.device, *, image_size: int | None = None, cache_dir: str | None = None
) -> tuple[ImageSet, ImageSet]:
    return _resized(load_cifar100(data_dir, device=device), image_size)


def _load_stl10(
    data_dir: str | None, device: torch.device, *, image_size: int | None = None, cache_dir: str | None = None
) -> tuple[ImageSet, ImageSet]:
    return load_stl10(data_dir, device=device, image_size=image_size or STL10_SIZE)


def _load_image_folder(
    data_dir: str | None, device: torch.device, *, image_size: int | None = None, cache_dir: str | None = None
) -> tuple[ImageSet, ImageSet]:
    return load_image_folder(data_dir, device=device, image_size=image_size or 64, cache_dir=cache_dir)


_CIFAR_DEFAULTS = dict(
    backbone="resnet18_cifar",
    epochs=100,
    batch_size=512,
    dim=128,
    head_hidden=1024,
    optimizer="sgd",
    lr=0.06,
    weight_decay=5e-4,
    warmup_epochs=2,
    tau=0.5,
)
# 96-pixel and larger images: half CIFAR's batch, the same lr per image (0.03 x batch / 256). Not tuned.
_LARGE_DEFAULTS = dict(_CIFAR_DEFAULTS, batch_size=256, lr=0.03)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "digits",
            _load_digits,
            _digits_classes,
            # Crops of 50-100 % of the area, no flip (a flipped 2, 3 or 7 is not a digit), mild brightness
            # and contrast, no colour ops (one channel).
            augment=dict(
                crop_scale=(0.5, 1.0),
                crop_ratio=(3 / 4, 4 / 3),
                flip_p=0.0,
                jitter=(0.2, 0.2, 0.0, 0.0),
                jitter_p=0.8,
                grayscale_p=0.0,
            ),
            train_defaults=dict(
                backbone="digits_convnet",
                epochs=30,
                batch_size=256,
                dim=32,
                head_hidden=256,
                optimizer="adamw",
                lr=2e-3,
                weight_decay=1e-4,
                warmup_epochs=2,
                tau=0.2,
            ),
            # One class of digits has about 144 training images: small batches keep a few steps an epoch.
            anomaly_defaults=dict(epochs=100, batch_size=32),
            description="scikit-learn's bundled 8x8 digits (1,797 images), embedded: no --data-dir",
        ),
        DatasetSpec(
            "cifar10",
            _load_cifar10,
            cifar10_classes,
            augment=CIFAR_RECIPE,
            # The recipe of the single-file SimCLR yardstick (dkobak/simclr-cifar10): SGD, lr 0.03 x
            # batch/256, weight decay 5e-4, tau 0.5, a 1024-wide projector; LARS (tau 0.2, lr 0.6) gave 1.8
            # points less kNN (k = 10) at 100 epochs on an H100 (BENCHMARKS.md).
            train_defaults=dict(_CIFAR_DEFAULTS),
            # A starting point for the 5,000 images of one class (not tuned).
            anomaly_defaults=dict(epochs=200, batch_size=256),
            far_ood="digits",
            needs_data_dir=True,
            description="CIFAR-10: torchvision's cifar-10-batches-py layout, or train.npz / test.npz JPEG "
            "archives",
            image_size=32,
        ),
        DatasetSpec(
            "cifar100",
            _load_cifar100,
            cifar100_classes,
            augment=CIFAR_RECIPE,
            train_defaults=dict(_CIFAR_DEFAULTS),  # CIFAR-10's recipe (as SimCLR and SupCon use one for both)
            anomaly_defaults=dict(epochs=200, batch_size=128),  # 500 images a class (not tuned)
            far_ood="digits",
            needs_data_dir=True,
            description="CIFAR-100 (fine labels) in torchvision's cifar-100-python layout",
            image_size=32,
        ),
        DatasetSpec(
            "stl10",
            _load_stl10,
            stl10_classes,
            augment=STL10_RECIPE,
            train_defaults=dict(_LARGE_DEFAULTS),
            anomaly_defaults=dict(epochs=200, batch_size=64),  # 500 labelled images a class (not tuned)
            far_ood="digits",
            needs_data_dir=True,
            description="STL-10 (train + unlabeled for training, 96 px) in torchvision's stl10_binary layout",
            image_size=STL10_SIZE,
        ),
        DatasetSpec(
            "imagefolder",
            _load_image_folder,
            image_folder_classes,
            augment=recipe_for_size,
            train_defaults=dict(_LARGE_DEFAULTS),
            anomaly_defaults=dict(epochs=200, batch_size=64),
            far_ood="digits",
            needs_data_dir=True,
            description="JPEG/PNG files in DIR/train/<class>/ and DIR/val/<class>/ (64 px: Tiny-ImageNet, "
            "...)",
            image_size=64,
        ),
    )
}


def get_dataset(name: str) -> DatasetSpec:
    """The record of data set ``name``; ValueError listing the registered names otherwise."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}") from None


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    *,
    image_size: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[ImageSet, ImageSet]:
    """(train, test) of a registered data set, uint8 on ``device``; ``train`` is the self-supervised
    training set (see :func:`evaluation_sets` for what evaluation uses).

    ``image_size``: resize to this size (default: the record's); ``cache_dir``: where decoded sets are
    cached (default: :func:`vprob.data.cache.cache_folder`). Both only for records with ``image_size``.
    """
    spec = get_dataset(name)
    options = {k: v for k, v in dict(image_size=image_size, cache_dir=cache_dir).items() if v is not None}
    if options and spec.image_size is None:
        raise ValueError(
            f"data set {name!r} has a fixed image size and no cache; it takes no {' or '.join(options)}"
        )
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
    if "cache_dir" in options:
        options["cache_dir"] = str(options["cache_dir"])
    return spec.load(None if data_dir is None else str(data_dir), torch.device(device), **options)


@dataclass(frozen=True)
class EvalSets:
    """What kNN and linear evaluation (and diagnostics) use: ``train`` to fit, ``test`` to score; both
    ``None`` with a ``reason`` (one sentence to print) when the data has no labelled split to evaluate on."""

    train: ImageSet | None
    test: ImageSet | None
    reason: str | None = None

    @property
    def skipped(self) -> bool:
        return self.reason is not None


def evaluation_sets(name: str, train: ImageSet, test: ImageSet) -> EvalSets:
    """The evaluation splits of data set ``name`` given what :func:`load_dataset` returned: the record's
    ``eval_train(train)`` (default ``train.labelled()``: STL-10's 5,000 labelled train images, not the
    100,000 unlabeled ones) and ``test``; skipped, with the reason, if either is empty."""
    spec = get_dataset(name)
    fit = spec.eval_train(train) if spec.eval_train is not None else train.labelled()
    if len(fit) == 0:
        return EvalSets(
            None,
            None,
            f"evaluation skipped: the {name} training set has no labelled images "
            "(an unlabelled folder trains self-supervised methods only)",
        )
    if len(test) == 0:
        return EvalSets(
            None,
            None,
            f"evaluation skipped: the {name} data has no labelled val or test split "
            "to score on (add DIR/val/<class>/ folders)",
        )
    return EvalSets(fit, test)


def training_set(train: ImageSet, needs_labels: bool) -> ImageSet:
    """The set a method trains on: ``train`` itself, or its labelled images for a method that needs labels
    (ValueError when there are none)."""
    if not needs_labels or not train.unlabelled:
        return train
    labelled = train.labelled()
    if len(labelled) == 0:
        raise ValueError("this method needs class labels, but the training set has no labelled images")
    return labelled


def augmentation_for(name: str, image_set: ImageSet, **overrides: Any) -> SimCLRAugment:
    """The data set's augmentation recipe, sized and normalized for ``image_set``; ``overrides`` replace
    any :class:`SimCLRAugment` argument."""
    size = image_set.images.shape[-1]
    common = dict(image_size=size, channels=image_set.images.shape[1], mean=image_set.mean, std=image_set.std)
    recipe = get_dataset(name).augment
    recipe = recipe(size) if callable(recipe) else recipe
    return SimCLRAugment(**{**common, **recipe, **overrides})
