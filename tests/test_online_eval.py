"""Watching a run: online kNN every --eval-every epochs (logged, plotted, and leaving the training trajectory
unchanged, also across a resume) and TensorBoard event files of every logged metric."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from torch import nn

from vprob.checkpoint import CHECKPOINT_NAME, load_checkpoint
from vprob.config import make_config
from vprob.data import ImageSet, load_digits
from vprob.engine.online_eval import OnlineKNN, auto_eval_every, evenly_spaced
from vprob.engine.tensorboard import MissingExtraError
from vprob.plots import plot_training_curves
from vprob.train import Trainer, train

STEPS_PER_EPOCH = 1437 // 256  # digits' training split, batch 256


def tiny(tmp_path, name, **overrides):
    values = dict(
        method="vsimclr",
        epochs=2,
        batch_size=256,
        dim=8,
        head_hidden=32,
        device="cpu",
        log_every=3,
        knn_k=(10,),
        run_dir=str(tmp_path / name),
    )
    return make_config(**{**values, **overrides})


def records(tmp_path, name):
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def without_timing(rows):
    return [{k: v for k, v in r.items() if k != "images_per_s" and not k.startswith("online_")} for r in rows]


def test_online_knn_is_logged_and_leaves_the_trajectory_unchanged(tmp_path):
    # Two epochs, stopped one step into the second: one evaluation, at the end of the first, with that
    # step's training record (logged for it: 5 is not a multiple of log_every).
    watched = train(tiny(tmp_path, "watched", eval_every=1, max_steps=STEPS_PER_EPOCH + 1), progress=False)
    plain = train(tiny(tmp_path, "plain", eval_every=0, max_steps=STEPS_PER_EPOCH + 1), progress=False)
    online = [r for r in records(tmp_path, "watched") if "online_knn_top1_k20" in r]
    assert [r["step"] for r in online] == [STEPS_PER_EPOCH]
    assert all(0.1 < r["online_knn_top1_k20"] <= 1 and "loss" in r for r in online)
    # The same losses at every step the plain run logged, the same weights, the same final accuracy.
    plain_rows = without_timing(records(tmp_path, "plain"))
    watched_rows = {r["step"]: r for r in without_timing(records(tmp_path, "watched"))}
    assert [watched_rows[r["step"]] for r in plain_rows] == plain_rows
    a = load_checkpoint(tmp_path / "watched" / CHECKPOINT_NAME)["model"]
    b = load_checkpoint(tmp_path / "plain" / CHECKPOINT_NAME)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert watched["knn_top1_k10_majority"] == plain["knn_top1_k10_majority"]
    assert (tmp_path / "watched" / "loss_curve.png").stat().st_size > 1000


def test_a_resumed_run_with_online_knn_matches_the_uninterrupted_one(tmp_path):
    end = STEPS_PER_EPOCH + 1
    train(tiny(tmp_path, "full", eval_every=1, max_steps=end), progress=False)
    train(tiny(tmp_path, "cut", eval_every=1, max_steps=STEPS_PER_EPOCH), progress=False)
    train(tiny(tmp_path, "cut", eval_every=1, max_steps=end), resume=True, progress=False)
    strip = [
        [{k: v for k, v in r.items() if k != "images_per_s"} for r in records(tmp_path, name)]
        for name in ("full", "cut")
    ]
    assert strip[1] == strip[0]  # the online accuracy included, once
    assert sum("online_knn_top1_k20" in r for r in strip[1]) == 1
    a = load_checkpoint(tmp_path / "full" / CHECKPOINT_NAME)["model"]
    b = load_checkpoint(tmp_path / "cut" / CHECKPOINT_NAME)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_online_knn_restores_modes_and_draws_no_random_numbers():
    train_set, test_set = load_digits()
    encoder = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.Dropout(0.3), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    encoder.train()
    running = encoder[1].running_mean.clone()
    rng = torch.get_rng_state()
    result = OnlineKNN(train_set, test_set, lambda x: x.float() / 16, max_train=500, max_test=100)(encoder)
    assert 0 <= result["online_knn_top1_k20"] <= 1
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(encoder[1].running_mean, running) and all(m.training for m in encoder.modules())
    # An oracle for the sample: 100 evenly spaced test images from a loop.
    assert evenly_spaced(360, 100).tolist() == [i * 360 // 100 for i in range(100)]
    assert evenly_spaced(50, 100).tolist() == list(range(50))


def test_automatic_eval_every():
    digits = load_digits()[0]
    big = ImageSet(
        torch.zeros(4, 3, 32, 32, dtype=torch.uint8),
        torch.zeros(4, dtype=torch.long),
        digits.classes,
        (0.5,) * 3,
        (0.25,) * 3,
    )
    assert auto_eval_every(None, digits, one_class=False) == 0  # 8 px: the quick start stays quick
    assert auto_eval_every(None, big, one_class=False) == 10
    assert auto_eval_every(None, big, one_class=True) == 0
    assert auto_eval_every(3, digits, one_class=False) == 3
    with pytest.raises(ValueError, match="eval_every"):
        make_config(eval_every=-1).resolved()


def test_loss_curve_plots_the_online_accuracy(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    rows = [
        {"step": s, "loss": 5 - 0.1 * s, **({"online_knn_top1_k20": 0.05 * s} if s % 5 == 0 else {})}
        for s in range(1, 20)
    ]
    metrics.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = plot_training_curves(metrics, tmp_path / "curve.png")
    assert path.stat().st_size > 1000


def test_tensorboard_writes_every_logged_metric(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny(tmp_path, "tb", eval_every=1, tensorboard=True, max_steps=STEPS_PER_EPOCH), progress=False)
    events = EventAccumulator(str(tmp_path / "tb" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    logged = records(tmp_path, "tb")
    assert {k for r in logged for k in r if k != "step"} <= tags
    assert "final/knn_top1_k10_majority" in tags
    assert [e.step for e in events.Scalars("loss")] == [r["step"] for r in logged]
    assert [e.value for e in events.Scalars("loss")] == pytest.approx([r["loss"] for r in logged])


def test_tensorboard_missing_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'vprob\[tensorboard\]'"):
        Trainer(tiny(tmp_path, "none", tensorboard=True), progress=False)
    assert not (tmp_path / "none").exists()  # refused before anything was written


def test_online_knn_fits_on_labelled_images_only_and_checks_its_sets():
    train_set, test_set = load_digits()

    def normalize(x):
        return x.float() / 16

    # Every other training image without a class: the sample holds exactly the labelled ones, the same
    # images as a set built from them directly.
    labels = train_set.labels.clone()
    labels[1::2] = -1
    mixed = ImageSet(
        train_set.images, labels, train_set.classes, train_set.mean, train_set.std, unlabelled=True
    )
    knn = OnlineKNN(mixed, test_set, normalize, max_train=10_000, max_test=200)
    direct = train_set.subset(slice(0, None, 2))
    assert torch.equal(knn.train_images, direct.images) and torch.equal(knn.train_labels, direct.labels)
    assert knn.num_classes == train_set.num_classes == 10
    assert knn.amp is False and knn.k == 20 and knn.key == "online_knn_top1_k20"
    # Empty sets are refused with the remedy; one image on each side is enough.
    message = r"^online kNN evaluation needs labelled training and test images: set eval_every=0$"
    empty = train_set.subset(slice(0, 0))
    for args in ((empty, test_set), (train_set, empty)):
        with pytest.raises(ValueError, match=message):
            OnlineKNN(*args, normalize)
    one = OnlineKNN(train_set.subset(slice(0, 1)), test_set.subset(slice(0, 1)), normalize)
    assert len(one.train_labels) == len(one.test_labels) == 1
