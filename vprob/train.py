"""The training engine: one loop for every method, the data set on the device, augmentation batched there.

Following airbench, the whole training set lives on the device as uint8; each step indexes a batch, draws
V augmented views with per-sample random parameters on the device, and takes one optimizer step on the
method's objective (for VCL and VJE the Pyro model/guide pair, through
:func:`vprob.models.elbo.differentiable_loss`, Pyro's estimator without its per-step host syncs). Checkpoints
are atomic and hold everything needed to resume bit-for-bit on CPU (model, optimizer, scheduler, every RNG
state, the step). Metrics go to ``metrics.jsonl``, one JSON object a line.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import Tensor, nn

from vprob import distributed
from vprob.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint
from vprob.data import ImageSet, SimCLRAugment, load_dataset
from vprob.data.augment import AugmentParams
from vprob.evaluate import extract_features, knn_accuracy, linear_probe
from vprob.losses import value_checks
from vprob.models import KL_MODES, METHODS, VARIATIONAL_METHODS, build_model
from vprob.models.vje import check_options as check_vje_options
from vprob.nets import make_backbone
from vprob.optim import OPTIMIZERS, build_optimizer, warmup_cosine

DATASETS = ("digits", "cifar10")
# Methods whose loss has a gathered (multi-process) form: the SupCon family. CCT and VJE have none yet.
DISTRIBUTED_METHODS = ("simclr", "supcon", "projnce", "vsimclr", "vsupcon")

# Defaults per data set; every one can be overridden from the command line.
DATA_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": dict(backbone="digits_convnet", epochs=30, batch_size=256, dim=32, head_hidden=256,
                   optimizer="adamw", lr=2e-3, weight_decay=1e-4, warmup_epochs=2, tau=0.2),
    # The recipe of the single-file SimCLR yardstick (dkobak/simclr-cifar10): SGD, lr 0.03 x batch/256,
    # weight decay 5e-4, tau 0.5, a 1024-wide projector; LARS (tau 0.2, lr 0.6) gave 1.8 points less kNN
    # (k = 10) at 100 epochs on an H100 (BENCHMARKS.md).
    "cifar10": dict(backbone="resnet18_cifar", epochs=100, batch_size=512, dim=128, head_hidden=1024,
                    optimizer="sgd", lr=0.06, weight_decay=5e-4, warmup_epochs=2, tau=0.5),
}


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss or gradient."""


class TrainingPaused(RuntimeError):
    """A time budget (``Trainer.fit(stop_after_s=...)``) ran out: training stopped at a checkpoint before
    the end, and resuming the run continues it exactly."""


