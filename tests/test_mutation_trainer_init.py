"""What ``Trainer.__init__`` (vprob.train) hands to each part it wires together, on digits without training:
each collaborator is wrapped by a recorder that calls the real one, and the recorded arguments are compared
with values written from the config (seed, schedule lengths, ranks, the method's label needs, the data
options), in one process and in a fake world of two. Also the run folder and config.json, the seeds, the
TensorBoard check before anything is written, the online kNN switch and its refusal, resuming (the
checkpoint's step, metrics truncated, init_from ignored) and the ELBO argument. Written for #19: mutation
testing of ``__init__`` against the end-to-end training tests costs 16 s a surviving mutant; this file runs
in a few seconds."""

from __future__ import annotations

import json

import pytest
import torch

from vprob import train as train_module
from vprob.config import build_model, make_config
from vprob.data.registry import EvalSets
from vprob.engine.loader import TrainingData
from vprob.engine.run_folder import RunFolder
from vprob.train import Trainer

TINY = dict(data="digits", batch_size=128, dim=8, device="cpu", method="simclr")


def _config(tmp_path, name="run", **overrides):
    return make_config(**{**TINY, "run_dir": str(tmp_path / name), **overrides})


def _spy(monkeypatch, name: str, replacement=None) -> list:
    """Record every call of ``train_module.<name>`` and call the real one (or ``replacement``)."""
    real = getattr(train_module, name)
    target = replacement or real
    calls: list = []

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return target(*args, **kwargs)

    monkeypatch.setattr(train_module, name, wrapper)
    return calls


def _data_with_options(monkeypatch) -> list:
    """training_data recording its arguments; the real digits loader gets no load options (digits takes
    none), so that options a config sets can be checked on their way."""
    real = train_module.training_data
    return _spy(
        monkeypatch,
        "training_data",
        lambda data, data_dir, device, needs_labels, normal_class=None, **options: real(
            data, data_dir, device, needs_labels, normal_class
        ),
    )


def test_every_collaborator_gets_the_configs_values(tmp_path, monkeypatch):
    spies = {
        name: _spy(monkeypatch, name)
        for name in (
            "join_process_group",
            "resolve_device",
            "RunFolder",
            "DeviceLoader",
            "augmentation_for",
            "auto_eval_every",
            "ViewMaker",
            "build_optimizer",
            "warmup_cosine",
            "TrainStep",
        )
    }
    data = _data_with_options(monkeypatch)
    config = _config(
        tmp_path,
        epochs=3,
        warmup_epochs=1,
        optimizer="sgd",
        lr=0.5,
        weight_decay=1e-3,
        seed=11,
        cache_dir=str(tmp_path / "cache"),
        image_size=8,
        data_dir=str(tmp_path / "data"),
    )
    trainer = Trainer(config, progress=False)
    resolved = config.resolved()
    assert trainer.config == resolved and trainer.progress is False
    cpu = torch.device("cpu")
    assert spies["resolve_device"] == [(("cpu",), {})]
    assert spies["join_process_group"] == [((resolved, cpu), {})]
    assert (trainer.device, trainer.world_size, trainer.rank) == (cpu, 1, 0)
    assert spies["RunFolder"] == [((str(tmp_path / "run"), 0, 1), {})]
    assert (
        trainer.run_dir == tmp_path / "run" and trainer.checkpoint_path == tmp_path / "run" / "checkpoint.pt"
    )
    assert data == [
        (
            ("digits", str(tmp_path / "data"), cpu, False, None),
            {"image_size": 8, "cache_dir": str(tmp_path / "cache")},
        )
    ]
    train_set = trainer.train_set
    assert len(trainer.test_set) > 0 and not trainer.eval_sets.skipped
    assert trainer.eval_sets.test is trainer.test_set
    assert spies["DeviceLoader"] == [((train_set, 128, trainer.generator, 1, 0), {})]
    assert spies["augmentation_for"] == [(("digits", train_set), {})]
    assert trainer.image_shape == (1, 8, 8) and type(trainer.image_shape) is tuple
    assert spies["auto_eval_every"] == [((None, train_set, False), {})]
    assert trainer.eval_every == 0 and trainer.online_eval is None  # 8-pixel digits: no online kNN
    assert spies["ViewMaker"] == [((trainer.augment, 2, trainer.generator, 1, 0, False, False), {})]
    assert spies["build_optimizer"] == [(("sgd", trainer.model, 0.5, 1e-3), {})]
    spe = len(train_set) // 128
    assert spies["warmup_cosine"] == [((trainer.optimizer, 3 * spe, spe), {})]
    assert trainer.total_steps == 3 * spe and trainer.step == 0
    assert spies["TrainStep"] == [
        (
            (
                trainer.model,
                trainer.model.training_loss,
                trainer.optimizer,
                trainer.scheduler,
                False,
                1,
                False,
            ),
            {},
        )
    ]


