"""The one-class anomaly protocol (vprob.anomaly, ``vprob anomaly``) on digits (CPU)."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from vprob.anomaly import anomaly_scores, knn_distance, one_class_aurocs, run_anomaly
from vprob.cli import main
from vprob.config import make_config
from vprob.data import SimCLRAugment, load_digits
from vprob.models import VJE
from vprob.nets import DigitsConvNet
from vprob.train import Trainer, TrainingPaused

FAST = dict(data="digits", device="cpu", epochs=60, checkpoint_every=60)


def test_knn_distance_is_the_kth_smallest_cosine_distance():
    torch.manual_seed(0)
    normal, test = torch.randn(30, 5), torch.randn(7, 5)
    a = normal.numpy() / np.linalg.norm(normal.numpy(), axis=1, keepdims=True)
    b = test.numpy() / np.linalg.norm(test.numpy(), axis=1, keepdims=True)
    distances = np.sort(1 - b @ a.T, axis=1)
    for k in (1, 4):
        np.testing.assert_allclose(knn_distance(normal, test, k).numpy(), distances[:, k - 1], atol=1e-6)
    for k in (0, 31):
        with pytest.raises(ValueError, match="knn_k"):
            knn_distance(normal, test, k)


def test_one_class_aurocs_match_scikit_learn():
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 4, (200,), generator=generator)
    scores = {
        "a": torch.randn(200, generator=generator) + (labels != 2).float(),
        "b": torch.randint(0, 3, (200,), generator=generator).float(),
    }  # ties count one half
    result = one_class_aurocs(scores, labels, normal_class=2)
    for name, value in scores.items():
        assert result[name] == pytest.approx(roc_auc_score((labels != 2).numpy(), value.numpy()), abs=1e-12)
    with pytest.raises(ValueError, match="class 7"):
        one_class_aurocs(scores, labels, normal_class=7)


def test_one_class_auroc_on_digits_is_well_above_chance(tmp_path):
    """Trained on one class for 60 short epochs, every score separates it from the nine others."""
    summary = run_anomaly(make_config(method="vje", run_dir=str(tmp_path), **FAST), [1, 2], progress=False)
    assert [entry["normal_class"] for entry in summary["classes"]] == [1, 2]
    train_labels, test_labels = (split.labels for split in load_digits())
    for entry in summary["classes"]:
        aurocs = entry["auroc"]
        assert set(aurocs) == {"likelihood", "likelihood_cartesian", "log_det", "knn"}
        assert aurocs["likelihood"] > 0.75, entry
        assert aurocs["knn"] > 0.75, entry
        assert aurocs["log_det"] > 0.6, entry
        normal = entry["normal_class"]
        assert entry["train_images"] == int((train_labels == normal).sum())
        assert entry["test_normal"] == int((test_labels == normal).sum())
        assert entry["test_anomalous"] == int((test_labels != normal).sum())
        saved = json.loads((tmp_path / f"class_{entry['normal_class']}" / "anomaly.json").read_text())
        assert saved["auroc"] == pytest.approx(aurocs)
    saved = json.loads((tmp_path / "anomaly.json").read_text())
    for name, mean in saved["mean_auroc"].items():
        assert mean == pytest.approx(np.mean([e["auroc"][name] for e in summary["classes"]]))


@pytest.mark.slow
def test_every_class_of_digits_with_the_default_schedule(tmp_path):
    summary = run_anomaly(
        make_config(method="vje", data="digits", device="cpu", run_dir=str(tmp_path)), progress=False
    )
    assert len(summary["classes"]) == 10
    assert summary["mean_auroc"]["likelihood"] > 0.75
    assert summary["mean_auroc"]["knn"] > 0.8


def test_vsimclr_gets_the_uncertainty_and_knn_scores(tmp_path):
    summary = run_anomaly(
        make_config(method="vsimclr", data="digits", device="cpu", epochs=2, run_dir=str(tmp_path)),
        [0],
        progress=False,
    )
    assert set(summary["classes"][0]["auroc"]) == {"log_det", "knn"}


def test_normal_class_trains_on_that_class_only(tmp_path):
    trainer = Trainer(
        make_config(
            method="vje", data="digits", device="cpu", batch_size=32, normal_class=3, run_dir=str(tmp_path)
        )
    )
    full_train, full_test = load_digits()
    assert bool((trainer.train_set.labels == 3).all())
    assert len(trainer.train_set) == int((full_train.labels == 3).sum())
    assert len(trainer.test_set) == len(full_test)  # scored on the whole test split


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"normal class 10 does not exist: valid class indices are 0\.\.9"):
        run_anomaly(make_config(method="vje", run_dir=str(tmp_path / "a"), **FAST), [10])
    assert not (tmp_path / "a").exists()  # refused before any training
    with pytest.raises(ValueError, match="-1"):
        run_anomaly(make_config(method="vje", run_dir=str(tmp_path / "b"), **FAST), [-1])
    with pytest.raises(ValueError, match="normal_class"):
        make_config(method="vje", normal_class=-2).resolved()
    with pytest.raises(ValueError, match="df"):
        run_anomaly(make_config(method="vje", df=0.0, run_dir=str(tmp_path / "c"), **FAST), [1])
    with pytest.raises(ValueError, match="methods"):
        run_anomaly(make_config(method="supcon", run_dir=str(tmp_path / "d"), **FAST), [1])
    with pytest.raises(ValueError, match="num_pairs"):
        run_anomaly(make_config(method="vje", run_dir=str(tmp_path / "e"), **FAST), [1], num_pairs=0)

    digits, _ = load_digits()
    augment = SimCLRAugment.for_dataset("digits", digits)
    model = VJE(DigitsConvNet())
    cifar_like = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="shape"):
        anomaly_scores(model, digits.images[:8], cifar_like, augment)
    with pytest.raises(ValueError, match="uint8"):
        anomaly_scores(model, digits.images[:8], digits.images[:4].float(), augment)


def test_cli_anomaly(tmp_path, capsys):
    code = main(
        [
            "anomaly",
            "--method",
            "vje",
            "--data",
            "digits",
            "--normal-class",
            "4",
            "--epochs",
            "2",
            "--num-pairs",
            "2",
            "--device",
            "cpu",
            "--run-dir",
            str(tmp_path / "run"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for score in ("likelihood", "likelihood_cartesian", "log_det", "knn"):
        assert f"class_4_auroc_{score}: " in out
    assert (tmp_path / "run" / "anomaly.json").is_file()
    assert main(["anomaly", "--normal-class", "12", "--run-dir", str(tmp_path / "bad")]) == 2
    assert "normal class 12 does not exist" in capsys.readouterr().err


def test_a_time_budget_pauses_the_classes_and_resume_reads_back_the_finished_ones(tmp_path):
    config = make_config(method="vsimclr", data="digits", device="cpu", epochs=2, run_dir=str(tmp_path))
    with pytest.raises(TrainingPaused, match="resume"):
        run_anomaly(config, [0, 1], progress=False, stop_after_s=1e-3)
    assert not (tmp_path / "class_0" / "anomaly.json").exists()  # paused inside class 0's training
    first = run_anomaly(config, [0], progress=False, resume=True)
    mtime = (tmp_path / "class_0" / "anomaly.json").stat().st_mtime_ns
    both = run_anomaly(config, [0, 1], progress=False, resume=True)
    assert (tmp_path / "class_0" / "anomaly.json").stat().st_mtime_ns == mtime  # read back, not redone
    assert both["classes"][0] == first["classes"][0] and both["classes"][1]["normal_class"] == 1
    with pytest.raises(ValueError, match="run folder"):
        run_anomaly(make_config(method="vsimclr", data="digits", device="cpu", epochs=2), [0], resume=True)
