"""The training engine's set-up and loop (vprob.train) on digits, where tests/test_train.py's end-to-end runs
could not see a wrong change (#19): joining a process group, the defaults derived from the device, the
schedule's length and warm-up, the objects the trainer wires together, and the loop's cadences (metric
lines, online evaluation, checkpoints, the non-finite check). Each Trainer here runs a few steps only."""

from __future__ import annotations

import json
import re

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
    assert (
        join_process_group(_config(tmp_path, sync_bn=True), torch.device("cuda"))[1] == 4
    )  # sync-bn on CUDA
    # Launched by torchrun on the CPU: no GPU to choose.
    assert join_process_group(_config(tmp_path), torch.device("cpu"))[0] == torch.device("cpu")
    assert chosen == [device, device]
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


def test_model_building_gather_image_shape_sync_bn_and_channels_last(tmp_path):
    """What ``_build_model`` passes on: gather exactly when several processes train, the data's image shape
    (the backbone's input channels follow it), SyncBatchNorm only for sync_bn with several processes, and
    channels-last parameters when asked."""
    trainer = Trainer(_config(tmp_path, "a", sync_bn=True), progress=False)
    assert trainer.model.gather is False
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in trainer.model.modules())
    trainer.world_size = 2
    several = trainer._build_model()
    assert several.gather is True and any(isinstance(m, torch.nn.SyncBatchNorm) for m in several.modules())
    trainer.world_size = 1
    trainer.image_shape = (3, 8, 8)
    first_conv = next(m for m in trainer._build_model().modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 3
    last = Trainer(_config(tmp_path, "b", channels_last=True), progress=False).model
    conv = next(m for m in last.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()


def test_init_from_loads_the_encoder_and_prints_its_notes(tmp_path, capsys):
    from vprob.checkpoint import save_state_dict_file
    from vprob.config import build_model
    from vprob.export import load_backbone_weights

    torch.manual_seed(7)
    donor = build_model(_config(tmp_path).resolved(), image_shape=(1, 8, 8)).encoder
    weights = {**donor.state_dict(), "fc.weight": torch.zeros(10, 3)}
    save_state_dict_file(tmp_path / "w.pt", weights)
    trainer = Trainer(_config(tmp_path, init_from=str(tmp_path / "w.pt")), progress=False)
    for key, value in donor.state_dict().items():
        assert torch.equal(trainer.model.encoder.state_dict()[key], value), key
    notes = load_backbone_weights(donor, str(tmp_path / "w.pt"))
    assert notes and capsys.readouterr().err == "".join(f"note: {note}\n" for note in notes)
    trainer.rank = 1
    trainer._build_model(init_from=str(tmp_path / "w.pt"))
    assert capsys.readouterr().err == ""  # only rank 0 prints


def _recorded_progress(monkeypatch) -> list:
    recorded = []

    class Recording(train_module.Progress):
        def __init__(self, *args):
            recorded.append(args)
            super().__init__(*args)

    monkeypatch.setattr(train_module, "Progress", Recording)
    return recorded


def test_progress_gets_the_run_length_description_and_switches(monkeypatch, tmp_path):
    recorded = _recorded_progress(monkeypatch)
    trainer = Trainer(_config(tmp_path, "a", max_steps=2), progress=False)
    trainer.fit(stop_after_s=1e6)
    ((run, total, step, batch, description, show, budget, tensorboard),) = recorded
    assert (run, total, step, batch) == (trainer.run, 2, 0, 128)
    assert (description, show, budget, tensorboard) == ("simclr digits", False, 1e6, False)
    recorded.clear()
    Trainer(_config(tmp_path, "b", max_steps=1), progress=True).fit()
    assert recorded[0][5] is True and recorded[0][7] is False


def test_progress_writes_tensorboard_events_on_rank_0_only(monkeypatch, tmp_path):
    pytest.importorskip("tensorboard")  # an optional extra: the trainer refuses the option without it
    recorded = _recorded_progress(monkeypatch)
    Trainer(_config(tmp_path, "a", max_steps=1, tensorboard=True), progress=False).fit()
    assert recorded[0][7] is True
    recorded.clear()
    trainer = Trainer(_config(tmp_path, "c", max_steps=1, tensorboard=True), progress=False)
    trainer.rank = 1
    trainer.fit()
    assert recorded[0][7] is False


def test_non_finite_steps_stop_the_cpu_loop_at_once_and_budgets_are_checked(tmp_path):
    """On the CPU the finiteness check runs after every step: a NaN at step 3 stops the loop there, not at
    the next metric line (log_every 5)."""
    from vprob.train import NonFiniteLossError

    trainer = Trainer(_config(tmp_path, "a", log_every=5), progress=False)
    real, calls = trainer.train_step, []

    def step(views, labels):
        stats = real(views, labels)
        calls.append(1)
        if len(calls) == 3:
            stats["loss"] = torch.tensor(float("nan"))
        return stats

    trainer.train_step = step
    with pytest.raises(NonFiniteLossError) as info:
        trainer.fit()
    assert str(info.value).startswith(
        f"non-finite value at step 3 in loss; the last good checkpoint ({trainer.checkpoint_path}) is left"
    )
    assert len(calls) == 3
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError) as info:
            trainer.fit(stop_after_s=bad)
        assert str(info.value) == f"stop_after_s must be a positive number of seconds or None, got {bad!r}"


def test_train_passes_progress_and_resume(monkeypatch, tmp_path):
    seen = []

    class Recording(Trainer):
        def __init__(self, config, resume=False, progress=None, elbo=None):
            seen.append((resume, progress))
            super().__init__(config, resume=resume, progress=progress, elbo=elbo)

    monkeypatch.setattr(train_module, "Trainer", Recording)
    results = train_module.train(_config(tmp_path, max_steps=1), progress=False)
    assert results["steps"] == 1 and seen == [(False, False)]
    train_module.train(_config(tmp_path, max_steps=2), resume=True, progress=False)
    assert seen[-1] == (True, False)
    assert load_image_shape(tmp_path / "run") == [1, 8, 8]


def load_image_shape(run_dir):
    from vprob.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "checkpoint.pt")["image_shape"]


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_online_evaluation_every_eval_every_th_epoch(tmp_path):
    """eval_every 1: an online kNN record at the end of each epoch; eval_every 2: only after the second (the
    metric lines are otherwise too rare to appear: log_every 1000)."""
    for every, epochs in ((1, 2), (2, 3)):
        trainer = Trainer(_config(tmp_path, f"e{every}", epochs=epochs, eval_every=every, log_every=1000))
        trainer.fit()
        spe = trainer.loader.steps_per_epoch
        key = trainer.online_eval.key
        with_knn = [r["step"] for r in _records(tmp_path / f"e{every}") if key in r]
        assert with_knn == [spe * e for e in range(1, epochs + 1) if e % every == 0], every
        assert all(0.0 <= r[key] <= 1.0 for r in _records(tmp_path / f"e{every}") if key in r)


