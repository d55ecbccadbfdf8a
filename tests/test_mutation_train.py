"""The training engine's set-up and loop (vprob.train) on digits, where tests/test_train.py's end-to-end runs
could not see a wrong change (#19): joining a process group, the defaults derived from the device, the
schedule's length and warm-up, the objects the trainer wires together, and the loop's cadences (metric
lines, online evaluation, checkpoints, the non-finite check). Each Trainer here runs a few steps only."""

from __future__ import annotations

import json

import pytest
import torch

from vprob import train as train_module
from vprob.config import make_config
from vprob.optim import warmup_cosine
from vprob.train import Trainer, join_process_group

TINY = dict(data="digits", batch_size=128, dim=8, device="cpu", method="simclr")


def _config(tmp_path, name="run", **overrides):
    return make_config(**{**TINY, "run_dir": str(tmp_path / name), **overrides})


def _fake_world(monkeypatch, world_size, rank=0, torchrun=False, local_rank=0):
    calls = []
    fake = train_module.distributed
    monkeypatch.setattr(fake, "launched_by_torchrun", lambda: torchrun)
    monkeypatch.setattr(fake, "init_from_env", lambda backend_device: calls.append(backend_device))
    monkeypatch.setattr(fake, "world_size", lambda: world_size)
    monkeypatch.setattr(fake, "rank", lambda: rank)
    monkeypatch.setattr(fake, "local_rank", lambda: local_rank)
    return calls


def test_join_process_group_checks_the_method_and_sync_bn(monkeypatch, tmp_path):
    cpu = torch.device("cpu")
    calls = _fake_world(monkeypatch, 2, rank=1)
    assert join_process_group(_config(tmp_path), cpu) == (cpu, 2, 1)
    assert calls == ["cpu"]
    with pytest.raises(ValueError) as info:
        join_process_group(_config(tmp_path, method="cct"), cpu)
    assert str(info.value) == "cct has no multi-process form; train it in one process"
    with pytest.raises(ValueError) as info:
        join_process_group(_config(tmp_path, sync_bn=True), cpu)
    assert str(info.value) == "--sync-bn needs CUDA devices (torch's SyncBatchNorm does not run on CPU)"
    _fake_world(monkeypatch, 1)
    assert join_process_group(_config(tmp_path, method="cct", sync_bn=True), cpu) == (cpu, 1, 0)


def test_join_process_group_puts_each_torchrun_rank_on_its_own_gpu(monkeypatch, tmp_path):
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    calls = _fake_world(monkeypatch, 4, rank=3, torchrun=True, local_rank=3)
    device, world, rank = join_process_group(_config(tmp_path), torch.device("cuda"))
    assert (device, world, rank) == (torch.device("cuda", 3), 4, 3) and chosen == [device]
    assert calls == ["cuda"]
    # Launched by torchrun on the CPU: no GPU to choose.
    assert join_process_group(_config(tmp_path), torch.device("cpu"))[0] == torch.device("cpu")
    assert chosen == [device]
    # A cuda device outside torchrun is kept as given.
    _fake_world(monkeypatch, 1, torchrun=False, local_rank=3)
    assert join_process_group(_config(tmp_path), torch.device("cuda"))[0] == torch.device("cuda")


def test_trainer_defaults_schedule_and_wiring(tmp_path):
    """On the CPU amp and channels-last are off unless asked; the schedule spans every epoch (max_steps only
    stops early) with a warm-up of warmup_epochs capped at half of it; the step gets the method's own
    objective, the trainer's amp, one process and skip_nonfinite; the views are made for the method's
    number of views with the config's compile switch."""
    trainer = Trainer(_config(tmp_path, "a", epochs=4, max_steps=5, warmup_epochs=1), progress=False)
    spe = trainer.loader.steps_per_epoch
    assert spe == len(trainer.train_set) // 128 and trainer.total_steps == 5
    assert (trainer.amp, trainer.channels_last, trainer.world_size, trainer.rank) == (False, False, 1, 0)
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    expected = warmup_cosine(reference, 4 * spe, spe)
    lrs, want = [], []
    base = trainer.optimizer.param_groups[0]["initial_lr"]
    for _ in range(4 * spe):
        lrs.append(trainer.scheduler.get_last_lr()[0] / base)
        want.append(expected.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.scheduler.step()
        reference.step()
        expected.step()
    assert lrs == pytest.approx(want, rel=1e-12)
    step = trainer.train_step
    assert step.model is trainer.model and step.optimizer is trainer.optimizer
    assert step.scheduler is trainer.scheduler and step.objective == trainer.model.training_loss
    assert (step.amp, step.world_size, step.skip_nonfinite) == (False, 1, False)
    views = trainer.views
    assert views.num_views == trainer.model.num_views == 2 and views.generator is trainer.generator
    assert (views.world_size, views.rank, views.memory_format) == (1, 0, torch.contiguous_format)
    assert views.augment is trainer.augment and trainer.loader.generator is trainer.generator
    assert trainer.loader.batch_size == 128 and trainer.image_shape == (1, 8, 8)

    other = Trainer(
        _config(tmp_path, "b", epochs=2, warmup_epochs=10, amp=True, channels_last=True, skip_nonfinite=True),
        progress=False,
    )
    assert other.total_steps == 2 * other.loader.steps_per_epoch
    assert (other.amp, other.channels_last, other.train_step.amp, other.train_step.skip_nonfinite) == (
        True,
        True,
        True,
        True,
    )
    assert other.views.memory_format == torch.channels_last
    assert next(other.model.parameters()).dtype == torch.float32
    reference = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    expected = warmup_cosine(reference, other.total_steps, other.total_steps // 2)  # warm-up capped at half
    assert other.scheduler.lr_lambdas[0](3) == expected.lr_lambdas[0](3)
    assert other.scheduler.lr_lambdas[0](other.total_steps // 2 + 1) == expected.lr_lambdas[0](
        other.total_steps // 2 + 1
    )


def test_loop_cadences_of_metric_lines_and_checkpoints(tmp_path):
    """log_every 3 over 2 epochs of 10 steps: metric lines at steps 3, 6, ..., 18 and the last one (20); a
    checkpoint after every checkpoint_every-th epoch and at the end; a resumed run continues from the saved
    step and truncates nothing it keeps."""
    config = _config(tmp_path, epochs=2, batch_size=128, log_every=3, checkpoint_every=2)
    trainer = Trainer(config, progress=False)
    spe = trainer.loader.steps_per_epoch
    saved = []
    original = trainer.save

    def save():
        saved.append(trainer.step)
        original()

    trainer.save = save
    results = trainer.fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records]
    expected = sorted({*range(3, 2 * spe + 1, 3), 2 * spe})
    assert steps == expected and saved == [2 * spe]
    assert results["steps"] == results["steps_this_session"] == 2 * spe
    assert records[0]["epoch"] == pytest.approx(3 / spe)
    assert records[-1]["lr"] == pytest.approx(trainer.scheduler.get_last_lr()[0])
