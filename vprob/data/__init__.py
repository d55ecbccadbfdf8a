"""Data sets kept whole on the device as uint8, batched on-device SimCLR augmentation, and the registry of
data sets (:mod:`vprob.data.registry`)."""

from vprob.data.augment import AugmentParams, SimCLRAugment
from vprob.data.datasets import (
    ImageSet,
    channel_stats,
    check_image_batch,
    load_cifar10,
    load_digits,
)
from vprob.data.registry import DATASETS, DatasetSpec, augmentation_for, get_dataset, load_dataset

__all__ = [
    "DATASETS",
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
]
