"""The training engine: one short loop for every method, the data set on the device, augmentation there.

Following airbench, the whole training set lives on the device as uint8; a :class:`DeviceLoader` owns the
permutation and batching, a :class:`ViewMaker` draws V augmented views with per-sample parameters in one
batched call, and a :class:`TrainStep` takes one optimizer step on the method's objective (for VCL and VJE
the Pyro model/guide pair through :func:`vprob.models.elbo.differentiable_loss`, Pyro's estimator without
its per-step host syncs). The :class:`RunFolder` holds the atomic checkpoints (model, optimizer,
scheduler, every RNG state and the step: a resumed run continues bit for bit on CPU) and ``metrics.jsonl``.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from vprob import distributed
from vprob.config import TrainConfig, build_model, data_options, default_run_dir
from vprob.data import augmentation_for
from vprob.devices import resolve_device
from vprob.engine import state
from vprob.engine.loader import DeviceLoader, ViewMaker, training_data
from vprob.engine.online_eval import OnlineKNN, auto_eval_every
from vprob.engine.progress import Progress
from vprob.engine.run_folder import RunFolder
from vprob.engine.step import NonFiniteLossError, NonFiniteTracker, TrainStep
from vprob.engine.tensorboard import MissingExtraError, summary_writer_class
from vprob.evaluate import evaluate_backbone
from vprob.methods import get_method
from vprob.optim import build_optimizer, warmup_cosine


class TrainingPaused(RuntimeError):
    """A time budget (``Trainer.fit(stop_after_s=...)``) ran out: training stopped at a checkpoint before
    the end, and resuming the run continues it exactly."""


def join_process_group(config: TrainConfig, device: torch.device) -> tuple[torch.device, int, int]:
    """Join torchrun's process group, if launched by it: each rank trains on its share of every global batch
    on its own device (``cuda:LOCAL_RANK``). Returns (device, world size, rank)."""
    if distributed.launched_by_torchrun() and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank())
        torch.cuda.set_device(device)
    distributed.init_from_env(device.type)
    world_size, rank = distributed.world_size(), distributed.rank()
    if world_size > 1 and not get_method(config.method).capabilities.distributed:
        raise ValueError(f"{config.method} has no multi-process form; train it in one process")
    if world_size > 1 and config.sync_bn and device.type != "cuda":
        raise ValueError("--sync-bn needs CUDA devices (torch's SyncBatchNorm does not run on CPU)")
    return device, world_size, rank


class Trainer:
    """One training run: ``Trainer(config).fit()`` trains, checkpoints, evaluates and returns the results.

    ``elbo``: for a variational method, the ELBO its objective evaluates (default: the method's own).
    """

    def __init__(
        self, config: TrainConfig, resume: bool = False, progress: bool | None = None, elbo: Any = None
    ) -> None:
        self.config = config = config.resolved()
        self.device, self.world_size, self.rank = join_process_group(config, resolve_device(config.device))
        on_cuda = self.device.type == "cuda"
        self.amp = on_cuda if config.amp is None else config.amp
        self.channels_last = on_cuda if config.channels_last is None else config.channels_last
        self.progress = progress
        if config.tensorboard:
            summary_writer_class()  # a missing extra fails here, before anything is written
        self.run = RunFolder(config.run_dir or default_run_dir(config), self.rank, self.world_size)
        self.run.prepare(asdict(config), resume)
        self.run_dir, self.checkpoint_path = self.run.path, self.run.checkpoint_path

        torch.manual_seed(config.seed)
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        data = training_data(
            config.data,
            config.data_dir,
            self.device,
            get_method(config.method).capabilities.needs_labels,
            config.normal_class,
            **data_options(config),
        )
        self.train_set, self.test_set, self.eval_sets = data.train, data.test, data.evaluation
        self.loader = DeviceLoader(
            self.train_set, config.batch_size, self.generator, self.world_size, self.rank
        )
        self.augment = augmentation_for(config.data, self.train_set)
        self.image_shape = tuple(self.train_set.images.shape[1:])
        self.model = self._build_model(init_from=None if resume else config.init_from)
        # Online kNN on the evaluation splits; off by default for one-class runs and unlabelled data.
        sets = self.eval_sets
        self.eval_every = auto_eval_every(
            config.eval_every, self.train_set, config.normal_class is not None or sets.skipped
        )
        if self.eval_every and sets.skipped:
            raise ValueError(f"eval_every: {sets.reason}")
        self.online_eval = (
            OnlineKNN(sets.train, sets.test, self.augment.normalize, amp=self.amp)
            if self.eval_every
            else None
        )
        self.views = ViewMaker(
            self.augment,
            self.model.num_views,
            self.generator,
            self.world_size,
            self.rank,
            self.channels_last,
            config.compile,
        )
        # The schedule always spans every epoch; max_steps only stops early (so a run stopped by it and
        # resumed later follows the same learning-rate curve as one that never stopped).
        schedule_steps = self.loader.steps_per_epoch * config.epochs
        self.total_steps = min(schedule_steps, config.max_steps or schedule_steps)
        self.optimizer = build_optimizer(config.optimizer, self.model, config.lr, config.weight_decay)
        warmup = min(config.warmup_epochs * self.loader.steps_per_epoch, schedule_steps // 2)
        self.scheduler = warmup_cosine(self.optimizer, schedule_steps, warmup)
        self.train_step = TrainStep(
            self.model,
            self.model.objective(elbo),
            self.optimizer,
            self.scheduler,
            self.amp,
            self.world_size,
            config.skip_nonfinite,
        )
        self.step = 0
        if resume:
            self.step = state.restore(
                self.run.load_checkpoint(map_location=self.device),
                config,
                self.model,
                self.optimizer,
                self.scheduler,
                self.generator,
            )
            self.run.truncate_metrics(self.step)

    def _build_model(self, init_from: str | None = None) -> nn.Module:
        model = build_model(self.config, gather=self.world_size > 1, image_shape=self.image_shape)
        if init_from is not None:
            from vprob.export import load_backbone_weights

            for note in load_backbone_weights(model.encoder, init_from):
                if self.rank == 0:
                    print(f"note: {note}", file=sys.stderr)
        if self.config.sync_bn and self.world_size > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.config.compile:
            model.encoder.compile()
        return model

    def save(self) -> None:
        self.run.save_checkpoint(
            state.capture(
                self.config,
                self.model,
                self.optimizer,
                self.scheduler,
                self.generator,
                self.step,
                self.image_shape,
            )
        )

    def fit(self, stop_after_s: float | None = None) -> dict[str, Any]:
        """Train to the end (or ``max_steps``), checkpoint, evaluate; returns the results dict.

        ``stop_after_s``: a time budget in seconds for this call's training (for jobs with a wall-clock
        limit). After each checkpoint, if the stretch to the next checkpoint (timed as the last one) would end
        past it, training stops there and :class:`TrainingPaused` is raised; nothing is evaluated and
        nothing is lost. Under torchrun, rank 0's clock decides for every rank.
        """
        if stop_after_s is not None and not stop_after_s > 0:
            raise ValueError(
                f"stop_after_s must be a positive number of seconds or None, got {stop_after_s!r}"
            )
        config, steps_per_epoch = self.config, self.loader.steps_per_epoch
        nonfinite = NonFiniteTracker()
        # On CUDA the finiteness check waits for log and checkpoint boundaries (no host sync per step); the
        # tracker keeps the first bad step, so no checkpoint is ever written after one.
        check_every = 1 if self.device.type == "cpu" else config.log_every
        self.model.train()
        with Progress(
            self.run,
            self.total_steps,
            self.step,
            config.batch_size,
            f"{config.method} {config.data}",
            self.progress,
            stop_after_s,
            config.tensorboard and self.rank == 0,
        ) as progress:
            start_step = self.step
            while self.step < self.total_steps:
                for images, labels in self.loader.epoch(self.step % steps_per_epoch):
                    if self.step >= self.total_steps:
                        break
                    stats = self.train_step(self.views(images), labels)
                    self.step += 1
                    if not config.skip_nonfinite:
                        nonfinite.record(self.step, stats)
                        if self.step % check_every == 0:
                            nonfinite.raise_if_any(self.checkpoint_path)
                    # Online kNN at the end of every eval_every-th epoch, logged with that step's record
                    # (before the checkpoint, so a resumed run keeps it and never evaluates twice).
                    eval_due = (
                        self.online_eval is not None
                        and self.step % steps_per_epoch == 0
                        and (self.step // steps_per_epoch) % self.eval_every == 0
                    )
                    if self.step % config.log_every == 0 or self.step == self.total_steps or eval_due:
                        extra = self.online_eval(self.model.encoder) if eval_due else {}
                        lr = self.scheduler.get_last_lr()[0]
                        progress.log(self.step, self.step / steps_per_epoch, lr, stats, extra)
                    progress.advance()
                epoch = self.step // steps_per_epoch
                if epoch % config.checkpoint_every == 0 or self.step >= self.total_steps:
                    nonfinite.raise_if_any(self.checkpoint_path)
                    self.save()
                    if self.step < self.total_steps and progress.out_of_time_after_checkpoint():
                        raise TrainingPaused(
                            f"paused at step {self.step} of {self.total_steps} after "
                            f"{progress.elapsed():.0f} s (budget {stop_after_s:.0f} s); checkpoint saved to "
                            f"{self.checkpoint_path}: resume the run to continue"
                        )
            results = self.evaluate()
            results.update(
                steps=self.step, steps_this_session=self.step - start_step, run_dir=str(self.run_dir)
            )
            progress.final(self.step, results)
        self.run.write_results(results)
        return results

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """kNN (cosine; weighted k = 200 and majority k = 10 by default) and linear-probe accuracy on
        frozen backbone features."""
        if self.eval_sets.skipped:
            return {"evaluation_skipped": self.eval_sets.reason}
        return evaluate_backbone(
            self.model.encoder,
            self.eval_sets.train,
            self.eval_sets.test,
            self.augment.normalize,
            knn_k=self.config.knn_k,
            device=self.device,
            amp=self.amp,
        )


def train(
    config: TrainConfig, resume: bool = False, progress: bool | None = None, stop_after_s: float | None = None
) -> dict[str, Any]:
    """Run (or resume) one training run and return its results (accuracies, run folder).

    ``stop_after_s``: a training time budget (see :meth:`Trainer.fit`); :class:`TrainingPaused` if it
    runs out before the end."""
    return Trainer(config, resume=resume, progress=progress).fit(stop_after_s=stop_after_s)


__all__ = ["MissingExtraError", "NonFiniteLossError", "Trainer", "TrainingPaused", "train"]