def test_a_fake_world_of_two_reaches_every_part(tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(train_module, "join_process_group", lambda config, device: (cpu, 2, 1))
    spies = {
        name: _spy(monkeypatch, name) for name in ("RunFolder", "DeviceLoader", "ViewMaker", "TrainStep")
    }
    trainer = Trainer(
        _config(tmp_path, channels_last=True, compile=False, skip_nonfinite=True), progress=True
    )
    assert (trainer.world_size, trainer.rank, trainer.progress) == (2, 1, True)
    assert spies["RunFolder"][0][0][1:] == (1, 2)
    assert not (tmp_path / "run").exists()  # rank 1 writes nothing
    assert spies["DeviceLoader"][0][0][3:] == (2, 1)
    assert spies["ViewMaker"][0][0][3:] == (2, 1, True, False)
    assert spies["TrainStep"][0][0][4:] == (False, 2, True)
    assert trainer.model.gather is True


def test_supcon_asks_for_labelled_images_and_max_steps_only_shortens(tmp_path, monkeypatch):
    data = _data_with_options(monkeypatch)
    schedule = _spy(monkeypatch, "warmup_cosine")
    trainer = Trainer(_config(tmp_path, "a", method="supcon", epochs=3, max_steps=3, warmup_epochs=10))
    spe = trainer.loader.steps_per_epoch
    assert data[0][0][3] is True and data[0][1] == {}
    assert trainer.total_steps == 3
    # every epoch scheduled; the warm-up capped at half of it, in whole steps
    assert schedule[0][0][1:] == (3 * spe, 3 * spe // 2) and type(schedule[0][0][2]) is int
    long = Trainer(_config(tmp_path, "b", epochs=1, max_steps=10**6))
    assert long.total_steps == long.loader.steps_per_epoch


def test_config_json_seeds_and_the_default_run_folder(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(
        train_module, "default_run_dir", lambda config: seen.append(config) or tmp_path / "auto"
    )
    config = make_config(**TINY, seed=5)
    trainer = Trainer(config, progress=False)
    assert seen == [config.resolved()] and trainer.run_dir == tmp_path / "auto"
    stored = json.loads((tmp_path / "auto" / "config.json").read_text())
    # the resolved config, with the digits record's defaults filled in
    assert (stored["seed"], stored["backbone"], stored["optimizer"], stored["lr"]) == (
        5,
        "digits_convnet",
        "adamw",
        2e-3,
    )
    assert stored["run_dir"] is None and stored["method"] == "simclr"
    assert torch.initial_seed() == 5
    assert trainer.generator.initial_seed() == 5 and trainer.generator.device == torch.device("cpu")
    torch.manual_seed(5)
    reference = build_model(config.resolved(), gather=False, image_shape=(1, 8, 8))
    for (name, got), want in zip(
        trainer.model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(got, want), name


def test_tensorboard_is_checked_before_anything_is_written(tmp_path, monkeypatch):
    asked = []

    def missing():
        asked.append(True)
        raise train_module.MissingExtraError("pip install tensorboard")

    monkeypatch.setattr(train_module, "summary_writer_class", missing)
    Trainer(_config(tmp_path, "a"), progress=False)
    assert asked == []
    with pytest.raises(train_module.MissingExtraError, match="pip install tensorboard"):
        Trainer(_config(tmp_path, "b", tensorboard=True), progress=False)
    assert asked == [True] and not (tmp_path / "b").exists()


def test_online_knn_when_asked_and_refused_without_evaluation_sets(tmp_path, monkeypatch):
    knn = _spy(monkeypatch, "OnlineKNN")
    every = _spy(monkeypatch, "auto_eval_every")
    trainer = Trainer(_config(tmp_path, "a", eval_every=2, amp=True), progress=False)
    assert trainer.eval_every == 2 and trainer.online_eval is not None
    sets = trainer.eval_sets
    assert knn == [((sets.train, sets.test, trainer.augment.normalize), {"amp": True})]
    assert every[-1][0] == (2, trainer.train_set, False)
    one_class = Trainer(_config(tmp_path, "b", normal_class=3), progress=False)
    assert every[-1][0][0] is None and every[-1][0][2] is True  # one class: no automatic kNN
    assert set(one_class.train_set.labels.tolist()) == {3}  # trains on the normal class only

    real = train_module.training_data

    def unlabelled(*args, **kwargs):
        data = real(*args, **kwargs)
        return TrainingData(data.train, data.test, EvalSets(None, None, "no labelled images here"))

    monkeypatch.setattr(train_module, "training_data", unlabelled)
    quiet = Trainer(_config(tmp_path, "c"), progress=False)
    assert every[-1][0][2] is True and quiet.online_eval is None
    with pytest.raises(ValueError) as info:
        Trainer(_config(tmp_path, "d", eval_every=1), progress=False)
    assert str(info.value) == "eval_every: no labelled images here"


def test_resume_restores_the_checkpoint_truncates_metrics_and_skips_init_from(tmp_path, monkeypatch):
    first = Trainer(_config(tmp_path, seed=3), progress=False)
    first.step = 4
    first.save()
    lines = [json.dumps({"step": s}) for s in range(1, 8)]
    (tmp_path / "run" / "metrics.jsonl").write_text("\n".join(lines) + "\n")

    builds, loads = [], []
    real_build, real_restore = Trainer._build_model, train_module.state.restore
    real_load = RunFolder.load_checkpoint

    def build(self, init_from=None):
        builds.append(init_from)
        return real_build(self, init_from=init_from)

    restored = []

    def restore(checkpoint, *args):
        restored.append((checkpoint["step"], args))
        return real_restore(checkpoint, *args)

    def load(self, map_location="cpu"):
        loads.append(map_location)
        return real_load(self, map_location=map_location)

    monkeypatch.setattr(Trainer, "_build_model", build)
    monkeypatch.setattr(train_module.state, "restore", restore)
    monkeypatch.setattr(RunFolder, "load_checkpoint", load)
    weights = tmp_path / "not-read.pt"  # never opened on resume: the checkpoint's weights win
    resumed = Trainer(_config(tmp_path, seed=3, init_from=str(weights)), resume=True, progress=False)
    assert builds == [None] and loads == [torch.device("cpu")]
    ((step, args),) = restored
    assert step == 4 and resumed.step == 4
    assert args == (resumed.config, resumed.model, resumed.optimizer, resumed.scheduler, resumed.generator)
    kept = [
        json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert kept == [1, 2, 3, 4]
    fresh = Trainer(_config(tmp_path, "other", seed=3), progress=False)
    assert fresh.step == 0 and builds[-1] is None


def test_init_from_is_loaded_on_a_new_run(tmp_path, monkeypatch):
    builds = []
    real_build = Trainer._build_model

    def build(self, init_from=None):
        builds.append(init_from)
        return real_build(self, init_from=None)

    monkeypatch.setattr(Trainer, "_build_model", build)
    Trainer(_config(tmp_path, init_from=str(tmp_path / "w.pt")), progress=False)
    assert builds == [str(tmp_path / "w.pt")]


def test_the_elbo_argument_reaches_the_methods_objective(tmp_path):
    with pytest.raises(ValueError) as info:
        Trainer(_config(tmp_path), progress=False, elbo="an elbo")
    assert str(info.value) == "method 'simclr' is not variational: it takes no ELBO"
