"""One optimizer step of any method's objective, and the bookkeeping of non-finite values.

The objective is passed in: ``objective(views, labels) -> (loss, stats)`` (by default the method's
``training_loss``; a benchmark may pass another evaluation of the same ELBO). Argument validation (Pyro's
and the losses' NaN checks) syncs host and device several times a step and raises before the engine can
name the step, so the step runs without it, as Pyro recommends once a model is debugged, and
:class:`NonFiniteTracker` keeps the first bad step on the device instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pyro
import torch
from torch import Tensor, nn

from vprob import distributed
from vprob.losses import value_checks

Objective = Callable[[Tensor, Tensor | None], tuple[Tensor, dict[str, Tensor]]]


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss or gradient."""


class TrainStep:
    """``step(views, labels) -> stats``: forward under autocast, backward, gradients averaged over processes,
    optimizer and scheduler steps. Stats are detached device scalars (``loss``, the objective's parts,
    ``grad_norm``, and ``skipped`` when ``skip_nonfinite`` skipped the update)."""

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        amp: bool,
        world_size: int = 1,
        skip_nonfinite: bool = False,
    ) -> None:
        self.model, self.objective, self.optimizer, self.scheduler = model, objective, optimizer, scheduler
        self.amp, self.world_size, self.skip_nonfinite = amp, world_size, skip_nonfinite

    def __call__(self, views: Tensor, labels: Tensor) -> dict[str, Tensor]:
        with (
            value_checks(False),
            pyro.validation_enabled(False),
            torch.autocast(views.device.type, dtype=torch.bfloat16, enabled=self.amp),
        ):
            loss, stats = self.objective(views, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        # Average over processes (what DDP does): with the gathered losses this is the single-process
        # gradient of the whole global batch.
        distributed.all_reduce_mean_(grads)
        grad_norm = torch.nn.utils.get_total_norm(grads)
        stats = self._mean_over_processes({"loss": loss.detach(), **stats})
        stats["grad_norm"] = grad_norm.detach()
        if self.skip_nonfinite and not bool(torch.isfinite(stats["loss"]) & torch.isfinite(grad_norm)):
            stats["skipped"] = grad_norm.new_ones(())  # float32, on the device
        else:
            self.optimizer.step()
        self.scheduler.step()
        return stats

    def _mean_over_processes(self, stats: dict[str, Tensor]) -> dict[str, Tensor]:
        """Each scalar's mean over processes (equal shards: the global batch's mean), in one collective."""
        if self.world_size == 1:
            return stats
        values = torch.stack([value.float().reshape(()) for value in stats.values()])
        distributed.all_reduce_mean_([values])
        return dict(zip(stats, values.unbind(), strict=True))


class NonFiniteTracker:
    """The first step whose stats hold a non-finite value, recorded on the device (no host sync per step);
    :meth:`raise_if_any` syncs once and names the step and the values."""

    def __init__(self) -> None:
        self._flags: Tensor | None = None

    def record(self, step: int, stats: dict[str, Tensor]) -> None:
        names = [name for name in stats if name != "skipped"]
        flags = torch.stack([~torch.isfinite(stats[name]).all() for name in names])
        if self._flags is None:
            self._names, self._flags = names, torch.zeros_like(flags)
            self._step = flags.new_zeros((), dtype=torch.long)
        first = ~self._flags.any() & flags.any()
        self._flags = torch.where(first, flags, self._flags)
        self._step = torch.where(first, torch.full_like(self._step, step), self._step)

    def raise_if_any(self, checkpoint_path: object) -> None:
        if self._flags is None or not bool(self._flags.any()):
            return
        bad = list(itertools.compress(self._names, self._flags.tolist()))
        raise NonFiniteLossError(
            f"non-finite value at step {int(self._step)} in {', '.join(bad)}; the last good checkpoint "
            f"({checkpoint_path}) is left untouched. Lower the learning rate, or pass --skip-nonfinite to "
            "skip such steps."
        )
