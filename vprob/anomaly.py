"""One-class anomaly detection: train on the images of one class, score the whole test set, AUROC.

The protocol of docs/maths.md, VJE (one-class CIFAR-10: train on the 5,000 training images of one class,
score all 10,000 test images, AUROC per class and the mean over the 10 classes), for any data set of
the engine. Training goes through :class:`vprob.train.Trainer` with ``TrainConfig.normal_class`` set, so
the run folder, checkpoints and metrics are those of an ordinary run.

Scores, all "higher = more anomalous", computed side by side on the same trained model:

* ``likelihood`` (methods that declare anomaly scores: VJE): the negative representation-space
  log-likelihood of a test image, averaged over ``num_pairs`` pairs of augmented views
  (:meth:`vprob.models.VJE.anomaly_scores`), as the density of the target's polar coordinates (log r, u)
  **(choice)**; ``likelihood_cartesian``: the same as a density on R^D, which adds D log r (see
  :meth:`vprob.models.VJE.pair_nll` for why that is worse);
* ``log_det`` (methods with uncertainty scores: VJE, VSimCLR): the log determinant of the posterior
  covariance, VCL's uncertainty score (VJE: sum_k log nu_k; VCL: sum_k log sigma_k^2), on the clean image;
* ``knn`` (every model): a baseline on the same point embeddings (``model.embed``): the cosine distance
  1 - cos to the k-th nearest embedding of the normal training images (k = ``knn_k``, default 1 (choice)).

AUROC (:func:`vprob.diagnostics.uncertainty.auroc`): in = the normal class, out = every other class;
0.5 is chance. Results go to ``anomaly.json`` in the run folder (one subfolder ``class_K`` per trained
model).

Every unsupervised method of the registry can be trained one-class (a supervised objective has nothing to
contrast with a single class). Measured on digits (CPU, seeds 0-2, the data set's one-class defaults: 100
epochs of batch 32, 8 pairs, k = 1; ``benchmarks/vje_ablation.py``, BENCHMARKS.md), mean AUROC over the 10
classes with VJE's angular tangent scale: likelihood 0.862 +- 0.007, log_det 0.624, knn 0.874: on digits the
kNN baseline still matches VJE's best score.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vprob.checkpoint import CHECKPOINT_NAME
from vprob.config import TrainConfig, default_run_dir, with_anomaly_defaults
from vprob.data import SimCLRAugment, check_image_batch, get_dataset
from vprob.diagnostics.uncertainty import auroc
from vprob.engine.loader import check_class_index
from vprob.evaluate import map_batches
from vprob.jsonio import write_json_atomic
from vprob.methods import get_method, methods_with
from vprob.train import Trainer, TrainingPaused

SCORES = ("likelihood", "likelihood_cartesian", "log_det", "knn")
RESULTS_NAME = "anomaly.json"


def anomaly_methods() -> tuple[str, ...]:
    """The registered methods the one-class protocol trains: those that need no labels."""
    return methods_with(needs_labels=False)


def knn_distance(normal_embeddings: Tensor, test_embeddings: Tensor, k: int = 1) -> Tensor:
    """Cosine distance 1 - cos of each test embedding (M, d) to its k-th nearest normal embedding (N, d):
    (M,). Rows need not be normalized (they are normalized here)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= normal_embeddings.shape[0]:
        raise ValueError(
            f"knn_k must be an integer in 1..{normal_embeddings.shape[0]} (the normal training "
            f"images), got {k!r}"
        )
    normal = F.normalize(normal_embeddings.float(), dim=-1)
    similarity = F.normalize(test_embeddings.float(), dim=-1) @ normal.T
    return 1.0 - similarity.topk(k, dim=1).values[:, -1]


