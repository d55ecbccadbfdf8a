"""Mutual information between a representation and the labels: the classifier (variational) lower bound.

For any classifier q(y | z),

    I(Z; Y) = H(Y) - H(Y | Z) >= H(Y) - E_{p(z, y)}[-log q(y | z)] = H(Y) - CE,

because the cross-entropy CE of any q upper-bounds the conditional entropy H(Y | Z) (Barber & Agakov 2003).
The expectation is estimated on a held-out split, so that a classifier that memorises the training split
cannot inflate the bound; H(Y) is the plug-in entropy of the held-out labels (the same split as CE).

The same estimator is used for every method: multinomial logistic regression on standardized features
(zero mean, unit variance per coordinate, statistics of the training split), fitted by full-batch L-BFGS
with an L2 penalty, on the features' device. Standardizing makes the result invariant to the scale of the
representation, so backbone features and unit-norm embeddings are compared on equal terms. The penalty is
chosen from a small grid by the cross-entropy on a validation slice of the *training* split (20 %, fixed
seed) and the classifier is then refitted on the whole training split: with more coordinates than
training images per class, an unregularized fit becomes overconfident and its test CE (hence the bound)
would measure the penalty rather than the representation. The test split is never used for the choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

LN2 = math.log(2.0)

# L2 penalties tried (per-sample scale: loss = mean CE + wd / 2 * |W|^2).
WEIGHT_DECAY_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def label_entropy(labels: Tensor, num_classes: int | None = None) -> float:
    """Plug-in entropy H(Y) in nats of integer labels (N,)."""
    counts = torch.bincount(labels.long().flatten(), minlength=num_classes or 0).to(torch.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


def fit_logistic_regression(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Multinomial logistic regression on standardized features, fitted by full-batch L-BFGS.

    Args:
        features: (N, D) training features; labels: (N,) integers in [0, num_classes).
        weight_decay: L2 penalty on the weights (not the bias), added as ``weight_decay / 2 * |W|^2``.

    Returns:
        (weight (K, D), bias (K,), mean (D,), std (D,)) in float32 on the features' device; the logits of
        new features x are ``((x - mean) / std) @ weight.T + bias``.
    """
    x = features.detach().float()
    y = labels.detach().long().to(x.device)
    mean = x.mean(dim=0)
    std = x.std(dim=0)
    std = torch.where(std > 1e-8, std, torch.ones_like(std))  # constant coordinates carry no information
    x = (x - mean) / std
    weight = torch.zeros(num_classes, x.shape[1], device=x.device, requires_grad=True)
    bias = torch.zeros(num_classes, device=x.device, requires_grad=True)
    # Zero start + strictly convex objective (weight_decay > 0): the fit is deterministic, no seed needed.
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach(), mean, std


def _logits(features: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return ((features.detach().float().to(weight.device) - mean) / std) @ weight.T + bias


def select_weight_decay(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    grid: Sequence[float] = WEIGHT_DECAY_GRID,
    validation_fraction: float = 0.2,
    max_iter: int = 200,
    seed: int = 0,
) -> float:
    """The L2 penalty of ``grid`` with the lowest cross-entropy on a random validation slice of the
    (training) features; the slice is drawn with a fixed ``seed``, so the choice is deterministic."""
    if len(grid) == 1:
        return float(grid[0])
    n = features.shape[0]
    num_val = max(1, int(round(validation_fraction * n)))
    if n - num_val < 2:
        raise ValueError(f"too few training rows ({n}) to hold out a validation slice")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(features.device)
    val, fit = order[:num_val], order[num_val:]
    y_val = labels.long().to(features.device)[val]
    losses = []
    for weight_decay in grid:
        params = fit_logistic_regression(
            features[fit], labels.to(features.device)[fit], num_classes, weight_decay, max_iter
        )
        logits = _logits(features[val], *params)
        losses.append(float(F.cross_entropy(logits.double(), y_val.to(logits.device))))
    return float(grid[min(range(len(grid)), key=losses.__getitem__)])


def mutual_information_lower_bound(
    train_z: Tensor,
    train_y: Tensor,
    test_z: Tensor,
    test_y: Tensor,
    num_classes: int | None = None,
    weight_decay: float | Sequence[float] = WEIGHT_DECAY_GRID,
    max_iter: int = 200,
    seed: int = 0,
) -> dict[str, float]:
    """Lower bound I(Z; Y) >= H(Y) - CE with a logistic-regression classifier fitted on (train_z, train_y)
    and evaluated on the held-out (test_z, test_y).

    Args:
        train_z, test_z: (N_train, D) and (N_test, D) representations (backbone features, point
            embeddings or posterior samples); computed on train_z's device.
        train_y, test_y: integer labels (N_train,), (N_test,).
        num_classes: K; defaults to 1 + the largest label seen.
        weight_decay: an L2 penalty, or a grid to choose from on a validation slice of the training
            split (see the module docstring); ``seed`` draws that slice.

    Returns:
        ``label_entropy_nats`` H(Y) of the test labels, ``cross_entropy_nats`` the classifier's test CE,
        ``mi_lower_bound_nats`` = H(Y) - CE (may be slightly negative for a representation that carries no
        label information: the classifier's overfitting is charged to the bound), the same three in bits,
        ``test_accuracy``, ``weight_decay`` (the one used), ``num_classes``, ``num_train``, ``num_test``.
    """
    if train_z.ndim != 2 or test_z.ndim != 2 or train_z.shape[1] != test_z.shape[1]:
        raise ValueError(
            f"expected (N, D) train and test features with the same D, got "
            f"{tuple(train_z.shape)} and {tuple(test_z.shape)}"
        )
    if train_z.shape[0] != train_y.shape[0] or test_z.shape[0] != test_y.shape[0]:
        raise ValueError("features and labels must have the same number of rows")
    if num_classes is None:
        num_classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
    if isinstance(weight_decay, (int, float)):
        chosen = float(weight_decay)
    else:
        chosen = select_weight_decay(
            train_z, train_y, num_classes, tuple(weight_decay), max_iter=max_iter, seed=seed
        )
    params = fit_logistic_regression(train_z, train_y, num_classes, chosen, max_iter)
    logits = _logits(test_z, *params)
    y = test_y.long().to(logits.device)
    cross_entropy = float(F.cross_entropy(logits.double(), y))
    entropy = label_entropy(test_y, num_classes)
    bound = entropy - cross_entropy
    return {
        "label_entropy_nats": entropy,
        "cross_entropy_nats": cross_entropy,
        "mi_lower_bound_nats": bound,
        "label_entropy_bits": entropy / LN2,
        "cross_entropy_bits": cross_entropy / LN2,
        "mi_lower_bound_bits": bound / LN2,
        "test_accuracy": float((logits.argmax(dim=1) == y).float().mean()),
        "weight_decay": chosen,
        "num_classes": int(num_classes),
        "num_train": int(train_z.shape[0]),
        "num_test": int(test_z.shape[0]),
    }
