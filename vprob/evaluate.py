"""Evaluation of frozen representations: feature extraction, kNN classification and a linear probe.

Everything runs batched on whatever device the tensors live on (no scikit-learn, no per-sample Python).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "evaluate_backbone",
    "extract_features",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "map_batches",
]


def _module_device(module: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return fallback


@torch.no_grad()
def map_batches(
    fn: Callable[[Tensor], Tensor],
    images_uint8: Tensor,
    normalize_fn: Callable[[Tensor], Tensor],
    batch_size: int = 512,
    device: torch.device | None = None,
) -> Tensor:
    """``fn(normalize_fn(batch))`` over uint8 images (N, C, H, W) in batches (moved to ``device`` if given),
    each output cast to float32 and concatenated along the first dimension: (N, ...). The caller chooses
    the modules' mode (train or eval)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if images_uint8.shape[0] == 0:
        raise ValueError("map_batches got no images")
    chunks = []
    for start in range(0, images_uint8.shape[0], batch_size):
        batch = images_uint8[start : start + batch_size]
        if device is not None:
            batch = batch.to(device, non_blocking=True)
        chunks.append(fn(normalize_fn(batch)).float())
    return torch.cat(chunks)


@torch.no_grad()
def extract_features(
    module: nn.Module,
    images_uint8: Tensor,
    normalize_fn: Callable[[Tensor], Tensor],
    batch_size: int = 1024,
    device: torch.device | str | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Tensor:
    """Features of every image: uint8 (N, C, H, W) -> float32 (N, F) on ``device``.

    ``module`` runs in eval mode (BatchNorm uses its running statistics) and every submodule's
    training flag is restored afterwards. ``normalize_fn`` maps a uint8 batch on ``device`` to the
    module's float input (e.g. ``SimCLRAugment.normalize``). ``device`` defaults to the module's.
    ``autocast_dtype`` (e.g. torch.bfloat16) runs the module under autocast; features come back float32.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if images_uint8.shape[0] == 0:
        raise ValueError("extract_features got no images")
    device = torch.device(device) if device is not None else _module_device(module, images_uint8.device)
    modes = [(m, m.training) for m in module.modules()]
    module.eval()

    def features(x: Tensor) -> Tensor:
        with (
            torch.autocast(device_type=device.type, dtype=autocast_dtype)
            if autocast_dtype is not None
            else contextlib.nullcontext()
        ):
            return module(x).flatten(1)

    try:
        return map_batches(features, images_uint8, normalize_fn, batch_size, device)
    finally:
        for m, mode in modes:
            m.training = mode


def evaluate_backbone(
    encoder: nn.Module,
    train_set: Any,
    test_set: Any,
    normalize_fn: Callable[[Tensor], Tensor],
    knn_k: Sequence[int] = (200, 10),
    device: torch.device | None = None,
    amp: bool = False,
) -> dict[str, float]:
    """kNN accuracy for each k (weighted vote for k > 10, majority otherwise; keys
    ``knn_top1_k{k}_{weighted|majority}``) and linear-probe accuracy (``linear_top1``) of frozen ``encoder``
    features, fitted on ``train_set`` and scored on ``test_set`` (ImageSets of uint8 images: ``images``
    (N, C, H, W) and ``labels`` (N,)). Features are extracted on ``device`` (default: the encoder's) and
    everything after runs there; ``amp`` extracts under bfloat16 autocast. The probe is the default
    full-batch L-BFGS :func:`linear_probe`, which is deterministic (no seed)."""
    dtype = torch.bfloat16 if amp else None
    train = extract_features(encoder, train_set.images, normalize_fn, device=device, autocast_dtype=dtype)
    test = extract_features(encoder, test_set.images, normalize_fn, device=device, autocast_dtype=dtype)
    results: dict[str, float] = {}
    for k in knn_k:
        weighted = k > 10
        key = f"knn_top1_k{k}_{'weighted' if weighted else 'majority'}"
        results[key] = knn_accuracy(
            train,
            train_set.labels,
            test,
            test_set.labels,
            k=k,
            weighted=weighted,
        )
    # The features are on ``device`` already, which is where the probe runs by default.
    results["linear_top1"] = linear_probe(train, train_set.labels, test, test_set.labels)
    return results


def _num_classes(*labels: Tensor) -> int:
    return int(max(int(y.max()) for y in labels if y.numel())) + 1  # a host sync, fine at evaluation time


@torch.no_grad()
def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    k: int = 200,
    temperature: float = 0.1,
    weighted: bool = True,
    num_classes: int | None = None,
    chunk_size: int = 1024,
) -> Tensor:
    """k-nearest-neighbour class predictions (M,) int64 for test features (M, F) from train features (N, F).

    Similarity is the cosine (features are L2-normalized here). ``weighted=True``: each of the k nearest
    neighbours votes for its class with weight exp(sim / temperature), the weighted kNN of Wu et al. 2018
    (InstDisc) used as the kNN monitor in SimCLR/MoCo code; ties between class scores go to the lowest
    class index. ``weighted=False``: a plain majority vote of the k nearest; ties between classes with
    equal counts go to the class of the nearest neighbour among the tied classes. (Ties in similarity
    between neighbours are ordered as torch.topk returns them.) The test set is processed in chunks of
    ``chunk_size`` rows, so memory is O(chunk_size x N). Pass ``num_classes`` to avoid a host sync.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    if train_features.shape[0] != train_labels.shape[0]:
        raise ValueError(
            f"train_features has {train_features.shape[0]} rows but train_labels {train_labels.shape[0]}"
        )
    if num_classes is None:
        num_classes = _num_classes(train_labels)
    k = min(k, train_features.shape[0])
    train = F.normalize(train_features.float(), dim=1)
    test = F.normalize(test_features.float(), dim=1)
    labels = train_labels.long()
    preds = []
    for start in range(0, test.shape[0], chunk_size):
        sim = test[start : start + chunk_size] @ train.T  # (m, N)
        sim_k, idx_k = sim.topk(k, dim=1)  # sorted, nearest first
        labels_k = labels[idx_k]  # (m, k)
        scores = sim.new_zeros(sim.shape[0], num_classes)
        if weighted:
            # Shifting by the top similarity leaves the argmax unchanged and keeps exp() finite.
            weights = torch.exp((sim_k - sim_k[:, :1]) / temperature)
            scores.scatter_add_(1, labels_k, weights)
        else:
            counts = scores.scatter_add_(1, labels_k, torch.ones_like(sim_k))
            ranks = torch.arange(k, device=sim.device, dtype=sim.dtype).expand_as(sim_k)
            first = torch.full_like(scores, float(k)).scatter_reduce_(1, labels_k, ranks, reduce="amin")
            # Count first, then the earliest rank among equal counts (integers: exact in float32).
            scores = counts * (k + 1) + (k - first)
        preds.append(scores.argmax(dim=1))
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=test.device)


def knn_accuracy(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor, **kwargs
) -> float:
    """Top-1 accuracy of ``knn_predict`` (keyword arguments are passed on)."""
    pred = knn_predict(train_features, train_labels, test_features, **kwargs)
    return (pred == test_labels.to(pred.device)).float().mean().item()


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    epochs: int = 100,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
    num_classes: int | None = None,
) -> float:
    """Test top-1 accuracy of multinomial logistic regression on frozen, standardized features.

    Features are standardized with the train mean and std (constant features are only centred). The
    objective is mean cross-entropy + weight_decay / 2 * ||W||^2 (bias not penalized); scikit-learn's
    ``LogisticRegression(C=C)`` is the same problem with weight_decay = 1 / (C * N_train).

    ``batch_size=None`` (default) or >= N_train: full-batch L-BFGS with strong Wolfe line search, up to
    ``epochs`` iterations from zero weights (``lr`` default 1.0, the line search's first trial step), keeping
    the last 20 curvature pairs and stopping once max |gradient| <= 1e-5: deterministic, ``seed`` is unused.
    Otherwise Adam on shuffled minibatches for ``epochs`` epochs, cosine-decayed from ``lr`` (default
    0.01), shuffled by a generator seeded with ``seed`` on ``device``.
    Runs on ``device`` (default: that of ``train_features``).
    """
    device = torch.device(device) if device is not None else train_features.device
    x_train, x_test, y_train, y_test = (
        t.to(device) for t in (train_features, test_features, train_labels, test_labels)
    )
    x_train, x_test, y_train, y_test = x_train.float(), x_test.float(), y_train.long(), y_test.long()
    if x_train.shape[0] != y_train.shape[0] or x_test.shape[0] != y_test.shape[0]:
        raise ValueError("features and labels must have the same number of rows")
    if num_classes is None:
        num_classes = _num_classes(y_train, y_test)
    mean = x_train.mean(dim=0)
    std = x_train.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    x_train = (x_train - mean) / std
    x_test = (x_test - mean) / std

    weight, bias = _fit_logistic(x_train, y_train, num_classes, epochs, lr, weight_decay, batch_size, seed)
    with torch.no_grad():
        pred = (x_test @ weight + bias).argmax(dim=1)
        return (pred == y_test).float().mean().item()