@torch.no_grad()
def anomaly_scores(
    model: nn.Module,
    normal_images: Tensor,
    test_images: Tensor,
    augment: SimCLRAugment,
    num_pairs: int = 8,
    knn_k: int = 1,
    generator: torch.Generator | None = None,
    batch_size: int = 512,
) -> dict[str, Tensor]:
    """Every score the model supports (module docstring) for uint8 ``test_images`` (M, C, H, W):
    ``{name: (M,) float32}``, higher = more anomalous.

    ``normal_images`` (N, C, H, W) are the normal training images (the kNN reference set); both sets must
    have the image shape the model was trained on. ``augment`` gives the views of the likelihood score
    and its ``normalize`` the clean inputs; ``generator`` (on the images' device) draws the views. The
    model is scored in eval mode (its mode is restored afterwards).
    """
    check_image_batch(normal_images, "normal_images", non_empty=True)
    check_image_batch(test_images, "test_images", non_empty=True)
    if test_images.shape[1:] != normal_images.shape[1:]:
        raise ValueError(
            f"test images have shape (C, H, W) = {tuple(test_images.shape[1:])} but the model "
            f"was trained on {tuple(normal_images.shape[1:])}"
        )
    expected = (augment.channels, augment.image_size, augment.image_size)
    if tuple(test_images.shape[1:]) != expected:
        raise ValueError(
            f"images of shape (C, H, W) = {tuple(test_images.shape[1:])} do not match the "
            f"augmentation's {expected}"
        )
    was_training = model.training
    model.eval()
    try:
        normalize = augment.normalize
        scores: dict[str, Tensor] = {}
        if callable(getattr(model, "anomaly_scores", None)):
            likelihood = model.anomaly_scores(
                test_images, augment, num_pairs=num_pairs, generator=generator, batch_size=batch_size
            )
            scores["likelihood"] = likelihood["nll"]
            scores["likelihood_cartesian"] = likelihood["nll_cartesian"]
        if callable(getattr(model, "uncertainty", None)):

            def log_det(x: Tensor) -> Tensor:
                return model.uncertainty(x)["log_det"]

            scores["log_det"] = map_batches(log_det, test_images, normalize, batch_size)
        normal = map_batches(model.embed, normal_images, normalize, batch_size)
        test = map_batches(model.embed, test_images, normalize, batch_size)
        scores["knn"] = knn_distance(normal, test, knn_k)
    finally:
        model.train(was_training)
    return {name: value.float() for name, value in scores.items()}


def one_class_aurocs(scores: dict[str, Tensor], labels: Tensor, normal_class: int) -> dict[str, float]:
    """AUROC of each score (M,) for telling the other classes (anomalies) from ``normal_class``."""
    normal = labels == normal_class
    if not bool(normal.any()) or bool(normal.all()):
        raise ValueError(f"the test labels need images of class {normal_class} and of other classes")
    normal = normal.to(next(iter(scores.values())).device)
    return {name: auroc(value[normal], value[~normal]) for name, value in scores.items()}


def _anomaly_config(config: TrainConfig) -> TrainConfig:
    """``config`` with the data set's one-class defaults where it leaves epochs or batch size open; other
    open fields take the data set's training defaults later."""
    if get_method(config.method).capabilities.needs_labels:
        raise ValueError(
            f"anomaly detection trains methods that need no labels "
            f"({', '.join(anomaly_methods())}), got {config.method!r}"
        )
    return with_anomaly_defaults(config)


def run_one_class(
    config: TrainConfig,
    normal_class: int,
    num_pairs: int = 8,
    knn_k: int = 1,
    progress: bool | None = None,
    resume: bool = False,
    stop_after_s: float | None = None,
) -> dict[str, Any]:
    """Train on the training images of ``normal_class`` and score the whole test split.

    ``config.run_dir`` is the class's run folder. Returns (and writes to ``anomaly.json`` there) the AUROC
    of each score, the test-set counts and the run folder. ``resume``: continue the run folder's checkpoint
    if it has one; ``stop_after_s``: the training time budget of :meth:`vprob.train.Trainer.fit` (raises
    :class:`vprob.train.TrainingPaused` when it stops early).
    """
    config = replace(_anomaly_config(config), normal_class=normal_class)
    has_checkpoint = config.run_dir is not None and (Path(config.run_dir) / CHECKPOINT_NAME).is_file()
    trainer = Trainer(config, resume=resume and has_checkpoint, progress=progress)
    trainer.fit(stop_after_s=stop_after_s)
    test_set = trainer.test_set
    generator = torch.Generator(trainer.device).manual_seed(config.seed + 1)
    autocast = (
        torch.autocast(trainer.device.type, dtype=torch.bfloat16) if trainer.amp else contextlib.nullcontext()
    )
    with autocast:
        scores = anomaly_scores(
            trainer.model,
            trainer.train_set.images,
            test_set.images,
            trainer.augment,
            num_pairs=num_pairs,
            knn_k=knn_k,
            generator=generator,
        )
    normal = test_set.labels == normal_class
    results = {
        "normal_class": normal_class,
        "class_name": test_set.classes[normal_class],
        "auroc": one_class_aurocs(scores, test_set.labels, normal_class),
        "train_images": len(trainer.train_set),
        "test_normal": int(normal.sum()),
        "test_anomalous": int((~normal).sum()),
        "run_dir": str(trainer.run_dir),
    }
    write_json_atomic(trainer.run_dir / RESULTS_NAME, results)
    return results


