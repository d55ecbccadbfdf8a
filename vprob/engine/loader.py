"""The data set on the device: a loader that owns permutation, batching and each process's share, and the
batched augmentation that turns a uint8 batch into V views (after airbench's GPU-resident loader)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from vprob.data import ImageSet, SimCLRAugment, evaluation_sets, load_dataset, training_set
from vprob.data.augment import AugmentParams
from vprob.data.registry import EvalSets


@dataclass
class TrainingData:
    """The images of a run: ``train`` (what the method trains on), ``test``, and the evaluation splits."""

    train: ImageSet
    test: ImageSet
    evaluation: EvalSets


def check_class_index(normal_class: int, classes: tuple[str, ...]) -> None:
    """ValueError naming ``normal_class`` and the valid range unless it indexes ``classes``."""
    if (
        isinstance(normal_class, bool)
        or not isinstance(normal_class, int)
        or not (0 <= normal_class < len(classes))
    ):
        raise ValueError(
            f"normal class {normal_class!r} does not exist: valid class indices are "
            f"0..{len(classes) - 1} ({', '.join(classes)})"
        )


def one_class_subset(image_set: ImageSet, normal_class: int) -> ImageSet:
    """The images of one class (``check_class_index`` first)."""
    check_class_index(normal_class, image_set.classes)
    return image_set.subset(image_set.labels == normal_class)


def training_data(
    data: str,
    data_dir: str | None,
    device: torch.device,
    needs_labels: bool,
    normal_class: int | None = None,
    **load_options: Any,
) -> TrainingData:
    """Load a registered data set onto ``device``: kNN and linear evaluation fit on its labelled images
    (STL-10: its 5,000 labelled train images, not the 100,000 unlabeled ones); training uses all of them
    unless the method needs labels, or only the images of ``normal_class`` (the one-class protocol)."""
    full_train, test = load_dataset(data, data_dir, device=device, **load_options)
    evaluation = evaluation_sets(data, full_train, test)
    train = training_set(full_train, needs_labels)
    if normal_class is not None:
        train = one_class_subset(train, normal_class)
    return TrainingData(train, test, evaluation)


class DeviceLoader:
    """Batches of an :class:`ImageSet` kept whole on the device.

    Each epoch is a fresh permutation drawn from ``generator`` (the same on every process); ``batch_size``
    is global, and with ``world_size`` processes each takes its contiguous share of every batch, so that the
    processes together see exactly the batches a single process would. Incomplete last batches are dropped.
    """

    def __init__(
        self,
        image_set: ImageSet,
        batch_size: int,
        generator: torch.Generator,
        world_size: int = 1,
        rank: int = 0,
    ) -> None:
        if batch_size > len(image_set):
            raise ValueError(f"batch_size {batch_size} exceeds the {len(image_set)} training images")
        if batch_size % world_size:
            raise ValueError(
                f"batch_size {batch_size} (global) must be divisible by the {world_size} processes"
            )
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
            index = order[start : start + per_rank]
            yield self.image_set.images[index], self.image_set.labels[index]


class ViewMaker:
    """V augmented views (V, B, C, H, W) of a uint8 batch (B, C, H, W), all drawn in one batched call.

    Every process draws the parameters of the whole global batch (the same generator state everywhere) and
    takes its own rows, so its views are exactly those a single process would make of its images.
    """

    def __init__(
        self,
        augment: SimCLRAugment,
        num_views: int,
        generator: torch.Generator,
        world_size: int = 1,
        rank: int = 0,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        self.augment, self.num_views, self.generator = augment, num_views, generator
        self.world_size, self.rank = world_size, rank
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # The colour jitter is dozens of small elementwise kernels: compiling fuses them.
        self._apply: Callable[..., Tensor] = torch.compile(augment.apply) if compile else augment.apply

    def __call__(self, images: Tensor) -> Tensor:
        num_views, (batch, _, height, width) = self.num_views, images.shape
        copies = images.repeat(num_views, 1, 1, 1)
        params = self.augment.sample_params(
            len(copies) * self.world_size, height, width, self.generator, images.device
        )
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
    taken: dict[str, Any] = {}
    for f in fields(params):
        value = getattr(params, f.name)
        taken[f.name] = None if value is None else value[rows]  # blur is None when the recipe has none
    return AugmentParams(**taken)