def _fit_logistic(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    epochs: int,
    lr: float | None,
    weight_decay: float,
    batch_size: int | None,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """(weight (F, K), bias (K,)) minimizing mean cross-entropy + weight_decay / 2 * ||W||^2 on (x, y):
    full-batch L-BFGS, or Adam on shuffled minibatches (see :func:`linear_probe`)."""
    n, dim = x.shape
    weight = x.new_zeros(dim, num_classes, requires_grad=True)
    bias = x.new_zeros(num_classes, requires_grad=True)

    def objective(rows: Tensor | slice) -> Tensor:
        return F.cross_entropy(x[rows] @ weight + bias, y[rows]) + 0.5 * weight_decay * weight.square().sum()

    with torch.enable_grad():
        if batch_size is None or batch_size >= n:
            opt = torch.optim.LBFGS(
                [weight, bias],
                lr=1.0 if lr is None else lr,
                max_iter=epochs,
                history_size=20,
                tolerance_grad=1e-5,  # max |gradient| of the mean loss: converged for argmax purposes
                line_search_fn="strong_wolfe",
            )

            def closure() -> Tensor:
                opt.zero_grad()
                loss = objective(slice(None))
                loss.backward()
                return loss

            opt.step(closure)
        else:
            opt = torch.optim.Adam([weight, bias], lr=0.01 if lr is None else lr)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
            gen = torch.Generator(device=x.device).manual_seed(seed)
            for _ in range(epochs):
                perm = torch.randperm(n, generator=gen, device=x.device)
                for start in range(0, n, batch_size):
                    opt.zero_grad()
                    objective(perm[start : start + batch_size]).backward()
                    opt.step()
                sched.step()
    return weight.detach(), bias.detach()