def run_anomaly(
    config: TrainConfig,
    normal_classes: Sequence[int] | None = None,
    num_pairs: int = 8,
    knn_k: int = 1,
    progress: bool | None = None,
    resume: bool = False,
    stop_after_s: float | None = None,
) -> dict[str, Any]:
    """The one-class protocol for each of ``normal_classes`` (``None``: every class of the data set).

    Each class trains its own model in ``RUN_DIR/class_K``; ``RUN_DIR/anomaly.json`` gets every class's
    AUROCs and their mean per score (``mean_auroc``). ``RUN_DIR`` is ``config.run_dir`` or
    ``runs/anomaly-METHOD-DATA-TIMESTAMP``. Invalid classes are refused before any training.

    ``resume`` (needs ``config.run_dir``): classes whose ``class_K/anomaly.json`` exists are read back, a
    class with a checkpoint continues it, the rest start. ``stop_after_s``: a training time budget for the
    whole call, shared by the classes in turn; when it runs out, :class:`vprob.train.TrainingPaused` is
    raised at a checkpoint and the same call with ``resume=True`` continues.
    """
    config = _anomaly_config(config).resolved()
    for name, value in (("num_pairs", num_pairs), ("knn_k", knn_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    # The class names (and count) of the data set, to check the classes before any training.
    classes = get_dataset(config.data).classes(config.data_dir)
    if normal_classes is None:
        normal_classes = range(len(classes))
    normal_classes = list(normal_classes)
    if not normal_classes:
        raise ValueError("normal_classes is empty")
    for k in normal_classes:
        check_class_index(k, classes)
    if resume and not config.run_dir:
        raise ValueError("resume needs the run folder of the one-class runs (config.run_dir / --run-dir)")
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config, prefix="anomaly-")
    started = time.perf_counter()
    per_class = []
    for k in normal_classes:
        class_dir = run_dir / f"class_{k}"
        if resume and (class_dir / RESULTS_NAME).is_file():
            per_class.append(json.loads((class_dir / RESULTS_NAME).read_text()))
            continue
        budget = None if stop_after_s is None else stop_after_s - (time.perf_counter() - started)
        if budget is not None and budget <= 0:
            raise TrainingPaused(
                f"time budget of {stop_after_s:.0f} s spent before class {k}; the classes "
                f"before it are done in {run_dir}: run again with resume to continue"
            )
        class_config = replace(config, run_dir=str(class_dir))
        per_class.append(
            run_one_class(
                class_config,
                k,
                num_pairs=num_pairs,
                knn_k=knn_k,
                progress=progress,
                resume=resume,
                stop_after_s=budget,
            )
        )
    names = list(per_class[0]["auroc"])
    summary = {
        "method": config.method,
        "data": config.data,
        "num_pairs": num_pairs,
        "knn_k": knn_k,
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "classes": per_class,
        "mean_auroc": {name: sum(r["auroc"][name] for r in per_class) / len(per_class) for name in names},
        "run_dir": str(run_dir),
    }
    write_json_atomic(run_dir / RESULTS_NAME, summary)
    return summary
