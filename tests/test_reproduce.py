"""benchmarks/reproduce_cifar10.py: one (method, seed) record per invocation, resumable, and the table."""

import importlib.util
import json
from pathlib import Path

import pytest

from vprob.data import load_digits

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_cifar10.py"


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce_cifar10", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_records_resume_and_table(tmp_path, capsys):
    script = load_script()
    common = [
        "--data",
        "digits",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--no-compile",
        "--max-images",
        "300",
        "--runs",
        str(tmp_path / "runs"),
        "--results",
        str(tmp_path / "results"),
    ]
    script.main(["--method", "vsimclr-bound", *common])
    record = json.loads((tmp_path / "results" / "vsimclr-bound-seed0.json").read_text())
    assert 0.1 < record["knn_top1_k10_majority"] <= 1 and record["uncertainty_spearman"] is not None
    assert record["effective_rank_embedding"] > 1 and record["images_per_s_median"] > 0
    # A second invocation resumes the finished run instead of training it again.
    script.main(["--method", "vsimclr-bound", *common])
    again = json.loads((tmp_path / "results" / "vsimclr-bound-seed0.json").read_text())
    assert again["knn_top1_k10_majority"] == record["knn_top1_k10_majority"]
    capsys.readouterr()
    script.main(["--table", "--results", str(tmp_path / "results")])
    assert "| vsimclr-bound | 1 |" in capsys.readouterr().out


def test_time_budget_pauses_with_status_75_and_the_next_invocation_finishes(tmp_path, capsys):
    script = load_script()
    common = [
        "--method",
        "simclr",
        "--data",
        "digits",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--no-compile",
        "--max-images",
        "300",
        "--runs",
        str(tmp_path / "runs"),
        "--results",
        str(tmp_path / "results"),
    ]
    # Half a second of training after the reserve: the run stops at its first epoch's checkpoint.
    assert script.main([*common, "--time-budget", "60.5", "--reserve", "60"]) == 75
    assert "run the same command again" in capsys.readouterr().out
    assert not (tmp_path / "results" / "simclr-seed0.json").exists()
    assert script.main(common) == 0
    record = json.loads((tmp_path / "results" / "simclr-seed0.json").read_text())
    wall = json.loads((tmp_path / "runs" / "simclr-seed0" / "wall.json").read_text())
    assert record["wall_s"] == wall and wall["train_and_evaluate_s"] > 0 and wall["diagnose_s"] > 0
    assert record["steps"] == 2 * (len(load_digits()[0]) // 256) and record["device"] == "CPU"


def test_one_class_records_join_the_method_row_of_the_table(tmp_path, capsys):
    script = load_script()
    common = [
        "--data",
        "digits",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--no-compile",
        "--max-images",
        "300",
        "--runs",
        str(tmp_path / "runs"),
        "--results",
        str(tmp_path / "results"),
    ]
    assert script.main(["--method", "vje", "--one-class", *common]) == 0
    record = json.loads((tmp_path / "results" / "vje-oneclass-seed0.json").read_text())
    assert len(record["auroc_per_class"]) == 10
    assert set(record["mean_auroc"]) == {"likelihood", "likelihood_cartesian", "log_det", "knn"}
    assert all(0 <= value <= 1 for value in record["mean_auroc"].values())
    with pytest.raises(SystemExit, match="--one-class supports"):  # a supervised method has one class only
        script.main(["--method", "supcon", "--one-class", *common])
    capsys.readouterr()
    script.main(["--table", "--results", str(tmp_path / "results")])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| vje |"))
    assert f"{record['mean_auroc']['likelihood']:.3f}" in row
