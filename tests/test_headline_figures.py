"""benchmarks/headline_figures.py on two tiny diagnosed digits runs (SimCLR, VSimCLR): both figures and the
numbers behind them, read back from the reports."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest
import torch

from vprob.config import make_config
from vprob.diagnose import diagnose_run
from vprob.train import train

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "headline_figures.py"
METHODS = ("simclr", "vsimclr")


def load_script():
    spec = importlib.util.spec_from_file_location("headline_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """A folder holding tiny SimCLR and VSimCLR digits runs (3 steps: the figures need reports, not good
    models), each diagnosed on a few images. One intra-op thread, as conftest's per-test fixture sets (it
    is not active yet while a module fixture is built): with two threads on a busy 2-core machine the
    diagnosis's L-BFGS fits of the MI bound took 15 s instead of 1 s."""
    root = tmp_path_factory.mktemp("headline") / "runs"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for method in METHODS:
            run_dir = root / f"{method}-seed0"
            train(
                make_config(
                    method=method,
                    data="digits",
                    epochs=1,
                    max_steps=3,
                    batch_size=64,
                    dim=8,
                    device="cpu",
                    run_dir=str(run_dir),
                ),
                progress=False,
            )
            diagnose_run(
                run_dir,
                device="cpu",
                max_images=200,
                max_uncertainty_images=32,
                max_posterior_images=4,
                num_samples=5,
                num_chains=2,
            )
    finally:
        torch.set_num_threads(threads)
    return root


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.shape[0] >= 300 and image.shape[1] >= 500
    assert image[..., :3].std() > 0.01  # something was drawn


def test_figures_and_numbers(runs, tmp_path, capsys):
    out = tmp_path / "figures"
    # A quoted glob is expanded by the script; a stray file among the matches is skipped.
    (runs / "notes.txt").write_text("not a run\n")
    load_script().main([str(runs / "*"), "--out", str(out), "--title-suffix", "digits, CPU"])
    assert "skipping" in capsys.readouterr().err
    _assert_png(out / "collapse_spectra.png")
    _assert_png(out / "uncertainty_vs_severity.png")

    headline = json.loads((out / "headline.json").read_text())
    assert headline["title_suffix"] == "digits, CPU" and headline["representation"] == "embedding"
    by_method = {entry["method"]: entry for entry in headline["runs"]}
    assert set(by_method) == set(METHODS)
    for method, entry in by_method.items():
        report = json.loads((runs / f"{method}-seed0" / "report" / "report.json").read_text())
        collapse = report["collapse"]["embedding"]
        assert entry["effective_rank"] == collapse["effective_rank"]
        assert entry["normalized_spectrum"][0] == pytest.approx(1.0)
        assert len(entry["normalized_spectrum"]) == len(collapse["singular_values"]) == 8
        assert entry["seed"] == 0
    assert by_method["simclr"]["uncertainty"] is None  # deterministic: no panel
    assert set(headline["uncertainty"]) == {"vsimclr-bound"}
    report = json.loads((runs / "vsimclr-seed0" / "report" / "report.json").read_text())
    summary = headline["uncertainty"]["vsimclr-bound"]
    assert summary["score"] == "log_det" and summary["severities"] == [0, 1, 2, 3, 4, 5]
    assert set(summary["mean_score"]) == set(report["uncertainty"]["corruptions"])
    for corruption, curve in summary["mean_score"].items():
        assert len(curve) == 6
        expected = report["uncertainty"]["mean_score"][corruption]["log_det"]
        assert curve == pytest.approx([expected[str(s)] for s in range(6)])
        assert summary["change_from_clean"][corruption][0] == 0.0
    assert summary["spearman_overall"] == pytest.approx(report["uncertainty"]["spearman_overall"]["log_det"])


def test_backbone_and_missing_report(runs, tmp_path):
    script = load_script()
    headline = script.main(
        [str(runs / "simclr-seed0"), "--out", str(tmp_path / "b"), "--representation", "backbone"]
    )
    report = json.loads((runs / "simclr-seed0" / "report" / "report.json").read_text())
    assert headline["runs"][0]["effective_rank"] == report["collapse"]["backbone"]["effective_rank"]
    assert (tmp_path / "b" / "uncertainty_vs_severity.png").stat().st_size > 0  # "no variational run"
    undiagnosed = tmp_path / "not-diagnosed"
    undiagnosed.mkdir()
    with pytest.raises(SystemExit, match=r"run `vprob diagnose .*not-diagnosed` first"):
        script.main([str(undiagnosed), "--out", str(tmp_path / "c")])
