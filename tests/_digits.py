"""Augmented two-view batches of the bundled digits, shared by the model tests."""

import torch
from torch import Tensor

from vprob.data import ImageSet, SimCLRAugment


def two_views(digits: ImageSet, batch: int = 64, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Two augmented views (batch, 1, 8, 8) of a seeded random batch of ``digits``, and its labels."""
    generator = torch.Generator().manual_seed(seed)
    augment = SimCLRAugment.for_dataset("digits", digits)
    index = torch.randperm(len(digits), generator=generator)[:batch]
    x = digits.images[index]
    return augment(x, generator), augment(x, generator), digits.labels[index]
