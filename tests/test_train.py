"""The training engine on digits (CPU): every method, determinism, resume, checkpoints, non-finite stops."""

import json

import pytest
import torch

from vprob.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint
from vprob.config import make_config
from vprob.data import load_digits
from vprob.runs import evaluate_run
from vprob.train import (
    NonFiniteLossError,
    Trainer,
    TrainingPaused,
    train,
)

TINY = dict(data="digits", epochs=2, batch_size=128, dim=8, device="cpu", log_every=2)


def tiny_config(tmp_path, name="run", **overrides):
    return make_config(**{**TINY, "run_dir": str(tmp_path / name), **overrides})


@pytest.mark.parametrize(
    "method, options",
    [
        ("simclr", {}),
        ("vsimclr", {"kl": "bound"}),
        ("vsimclr", {"kl": "exact"}),
        ("supcon", {}),
        ("vsupcon", {}),
        ("projnce", {"projection": "median"}),
        ("cct", {"num_views": 3}),
    ],
)
def test_every_method_trains_and_writes_its_run_folder(tmp_path, method, options):
    results = train(tiny_config(tmp_path, epochs=1, **options, method=method), progress=False)
    run = tmp_path / "run"
    for name in ("checkpoint.pt", "metrics.jsonl", "results.json", "config.json", "loss_curve.png"):
        assert (run / name).is_file(), name
    assert 0.1 < results["knn_top1_k200_weighted"] <= 1.0
    assert 0.1 < results["linear_top1"] <= 1.0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records and all("loss" in r and "images_per_s" in r for r in records)


def test_same_seed_same_numbers(tmp_path):
    a = train(tiny_config(tmp_path, "a", method="vsimclr"), progress=False)
    b = train(tiny_config(tmp_path, "b", method="vsimclr"), progress=False)
    metrics = [(tmp_path / r / "metrics.jsonl").read_text().splitlines() for r in ("a", "b")]
    losses = [[json.loads(line)["loss"] for line in m] for m in metrics]
    assert losses[0] == losses[1]
    assert a["knn_top1_k200_weighted"] == b["knn_top1_k200_weighted"]
    sa = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)["model"]
    sb = load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_continues_exactly_where_it_stopped(tmp_path):
    full = train(tiny_config(tmp_path, "full", method="vsimclr"), progress=False)
    steps_per_epoch = len(load_digits()[0]) // 128
    train(tiny_config(tmp_path, "cut", method="vsimclr", max_steps=steps_per_epoch), progress=False)
    resumed = train(tiny_config(tmp_path, "cut", method="vsimclr"), resume=True, progress=False)
    assert resumed["steps"] == full["steps"] == 2 * steps_per_epoch
    assert resumed["knn_top1_k200_weighted"] == full["knn_top1_k200_weighted"]
    a = load_checkpoint(tmp_path / "full" / CHECKPOINT_NAME)
    b = load_checkpoint(tmp_path / "cut" / CHECKPOINT_NAME)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    full_lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    cut_lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    strip = [
        [{k: v for k, v in json.loads(x).items() if k != "images_per_s"} for x in lines]
        for lines in (full_lines, cut_lines)
    ]
    # The stopped run also logged its last step (11); every record of the full run is there, identical.
    full_steps = {r["step"] for r in strip[0]}
    assert [r for r in strip[1] if r["step"] in full_steps] == strip[0]


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny_config(tmp_path, method="simclr", epochs=3)
    trainer = Trainer(config, progress=False)
    trainer.total_steps = trainer.loader.steps_per_epoch  # one epoch, checkpointed
    trainer.fit()
    before = (tmp_path / "run" / CHECKPOINT_NAME).read_bytes()
    # A blow-up: a weight of the network becomes infinite.
    resumed = Trainer(config, resume=True, progress=False)
    with torch.no_grad():
        next(resumed.model.head.parameters()).fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match=f"step {trainer.loader.steps_per_epoch + 1}.*loss"):
        resumed.fit()
    assert (tmp_path / "run" / CHECKPOINT_NAME).read_bytes() == before


