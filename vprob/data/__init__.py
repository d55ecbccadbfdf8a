"""Data sets kept whole on the device as uint8, and batched on-device SimCLR augmentation."""

from vprob.data.augment import AugmentParams, SimCLRAugment
from vprob.data.datasets import (
    DATASET_NAMES,
    ImageSet,
    channel_stats,
    check_image_batch,
    load_cifar10,
    load_dataset,
    load_digits,
)

__all__ = [
    "DATASET_NAMES",
    "AugmentParams",
    "ImageSet",
    "SimCLRAugment",
    "channel_stats",
    "check_image_batch",
    "load_cifar10",
    "load_dataset",
    "load_digits",
]
