"""Backbone weights out (``vprob export``) and in (``--init-from``): the exported file loads into plain
torchvision with ``strict=True`` and gives vprob's features; mismatched files are refused with a list of
what differs."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from vprob.checkpoint import CheckpointError, load_state_dict_file, load_weights_file
from vprob.cli import main
from vprob.config import make_config
from vprob.export import export_run, load_backbone_weights
from vprob.runs import load_run
from vprob.train import Trainer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A resnet18 run on digits (1 channel, 8 px: the CIFAR stem) after one training step (so BatchNorm's
    running statistics are not the initial ones), checkpointed without the final evaluation."""
    path = tmp_path_factory.mktemp("export") / "run"
    trainer = Trainer(
        make_config(
            method="simclr",
            backbone="resnet18",
            epochs=1,
            batch_size=32,
            dim=8,
            device="cpu",
            run_dir=str(path),
        ),
        progress=False,
    )
    images, labels = next(iter(trainer.loader.epoch()))
    trainer.train_step(trainer.views(images), labels)
    trainer.step = 1
    trainer.save()
    return path


def test_exported_backbone_loads_into_torchvision_strictly_and_gives_the_same_features(run_dir, tmp_path):
    out = tmp_path / "resnet18.pt"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    weights = load_weights_file(out)
    assert weights.metadata["backbone"] == "resnet18" and weights.metadata["stem"] == "cifar"
    assert weights.metadata["image_shape"] == [1, 8, 8] and weights.metadata["config"]["method"] == "simclr"
    # The documented recipe: torchvision's resnet18, the CIFAR stem for 1-channel input, no classifier.
    model = torchvision.models.resnet18()
    model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    model.fc = nn.Identity()
    model.load_state_dict(load_state_dict_file(out), strict=True)
    run = load_run(run_dir, "cpu")
    x = run.augment.normalize(run.test_set.images[:16])
    with torch.no_grad():
        expected = run.model.encoder.eval()(x)
        got = model.eval()(x)
    assert expected.shape == (16, 512)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_export_needs_no_data_and_never_overwrites_the_checkpoint(run_dir, tmp_path):
    run = load_run(run_dir, "cpu", data=False)
    assert run.train_set is None and run.image_shape == (1, 8, 8) and run.step == 1
    with pytest.raises(ValueError, match="overwrite the run's checkpoint"):
        export_run(run_dir, run_dir / "checkpoint.pt")


def test_init_from_starts_from_the_exported_weights(run_dir, tmp_path):
    out = tmp_path / "w.pt"
    export_run(run_dir, out)
    trainer = Trainer(
        make_config(
            method="vsimclr",
            backbone="resnet18",
            epochs=1,
            batch_size=32,
            dim=8,
            device="cpu",
            run_dir=str(tmp_path / "b"),
            init_from=str(out),
        ),
        progress=False,
    )
    state = trainer.model.encoder.state_dict()
    exported = load_state_dict_file(out)
    assert state.keys() == exported.keys()
    assert all(torch.equal(state[k], exported[k]) for k in exported)


def test_a_plain_state_dict_with_a_classifier_loads_and_mismatches_are_listed(run_dir, tmp_path, capsys):
    export_run(run_dir, tmp_path / "w.pt")
    exported = load_state_dict_file(tmp_path / "w.pt")
    # torchvision's published files are plain state_dicts with the ImageNet classifier.
    plain = {**exported, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    torch.save(plain, tmp_path / "plain.pth")
    encoder = load_run(run_dir, "cpu", data=False).model.encoder
    with torch.no_grad():
        for p in encoder.parameters():
            p.zero_()
    notes = load_backbone_weights(encoder, tmp_path / "plain.pth")
    assert "fc.bias, fc.weight" in notes[0]
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in exported.items())
    # Another stem, a missing key and a foreign one: all listed, nothing loaded.
    bad = {k: v for k, v in exported.items() if k != "layer4.1.bn2.bias"}
    bad["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    bad["extra.weight"] = torch.zeros(3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as error:
        load_backbone_weights(encoder, tmp_path / "bad.pth")
    message = str(error.value)
    assert "layer4.1.bn2.bias" in message and "extra.weight" in message
    assert "conv1.weight: file (64, 1, 7, 7), model (64, 1, 3, 3)" in message and "--stem" in message
    # Through the command line: one line, exit 2.
    code = main(
        [
            "train",
            "--method",
            "simclr",
            "--backbone",
            "resnet18",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--run-dir",
            str(tmp_path / "c"),
            "--init-from",
            str(tmp_path / "bad.pth"),
            "--no-progress",
        ]
    )
    assert code == 2 and "does not fit the backbone" in capsys.readouterr().err