@dataclass
class TrainConfig:
    """Everything that defines a run. ``None`` fields take the data set's default (``DATA_DEFAULTS``).

    ``vje_*`` are the options of :class:`vprob.models.VJE` (``df``, ``radial_df``, ``radial_scale``,
    ``radial_weight``, ``directional``, ``num_particles``; VJE has no projector, so ``dim`` does not apply
    to it). ``normal_class``, if set, trains on the training images of that class only (the one-class
    anomaly protocol of :mod:`vprob.anomaly`); evaluation still uses the whole test split.
    """

    method: str = "vsimclr"
    data: str = "digits"
    data_dir: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    dim: int | None = None
    head_hidden: int | None = None
    backbone: str | None = None
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    warmup_epochs: int | None = None
    tau: float | None = None
    kl: str = "bound"
    beta: float = 1.0
    num_views: int = 2
    projection: str = "centroid"
    t_pos: float = 1.0
    t_neg: float = 0.9
    detach_weights: bool = False
    chunk_size: int | None = None
    device: str = "auto"
    seed: int = 0
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool = False
    checkpoint_every: int = 1
    log_every: int = 10
    skip_nonfinite: bool = False
    sync_bn: bool = False
    max_steps: int | None = None
    run_dir: str | None = None
    knn_k: tuple[int, ...] = field(default=(200, 10))
    vje_df: float = 5.0
    vje_radial_df: float | None = None
    vje_radial_scale: float = 1.0
    vje_radial_weight: float = 1.0
    vje_directional: str = "geodesic"
    vje_num_particles: int = 1
    normal_class: int | None = None

    def resolved(self) -> TrainConfig:
        """A copy with data-set defaults filled in and every choice validated."""
        if self.data not in DATASETS:
            raise ValueError(f"data must be one of {DATASETS}, got {self.data!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.kl not in KL_MODES:
            raise ValueError(f"kl must be one of {KL_MODES}, got {self.kl!r}")
        values = asdict(self)
        for key, default in DATA_DEFAULTS[self.data].items():
            if values[key] is None:
                values[key] = default
        config = TrainConfig(**values)
        if config.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {config.optimizer!r}")
        for name in ("epochs", "batch_size", "dim", "checkpoint_every", "log_every"):
            value = getattr(config, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "tau"):
            if not getattr(config, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(config, name)!r}")
        if config.method in VARIATIONAL_METHODS and config.num_views != 2:
            raise ValueError(f"{config.method} uses exactly 2 views, got num_views={config.num_views}")
        if config.method != "cct" and config.num_views != 2 and config.method not in ("simclr", "supcon"):
            raise ValueError(f"num_views != 2 is supported for simclr, supcon and cct, not {config.method}")
        check_vje_options(df=config.vje_df, radial_df=config.vje_radial_df,
                          radial_weight=config.vje_radial_weight, radial_scale=config.vje_radial_scale,
                          directional=config.vje_directional, num_particles=config.vje_num_particles,
                          prefix="vje_")
        if config.normal_class is not None and (
            isinstance(config.normal_class, bool) or not isinstance(config.normal_class, int)
            or config.normal_class < 0
        ):
            raise ValueError(f"normal_class must be a class index >= 0 or None, got {config.normal_class!r}")
        return config


def check_class_index(normal_class: int, classes: tuple[str, ...]) -> None:
    """ValueError naming ``normal_class`` and the valid range unless it indexes ``classes``."""
    if isinstance(normal_class, bool) or not isinstance(normal_class, int) or not (
        0 <= normal_class < len(classes)
    ):
        raise ValueError(
            f"normal class {normal_class!r} does not exist: valid class indices are "
            f"0..{len(classes) - 1} ({', '.join(classes)})"
        )


def one_class_subset(image_set: ImageSet, normal_class: int) -> ImageSet:
    """The images of one class (``check_class_index`` first)."""
    check_class_index(normal_class, image_set.classes)
    return image_set.subset(image_set.labels == normal_class)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:  # torch's own message; a user error, not a crash
        raise ValueError(f"unknown device {name!r} (use auto, cpu, cuda, cuda:1, ...): {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA device is available")
    return device


def default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.method}-{config.data}-{time.strftime('%Y%m%d-%H%M%S')}"


def build_run_model(config: TrainConfig, gather: bool = False) -> nn.Module:
    """The model of a resolved config (backbone + method), on CPU; ``gather``: contrast against every
    process's embeddings (multi-process training)."""
    encoder = make_backbone(config.backbone)
    return build_model(
        config.method, encoder, config.dim, kl=config.kl, beta=config.beta, tau=config.tau,
        head_hidden=config.head_hidden, num_views=config.num_views, projection=config.projection,
        t_pos=config.t_pos, t_neg=config.t_neg, detach_weights=config.detach_weights,
        chunk_size=config.chunk_size, df=config.vje_df, radial_df=config.vje_radial_df,
        radial_scale=config.vje_radial_scale, radial_weight=config.vje_radial_weight,
        directional=config.vje_directional, num_particles=config.vje_num_particles,
        **({"gather": True} if gather else {}),
    )


