"""The `vprob` command: a real run through the entry point, and clear errors for bad input."""

import json
import subprocess
import sys

import pytest

from vprob.cli import main
from vprob.data import load_digits


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "vprob", *args], capture_output=True, text=True, timeout=300)


def test_train_then_evaluate(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code = main(
        [
            "train",
            "--method",
            "simclr",
            "--epochs",
            "1",
            "--batch-size",
            "128",
            "--dim",
            "8",
            "--device",
            "cpu",
            "--run-dir",
            str(run_dir),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "knn_top1_k200_weighted" in out and "linear_top1" in out and str(run_dir) in out
    assert main(["evaluate", str(run_dir), "--device", "cpu"]) == 0
    assert (run_dir / "eval.json").is_file()
    capsys.readouterr()
    assert main(["diagnose", str(run_dir), "--device", "cpu", "--max-images", "300"]) == 0
    out = capsys.readouterr().out
    assert "effective_rank_backbone" in out and "mi_lower_bound_nats_embedding" in out
    assert (run_dir / "report" / "report.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--method", "byol"], "invalid choice: 'byol' (choose from"),
        (["train", "--data", "imagenet"], "invalid choice: 'imagenet'"),
        (["train", "--kl", "tight"], "invalid choice: 'tight'"),
        (["train", "--epochs", "0"], "argument --epochs: must be > 0"),
        (["train", "--tau", "-1"], "must be > 0"),
        (["train", "--resume"], "--resume needs --run-dir"),
        (["train", "--backbone", "resnet9"], "must be a registered backbone"),
        (["train", "--stem", "cifar"], "does not apply to backbone 'digits_convnet'"),
        (["train", "--stem", "large"], "invalid choice: 'large'"),
        (["train", "--eval-every", "-1"], "argument --eval-every: must be >= 0"),
        (["export", "nowhere"], "the following arguments are required: --out"),
    ],
)
def test_bad_arguments_exit_non_zero_with_a_clear_message(args, message):
    result = run_cli(*args)
    assert result.returncode != 0
    assert message in result.stderr


def test_missing_cifar_folder_says_where_the_data_comes_from(tmp_path):
    result = run_cli(
        "train",
        "--data",
        "cifar10",
        "--data-dir",
        str(tmp_path / "nowhere"),
        "--device",
        "cpu",
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert result.returncode == 2
    assert "nowhere" in result.stderr and "train.npz" in result.stderr


def test_resume_of_a_foreign_checkpoint_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    result = run_cli("train", "--resume", "--run-dir", str(run_dir))
    assert result.returncode == 2
    assert "corrupt" in result.stderr
    assert (run_dir / "checkpoint.pt").read_bytes() == b"not a checkpoint"


@pytest.mark.slow
def test_default_main_job(tmp_path):
    """The README's first quick-start command: VSimCLR on digits, CPU, about a minute."""
    result = subprocess.run(
        [sys.executable, "-m", "vprob", "train", "--no-progress"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("knn_top1_k200_weighted:")[1].split()[0])
    assert accuracy > 0.85


def test_stop_after_pauses_with_exit_75_and_resume_finishes(tmp_path, capsys):
    run_dir = tmp_path / "run"
    common = ["--device", "cpu", "--run-dir", str(run_dir), "--no-progress"]
    code = main(
        [
            "train",
            "--method",
            "simclr",
            "--epochs",
            "2",
            "--batch-size",
            "128",
            "--dim",
            "8",
            "--stop-after",
            "0.001",
            *common,
        ]
    )
    assert code == 75
    assert "paused at step" in capsys.readouterr().err and not (run_dir / "results.json").exists()
    assert main(["train", "--resume", *common]) == 0
    assert json.loads((run_dir / "results.json").read_text())["steps"] == 2 * (len(load_digits()[0]) // 128)
    assert main(["diagnose", str(run_dir), "--device", "cpu", "--max-images", "200", "--no-posterior"]) == 0