def test_checkpoints_pauses_and_results_of_the_loop(monkeypatch, tmp_path):
    """A checkpoint after every checkpoint_every-th epoch and always at the end (3 epochs every 2: after 2
    and 3); no pause without a budget, none at the very end even when the budget is spent, and a pause
    message that says where; the results and results.json name the steps of the run and of this call."""
    from vprob.train import TrainingPaused

    finals = []

    class Recording(train_module.Progress):
        def final(self, step, results):
            finals.append((step, dict(results)))
            super().final(step, results)

    monkeypatch.setattr(train_module, "Progress", Recording)
    trainer = Trainer(_config(tmp_path, "a", epochs=3, checkpoint_every=2), progress=False)
    saved, original = [], trainer.save
    trainer.save = lambda: (saved.append(trainer.step), original())
    results = trainer.fit()
    spe = trainer.loader.steps_per_epoch
    assert saved == [2 * spe, 3 * spe] and finals == [(3 * spe, results)]
    assert results["run_dir"] == str(tmp_path / "a") and results["steps"] == 3 * spe
    stored = json.loads((tmp_path / "a" / "results.json").read_text())
    assert stored["steps"] == 3 * spe and stored["steps_this_session"] == 3 * spe
    assert Trainer(_config(tmp_path, "b", epochs=2, checkpoint_every=1)).fit()["steps"] == 2 * spe
    # The budget is spent at once, but the only checkpoint is the last one: the run finishes.
    assert Trainer(_config(tmp_path, "c", max_steps=1)).fit(stop_after_s=1e-9)["steps"] == 1
    with pytest.raises(TrainingPaused) as info:
        Trainer(_config(tmp_path, "d", epochs=2)).fit(stop_after_s=1e-9)
    assert re.fullmatch(
        rf"paused at step {spe} of {2 * spe} after \d+ s \(budget 0 s\); checkpoint saved to "
        rf"{re.escape(str(tmp_path / 'd' / 'checkpoint.pt'))}: resume the run to continue",
        str(info.value),
    )
    resumed = Trainer(_config(tmp_path, "d", epochs=2), resume=True).fit()
    assert (resumed["steps"], resumed["steps_this_session"]) == (2 * spe, spe)
