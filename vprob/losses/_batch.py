"""Rows of a (V, B, d) batch laid out as anchors against contrast rows, gathered across processes if asked."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from vprob import distributed


class ContrastBatch(NamedTuple):
    """Anchors (this process's rows) against contrast rows (every process's rows).

    Row v·B + i of ``anchors`` is view v of image i (``z.reshape(V·B, d)``); ``contrast`` is the concatenation
    of every process's anchors (rank 0 first), so that ``contrast[self_index] == anchors``.
    """

    anchors: Tensor  # (n, d), n = V·B
    contrast: Tensor  # (m, d), m = W·n
    classes: Tensor  # (m,) int64 class of each contrast row, in [0, K)
    counts: Tensor  # (K,) number of contrast rows in each class
    self_index: Tensor  # (n,) position of each anchor among the contrast rows
    world: int  # W, the number of processes whose rows are in ``contrast``
    every_anchor_has_positive: bool  # True when V >= 2 (the other views are positives); no device sync

    @property
    def anchor_classes(self) -> Tensor:
        """(n,) class of each anchor."""
        return self.classes[self.self_index]


def contrast_batch(z: Tensor, labels: Tensor | None, *, gather: bool) -> ContrastBatch:
    """Lay out z (V, B, d) as anchors and contrast rows; ``labels=None`` makes each image its own class.

    With ``gather=True`` and torch.distributed initialized, the contrast rows are every process's rows
    (:func:`vprob.distributed.gather_with_grad`), and class labels are gathered alongside (image indices are
    offset by rank·B so that they stay distinct). All processes must pass the same shapes.
    """
    views, batch, dim = z.shape
    anchors = z.reshape(views * batch, dim)
    world = distributed.world_size() if gather else 1
    rank = distributed.rank() if gather else 0
    contrast = distributed.gather_with_grad(anchors) if world > 1 else anchors
    num_anchors = anchors.shape[0]
    self_index = rank * num_anchors + torch.arange(num_anchors, device=z.device)
    if labels is None:
        # Image i of rank r is class r·B + i; its V views are the V members of that class.
        image = torch.arange(batch, device=z.device).repeat(views)
        classes = (torch.arange(world, device=z.device)[:, None] * batch + image).reshape(-1)
        counts = image.new_full((world * batch,), views)  # int64 on z's device, like image
    else:
        row_labels = labels.to(z.device).repeat(views)
        all_labels = distributed.all_gather_nograd(row_labels) if world > 1 else row_labels
        _, classes, counts = torch.unique(all_labels, return_inverse=True, return_counts=True)
    return ContrastBatch(anchors, contrast, classes, counts, self_index, world, views >= 2)


def anchor_mean(per_anchor: Tensor, batch: ContrastBatch) -> Tensor:
    """Mean of per-anchor losses over the anchors that have at least one positive.

    An anchor whose class has no other row (possible only with V = 1) has no positive: SupCon's term for it
    is 0/0 (the reference SupConLoss divides by zero, newer versions add 0 but still count the anchor). Here
    such anchors are left out of the mean (choice); if no anchor has a positive, a ValueError names labels.
    Distributed: the count of anchors with a positive is over every process's rows and the sum is multiplied
    by W, so that the mean over processes of this value is the single-process mean on the whole batch.
    """
    if batch.every_anchor_has_positive:
        return per_anchor.sum() / (batch.contrast.shape[0] / batch.world)
    has_positive = batch.counts[batch.anchor_classes] > 1
    num_valid = (batch.counts[batch.classes] > 1).sum()
    if int(num_valid) == 0:
        raise ValueError(
            "labels: no anchor has a positive (every class has a single row); the loss is undefined"
        )
    return torch.where(has_positive, per_anchor, 0.0).sum() / (num_valid / batch.world)
