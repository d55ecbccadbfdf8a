"""Online kNN accuracy during training: a cheap, fixed held-out sample scored every few epochs.

The samples are evenly spaced indices (no random numbers: the training generators are never touched), the
encoder runs in eval mode under ``no_grad`` and every module's training flag is restored
(:func:`vprob.evaluate.extract_features`), so evaluating leaves the training trajectory unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from vprob.data import ImageSet
from vprob.evaluate import extract_features, knn_accuracy

ONLINE_K = 20
MAX_TEST_IMAGES = 5_000
MAX_TRAIN_IMAGES = 10_000
# The automatic --eval-every: every 10 epochs for images of 32 px and more; digits (8 px) train in seconds
# and are evaluated fully at the end.
AUTO_EVERY = 10
AUTO_MIN_SIZE = 32


def auto_eval_every(eval_every: int | None, image_set: ImageSet, one_class: bool) -> int:
    """The epochs between online evaluations: ``eval_every`` if set, else 10 for images of 32 px and more
    (0 for smaller ones and one-class runs, whose single training class makes a kNN accuracy meaningless)."""
    if eval_every is not None:
        return eval_every
    return AUTO_EVERY if min(image_set.images.shape[-2:]) >= AUTO_MIN_SIZE and not one_class else 0


def evenly_spaced(count: int, limit: int) -> Tensor:
    """``min(count, limit)`` indices spread evenly over ``range(count)`` (deterministic, no RNG)."""
    keep = min(count, limit)
    return torch.arange(keep) * count // keep


class OnlineKNN:
    """``OnlineKNN(train_set, test_set, normalize)(encoder) -> {"online_knn_top1_k20": accuracy}``.

    Weighted kNN (k = 20, temperature 0.1, cosine) of up to 5,000 test images against the backbone features
    of up to 10,000 training images (un-augmented), both evenly spaced samples fixed for the whole run.
    """

    def __init__(
        self,
        train_set: ImageSet,
        test_set: ImageSet,
        normalize: Callable[[Tensor], Tensor],
        k: int = ONLINE_K,
        max_train: int = MAX_TRAIN_IMAGES,
        max_test: int = MAX_TEST_IMAGES,
        amp: bool = False,
    ) -> None:
        # kNN fits on images with a class only (a data set may hold unlabelled ones for training).
        train_set, test_set = train_set.labelled(), test_set.labelled()
        if len(train_set) == 0 or len(test_set) == 0:
            raise ValueError(
                "online kNN evaluation needs labelled training and test images: set eval_every=0"
            )
        # CPU indices select from images on any device (copied there once, here).
        train_index = evenly_spaced(len(train_set), max_train)
        test_index = evenly_spaced(len(test_set), max_test)
        self.train_images, self.train_labels = train_set.images[train_index], train_set.labels[train_index]
        self.test_images, self.test_labels = test_set.images[test_index], test_set.labels[test_index]
        self.num_classes = train_set.num_classes
        self.normalize, self.k, self.amp = normalize, k, amp
        self.key = f"online_knn_top1_k{k}"

    @torch.no_grad()
    def __call__(self, encoder: nn.Module) -> dict[str, float]:
        dtype = torch.bfloat16 if self.amp else None
        train = extract_features(encoder, self.train_images, self.normalize, autocast_dtype=dtype)
        test = extract_features(encoder, self.test_images, self.normalize, autocast_dtype=dtype)
        accuracy = knn_accuracy(
            train,
            self.train_labels,
            test,
            self.test_labels,
            k=self.k,
            weighted=True,
            num_classes=self.num_classes,
        )
        return {self.key: accuracy}
