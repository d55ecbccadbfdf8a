"""Data sets (digits, CIFAR-10/100, STL-10, image folders) kept whole on the device as uint8, batched
on-device SimCLR augmentation, and the registry of data sets (:mod:`vprob.data.registry`)."""

from vprob.data.augment import AugmentParams, SimCLRAugment
from vprob.data.datasets import (
    UNLABELLED,
    ImageSet,
    channel_stats,
    check_image_batch,
    load_cifar10,
    load_digits,
)
from vprob.data.registry import (
    DATASETS,
    DatasetSpec,
    EvalSets,
    augmentation_for,
    evaluation_sets,
    get_dataset,
    load_dataset,
    training_set,
)

__all__ = [
    "DATASETS",
    "UNLABELLED",
    "EvalSets",
    "AugmentParams",
    "DatasetSpec",
    "ImageSet",
    "SimCLRAugment",
    "augmentation_for",
    "channel_stats",
    "check_image_batch",
    "get_dataset",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "evaluation_sets",
    "training_set",
]
