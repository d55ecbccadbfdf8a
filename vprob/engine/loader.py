"""The data set on the device: a loader that owns permutation, batching and each process's share, and the
batched augmentation that turns a uint8 batch into V views (after airbench's GPU-resident loader)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields

import torch
from torch import Tensor

from vprob.data import ImageSet, SimCLRAugment
from vprob.data.augment import AugmentParams


class DeviceLoader:
    """Batches of an :class:`ImageSet` kept whole on the device.

    Each epoch is a fresh permutation drawn from ``generator`` (the same on every process); ``batch_size``
    is global, and with ``world_size`` processes each takes its contiguous share of every batch, so that the
    processes together see exactly the batches a single process would. Incomplete last batches are dropped.
    """

    def __init__(self, image_set: ImageSet, batch_size: int, generator: torch.Generator, world_size: int = 1,
                 rank: int = 0) -> None:
        if batch_size > len(image_set):
            raise ValueError(f"batch_size {batch_size} exceeds the {len(image_set)} training images")
        if batch_size % world_size:
            raise ValueError(f"batch_size {batch_size} (global) must be divisible by the {world_size} "
                             "processes")
        self.image_set, self.batch_size, self.generator = image_set, batch_size, generator
        self.world_size, self.rank = world_size, rank
        self.steps_per_epoch = len(image_set) // batch_size

    def epoch(self, first_step: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """(images, labels) of this process's share of each batch of one epoch, from step ``first_step``
        (a resumed run draws the epoch's permutation again and skips the steps it has done)."""
        order = torch.randperm(len(self.image_set), generator=self.generator, device=self.generator.device)
        per_rank = self.batch_size // self.world_size
        for step in range(first_step, self.steps_per_epoch):
            start = step * self.batch_size + self.rank * per_rank
            index = order[start:start + per_rank]
            yield self.image_set.images[index], self.image_set.labels[index]


class ViewMaker:
    """V augmented views (V, B, C, H, W) of a uint8 batch (B, C, H, W), all drawn in one batched call.

    Every process draws the parameters of the whole global batch (the same generator state everywhere) and
    takes its own rows, so its views are exactly those a single process would make of its images.
    """

    def __init__(self, augment: SimCLRAugment, num_views: int, generator: torch.Generator,
                 world_size: int = 1, rank: int = 0, channels_last: bool = False,
                 compile: bool = False) -> None:
        self.augment, self.num_views, self.generator = augment, num_views, generator
        self.world_size, self.rank = world_size, rank
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # The colour jitter is dozens of small elementwise kernels: compiling fuses them.
        self._apply: Callable[..., Tensor] = torch.compile(augment.apply) if compile else augment.apply

    def __call__(self, images: Tensor) -> Tensor:
        num_views, (batch, _, height, width) = self.num_views, images.shape
        copies = images.repeat(num_views, 1, 1, 1)
        params = self.augment.sample_params(len(copies) * self.world_size, height, width, self.generator,
                                            images.device)
        if self.world_size > 1:
            params = _take_rows(params, self._own_rows(batch, images.device))
        views = self._apply(copies, params, memory_format=self.memory_format)
        return views.view(num_views, batch, *views.shape[1:])

    def _own_rows(self, batch: int, device: torch.device) -> Tensor:
        """Rows of this process's images in the (V x global batch) parameter table."""
        global_batch = batch * self.world_size
        own = self.rank * batch + torch.arange(batch, device=device)
        return (torch.arange(self.num_views, device=device).unsqueeze(1) * global_batch + own).flatten()


def _take_rows(params: AugmentParams, rows: Tensor) -> AugmentParams:
    return AugmentParams(**{f.name: getattr(params, f.name)[rows] for f in fields(params)})