def test_existing_checkpoint_is_never_overwritten_by_a_new_run(tmp_path):
    config = tiny_config(tmp_path, method="simclr", max_steps=2)
    train(config, progress=False)
    before = (tmp_path / "run" / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(CheckpointError, match="--resume"):
        Trainer(config, progress=False)
    assert (tmp_path / "run" / CHECKPOINT_NAME).read_bytes() == before


def test_corrupt_and_foreign_checkpoints_are_refused(tmp_path):
    config = tiny_config(tmp_path, method="simclr", max_steps=2)
    train(config, progress=False)
    path = tmp_path / "run" / CHECKPOINT_NAME
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        Trainer(config, resume=True, progress=False)
    assert path.read_bytes() == good[: len(good) // 2]
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="not a vprob checkpoint"):
        Trainer(config, resume=True, progress=False)
    saved_config = json.loads((tmp_path / "run" / "config.json").read_text())
    save_checkpoint(path, {"config": {**saved_config, "options": {**saved_config["options"], "dim": 5}}})
    with pytest.raises(CheckpointError, match="options"):
        Trainer(config, resume=True, progress=False)


def test_a_state_that_would_not_load_safely_is_refused_before_anything_is_written(tmp_path):
    """(A failure in the middle of a write is tested in test_faults.py: full disk.)"""
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1})

    class Custom:
        pass

    with pytest.raises(TypeError, match=r"state\['bad'\].*cannot be stored in a checkpoint that loads"):
        save_checkpoint(path, {"step": 2, "bad": Custom()})
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_evaluate_run_reproduces_the_final_numbers(tmp_path):
    results = train(tiny_config(tmp_path, method="simclr", epochs=1), progress=False)
    again = evaluate_run(tmp_path / "run", device="cpu")
    assert again["knn_top1_k200_weighted"] == results["knn_top1_k200_weighted"]
    assert again["linear_top1"] == results["linear_top1"]


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"method": "byol"}, "unknown method 'byol'; registered methods: simclr"),
        ({"data": "mnist"}, "unknown data set 'mnist'; valid names: digits"),
        ({"kl": "tight"}, "kl .method vsimclr. must be one of"),
        ({"optimizer": "rmsprop"}, "optimizer .engine. must be one of"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 5000}, "batch_size"),
        ({"method": "vsimclr", "num_views": 3}, "num_views do not apply to method 'vsimclr'"),
    ],
)
def test_bad_configs_are_refused_before_training(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        Trainer(tiny_config(tmp_path, **overrides), progress=False)


def test_a_time_budget_pauses_at_a_checkpoint_and_resume_finishes_the_same_run(tmp_path):
    full = train(tiny_config(tmp_path, "full", method="vsimclr"), progress=False)
    # A budget shorter than one epoch: the run stops at its first checkpoint, evaluating nothing.
    with pytest.raises(TrainingPaused, match=r"paused at step (\d+) of \d+ .*resume the run"):
        train(tiny_config(tmp_path, "cut", method="vsimclr"), progress=False, stop_after_s=1e-3)
    assert load_checkpoint(tmp_path / "cut" / CHECKPOINT_NAME)["step"] == len(load_digits()[0]) // 128
    assert not (tmp_path / "cut" / "results.json").exists()
    resumed = train(
        tiny_config(tmp_path, "cut", method="vsimclr"), resume=True, progress=False, stop_after_s=3600
    )
    assert resumed["steps"] == full["steps"]
    assert resumed["knn_top1_k200_weighted"] == full["knn_top1_k200_weighted"]
    with pytest.raises(ValueError, match="stop_after_s"):
        Trainer(tiny_config(tmp_path, "bad", method="simclr")).fit(stop_after_s=0)
