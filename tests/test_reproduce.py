"""benchmarks/reproduce_cifar10.py: one (method, seed) record per invocation, resumable, and the table."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce_cifar10.py"


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce_cifar10", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_records_resume_and_table(tmp_path, capsys):
    script = load_script()
    common = ["--data", "digits", "--epochs", "1", "--device", "cpu", "--no-compile", "--max-images", "300",
              "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
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