class Trainer:
    """One training run. ``Trainer(config).fit()`` trains, checkpoints, evaluates and returns the results."""

    def __init__(self, config: TrainConfig, resume: bool = False, progress: bool | None = None) -> None:
        self.config = config = config.resolved()
        self.device = resolve_device(config.device)
        self._init_distributed()
        on_cuda = self.device.type == "cuda"
        self.amp = on_cuda if config.amp is None else config.amp
        self.channels_last = on_cuda if config.channels_last is None else config.channels_last
        self.progress = progress
        self.run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
        self.checkpoint_path = self.run_dir / CHECKPOINT_NAME
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._prepare_run_dir(resume)

        torch.manual_seed(config.seed)
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        self.train_set, self.test_set = load_dataset(config.data, config.data_dir, device=self.device)
        if config.normal_class is not None:
            self.train_set = one_class_subset(self.train_set, config.normal_class)
        if len(self.train_set) < config.batch_size:
            raise ValueError(
                f"batch_size {config.batch_size} exceeds the {len(self.train_set)} training images"
            )
        self.augment = SimCLRAugment.for_dataset(config.data, self.train_set)
        # The colour jitter is dozens of small elementwise kernels: compiling fuses them.
        self._augment_apply = torch.compile(self.augment.apply) if config.compile else self.augment.apply
        self.model = build_run_model(config, gather=self.world_size > 1)
        if config.sync_bn and self.world_size > 1:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model = self.model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if config.compile:
            self.model.encoder.compile()
        self.elbo = self.model.elbo() if config.method in VARIATIONAL_METHODS else None
        self.steps_per_epoch = len(self.train_set) // config.batch_size
        # The schedule always spans every epoch; max_steps only stops early (so a run stopped by it and
        # resumed later follows the same learning-rate curve as one that never stopped).
        schedule_steps = self.steps_per_epoch * config.epochs
        self.total_steps = schedule_steps
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.optimizer = build_optimizer(config.optimizer, self.model, config.lr, config.weight_decay)
        warmup = config.warmup_epochs * self.steps_per_epoch
        self.scheduler = warmup_cosine(self.optimizer, schedule_steps, min(warmup, schedule_steps // 2))
        self.step = 0
        self._nonfinite: Tensor | None = None
        if resume:
            self._restore(load_checkpoint(self.checkpoint_path, map_location=self.device))

    # ----------------------------------------------------------------------------------------------
    def _init_distributed(self) -> None:
        """Join torchrun's process group, if launched by it: each rank then trains on its shard of every
        global batch (``batch_size`` is global) on its own device (``cuda:LOCAL_RANK``)."""
        config = self.config
        if distributed.launched_by_torchrun() and self.device.type == "cuda":
            self.device = torch.device("cuda", distributed.local_rank())
            torch.cuda.set_device(self.device)
        distributed.init_from_env(self.device.type)
        self.world_size, self.rank = distributed.world_size(), distributed.rank()
        if self.world_size == 1:
            return
        if config.method not in DISTRIBUTED_METHODS:
            raise ValueError(f"{config.method} has no multi-process form; use one of {DISTRIBUTED_METHODS}")
        if config.batch_size % self.world_size:
            raise ValueError(f"batch_size {config.batch_size} (global) must be divisible by the "
                             f"{self.world_size} processes")
        if config.sync_bn and self.device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA devices (torch's SyncBatchNorm does not run on CPU)")

    def _prepare_run_dir(self, resume: bool) -> None:
        """Rank 0 checks and prepares the run folder; every rank stops with its error if it fails."""
        error = None
        if self.rank == 0:
            try:
                self._prepare_run_dir_here(resume)
            except (OSError, CheckpointError) as exc:
                error = f"{type(exc).__name__}: {exc}"
                if self.world_size == 1:
                    raise
        error = distributed.broadcast_error(error)
        if error is not None:
            raise CheckpointError(f"rank 0 could not prepare the run folder: {error}")
        if resume and not self.checkpoint_path.is_file():
            # Every rank reads the checkpoint: on several machines the run folder must be shared storage.
            raise CheckpointError(f"--resume: rank {self.rank} sees no checkpoint at {self.checkpoint_path} "
                                  "(several machines need the run folder on shared storage)")

    def _prepare_run_dir_here(self, resume: bool) -> None:
        run_dir = self.run_dir
        if resume:
            if not self.checkpoint_path.is_file():
                raise CheckpointError(f"--resume: no checkpoint at {self.checkpoint_path}")
            return
        if self.checkpoint_path.exists():
            raise CheckpointError(
                f"{run_dir} already holds a checkpoint; pass --resume to continue it or choose another "
                "--run-dir (it is never overwritten by a new run)"
            )
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            probe = run_dir / ".write-test"
            probe.write_bytes(b"0" * 4096)
            probe.unlink()
        except OSError as exc:
            raise OSError(f"run folder {run_dir} is not writable: {exc}") from exc
        (run_dir / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        self.metrics_path.write_text("")

    def _state(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "generator": self.generator.get_state(),
            },
        }

    def _restore(self, state: dict[str, Any]) -> None:
        saved = state.get("config", {})
        for key in ("method", "data", "dim", "backbone", "batch_size", "epochs", "kl", "num_views",
                    "normal_class"):
            if saved.get(key) != getattr(self.config, key):
                raise CheckpointError(
                    f"checkpoint was written with {key}={saved.get(key)!r}, this run has "
                    f"{key}={getattr(self.config, key)!r}; resume with the same settings"
                )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint does not match this model: {exc}") from exc
        self.step = int(state["step"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        self.generator.set_state(rng["generator"].cpu())
        if self.rank == 0:
            self._truncate_metrics(self.step)

    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines written after the checkpoint we resume from (they will be written again)."""
        if not self.metrics_path.exists():
            return
        kept = [line for line in self.metrics_path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        tmp = self.metrics_path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.metrics_path)

    def save(self) -> None:
        """Rank 0 writes the checkpoint (every rank holds the same state)."""
        if self.rank == 0:
            save_checkpoint(self.checkpoint_path, self._state())
        distributed.barrier()

    # ----------------------------------------------------------------------------------------------
    def views(self, images: Tensor) -> Tensor:
        """V augmented views (V, B, C, H, W) of a uint8 batch (B, C, H, W)."""
        num_views, (batch, _, height, width) = self.config.num_views, images.shape
        # All views in one batched call (each copy draws its own parameters): half the kernel launches.
        copies = images.repeat(num_views, 1, 1, 1)
        # Every rank draws the parameters of the whole global batch (same generator state everywhere) and
        # takes its rows: its views are exactly those a single process would make of its images.
        params = self.augment.sample_params(len(copies) * self.world_size, height, width, self.generator,
                                            images.device)
        if self.world_size > 1:
            params = _take_rows(params, self._shard_rows(num_views, batch, images.device))
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        views = self._augment_apply(copies, params, memory_format=memory_format)
        return views.view(num_views, batch, *views.shape[1:])

    def _shard_rows(self, num_views: int, batch: int, device: torch.device) -> Tensor:
        """Rows of this rank's images in the (V x global batch) parameter table of ``views``."""
        global_batch = batch * self.world_size
        own = self.rank * batch + torch.arange(batch, device=device)
        return (torch.arange(num_views, device=device).unsqueeze(1) * global_batch + own).flatten()

    def _shard(self, global_batch: Tensor) -> Tensor:
        """This rank's contiguous share of a global batch of indices (the whole batch in one process)."""
        per_rank = len(global_batch) // self.world_size
        return global_batch[self.rank * per_rank:(self.rank + 1) * per_rank]

    def _reduce_stats(self, stats: dict[str, Tensor]) -> dict[str, Tensor]:
        """The mean of each scalar stat over ranks (equal shards: the global batch's mean), one collective."""
        if self.world_size == 1:
            return stats
        values = torch.stack([value.float().reshape(()) for value in stats.values()])
        distributed.all_reduce_mean_([values])
        return dict(zip(stats, values.unbind(), strict=True))

    def training_step(self, images: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """One optimizer step; returns the loss and its parts (detached, on the device)."""
        views = self.views(images)
        # Argument validation (Pyro's and the losses' NaN checks) syncs host and device several times a
        # step and raises before the engine can name the step; the engine tracks non-finite values itself
        # (see fit), so the hot loop runs without it, as Pyro recommends once a model is debugged.
        with (
            value_checks(False),
            pyro.validation_enabled(False),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp),
        ):
            if self.elbo is not None:
                loss, stats = self.model.training_loss(views, labels, elbo=self.elbo)
            else:
                loss, stats = self.model.training_loss(views, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        # Average over ranks (what DDP does; plain all_reduce also works for the Pyro pairs). With the
        # gathered losses this is the single-process gradient of the whole global batch.
        distributed.all_reduce_mean_(grads)
        grad_norm = torch.nn.utils.get_total_norm(grads)
        stats = self._reduce_stats({"loss": loss.detach(), **stats})
        stats["grad_norm"] = grad_norm.detach()
        loss = stats["loss"]
        if self.config.skip_nonfinite and not bool(torch.isfinite(loss) & torch.isfinite(grad_norm)):
            stats["skipped"] = torch.ones((), device=loss.device)
        else:
            self.optimizer.step()
        self.scheduler.step()
        return loss, stats

    def fit(self, stop_after_s: float | None = None) -> dict[str, Any]:
        """Train to the end (or ``max_steps``), checkpoint, evaluate; returns the results dict.

        ``stop_after_s``: a time budget in seconds for this call's training (for jobs with a wall-clock
        limit). After each checkpoint, if the stretch to the next checkpoint (timed as the last one) would end
        past it, training stops there and :class:`TrainingPaused` is raised; nothing is evaluated and
        nothing is lost. Under torchrun, rank 0's clock decides for every rank.
        """
        from tqdm.auto import tqdm

        if stop_after_s is not None and not stop_after_s > 0:
            raise ValueError(f"stop_after_s must be a positive number of seconds or None, "
                             f"got {stop_after_s!r}")
        config = self.config
        fit_start = last_save = time.perf_counter()
        self.model.train()
        show = sys.stderr.isatty() if self.progress is None else self.progress
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not show, unit="step",
                   desc=f"{config.method} {config.data}", dynamic_ncols=True)
        start_step = self.step
        window_start, window_step = time.perf_counter(), self.step
        epoch = self.step // self.steps_per_epoch
        # On CUDA the finiteness check is deferred to log and checkpoint boundaries (no host sync per
        # step); a device-side record keeps the first bad step and its terms, so the message stays exact
        # and no checkpoint is ever written after a non-finite step.
        check_every = 1 if self.device.type == "cpu" else config.log_every
        # Rank 0 writes the metrics (already reduced over ranks); the others write nowhere.
        with (self.metrics_path if self.rank == 0 else Path(os.devnull)).open("a") as metrics:
            while self.step < self.total_steps:
                order = torch.randperm(len(self.train_set), generator=self.generator, device=self.device)
                first = self.step - epoch * self.steps_per_epoch
                for index in range(first, self.steps_per_epoch):
                    if self.step >= self.total_steps:
                        break
                    batch = self._shard(order[index * config.batch_size:(index + 1) * config.batch_size])
                    _, stats = self.training_step(self.train_set.images[batch], self.train_set.labels[batch])
                    self.step += 1
                    if not config.skip_nonfinite:
                        self._record_nonfinite(stats)
                        if self.step % check_every == 0:
                            self._raise_if_nonfinite()
                    if self.step % config.log_every == 0 or self.step == self.total_steps:
                        if self.device.type == "cuda":
                            torch.cuda.synchronize()
                        now = time.perf_counter()
                        rate = (self.step - window_step) * config.batch_size / max(now - window_start, 1e-9)
                        window_start, window_step = now, self.step
                        record = {"step": self.step, "epoch": self.step / self.steps_per_epoch,
                                  "lr": self.scheduler.get_last_lr()[0], "images_per_s": rate}
                        record.update({k: float(v) for k, v in stats.items()})
                        metrics.write(json.dumps(record) + "\n")
                        metrics.flush()
                        bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{rate:,.0f}")
                    bar.update(1)
                epoch += 1
                if epoch % config.checkpoint_every == 0 or self.step >= self.total_steps:
                    self._raise_if_nonfinite()
                    self.save()
                    now = time.perf_counter()
                    elapsed, last_stretch = now - fit_start, now - last_save
                    # The stretch to the next checkpoint is assumed to take as long as the last one.
                    if stop_after_s is not None and self.step < self.total_steps and (
                            distributed.broadcast_from_rank0(elapsed + last_stretch > stop_after_s)):
                        bar.close()
                        raise TrainingPaused(
                            f"paused at step {self.step} of {self.total_steps} after {elapsed:.0f} s "
                            f"(budget {stop_after_s:.0f} s); checkpoint saved to {self.checkpoint_path}: "
                            "resume the run to continue")
                    last_save = now
        bar.close()
        elapsed_steps = self.step - start_step
        results = self.evaluate()
        results.update(steps=self.step, steps_this_session=elapsed_steps, run_dir=str(self.run_dir))
        if self.rank == 0:
            write_json_atomic(self.run_dir / "results.json", results)
            from vprob.plots import plot_training_curves

            plot_training_curves(self.metrics_path, self.run_dir / "loss_curve.png")
        return results

    def _record_nonfinite(self, stats: dict[str, Tensor]) -> None:
        names = [name for name in stats if name != "skipped"]
        nonfinite = torch.stack([~torch.isfinite(stats[name]).all() for name in names])
        if self._nonfinite is None:
            self._nonfinite_names = names
            self._nonfinite = torch.zeros_like(nonfinite)
            self._nonfinite_step = torch.zeros((), dtype=torch.long, device=nonfinite.device)
        first = ~self._nonfinite.any() & nonfinite.any()
        self._nonfinite = torch.where(first, nonfinite, self._nonfinite)
        self._nonfinite_step = torch.where(first, torch.full_like(self._nonfinite_step, self.step),
                                           self._nonfinite_step)

    def _raise_if_nonfinite(self) -> None:
        if self._nonfinite is None or not bool(self._nonfinite.any()):
            return
        flags = self._nonfinite.tolist()
        bad = [name for name, flag in zip(self._nonfinite_names, flags, strict=True) if flag]
        raise NonFiniteLossError(
            f"non-finite value at step {int(self._nonfinite_step)} in {', '.join(bad)}; the last good "
            f"checkpoint ({self.checkpoint_path}) is left untouched. Lower the learning rate, or pass "
            "--skip-nonfinite to skip such steps."
        )

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """kNN (cosine; weighted k = 200 and majority k = 10 by default) and linear-probe accuracy on
        frozen backbone features."""
        return evaluate_backbone(self.model.encoder, self.train_set, self.test_set, self.augment,
                                 self.config, self.device, self.amp)


def evaluate_backbone(encoder: nn.Module, train_set: ImageSet, test_set: ImageSet, augment: SimCLRAugment,
                      config: TrainConfig, device: torch.device, amp: bool) -> dict[str, Any]:
    dtype = torch.bfloat16 if amp else None
    train_features = extract_features(encoder, train_set.images, augment.normalize, device=device,
                                      autocast_dtype=dtype)
    test_features = extract_features(encoder, test_set.images, augment.normalize, device=device,
                                     autocast_dtype=dtype)
    results: dict[str, Any] = {}
    for k in config.knn_k:
        weighted = k > 10
        key = f"knn_top1_k{k}_{'weighted' if weighted else 'majority'}"
        results[key] = knn_accuracy(train_features, train_set.labels, test_features, test_set.labels,
                                    k=k, weighted=weighted, num_classes=train_set.num_classes)
    results["linear_top1"] = linear_probe(train_features, train_set.labels, test_features, test_set.labels,
                                          device=device, seed=config.seed)
    return results


def _take_rows(params: AugmentParams, rows: Tensor) -> AugmentParams:
    return AugmentParams(**{f.name: getattr(params, f.name)[rows] for f in fields(params)})


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a dict (e.g. a run's config.json); unknown keys are refused."""
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    values = dict(values)
    if "knn_k" in values:
        values["knn_k"] = tuple(values["knn_k"])
    return TrainConfig(**values)


def evaluate_run(run_dir: str | Path, data_dir: str | None = None, device: str = "auto") -> dict[str, Any]:
    """Evaluate the checkpoint of a finished or interrupted run; writes ``eval.json`` beside it."""
    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    config = config_from_dict(state["config"])
    if data_dir is not None:
        config.data_dir = data_dir
    config = config.resolved()
    torch_device = resolve_device(device)
    model = build_run_model(config)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint does not match its own config: {exc}") from exc
    model.to(torch_device)
    train_set, test_set = load_dataset(config.data, config.data_dir, device=torch_device)
    augment = SimCLRAugment.for_dataset(config.data, train_set)
    results = evaluate_backbone(model.encoder, train_set, test_set, augment, config, torch_device,
                                amp=torch_device.type == "cuda")
    results.update({"steps": int(state["step"]), "run_dir": str(run_dir)})
    write_json_atomic(run_dir / "eval.json", results)
    return results


def train(config: TrainConfig, resume: bool = False, progress: bool | None = None,
          stop_after_s: float | None = None) -> dict[str, Any]:
    """Run (or resume) one training run and return its results (accuracies, run folder).

    ``stop_after_s``: a training time budget (see :meth:`Trainer.fit`); :class:`TrainingPaused` if it
    runs out before the end."""
    return Trainer(config, resume=resume, progress=progress).fit(stop_after_s=stop_after_s)
