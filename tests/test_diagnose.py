"""``diagnose_run`` end to end on tiny digits runs: a variational method gets every section, a deterministic
one gets the sections that need no posterior and says why it skipped the rest."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from vprob.config import make_config
from vprob.data import load_digits
from vprob.diagnose import diagnose_run
from vprob.diagnostics import CORRUPTIONS, read_netcdf
from vprob.train import train

SMALL = dict(max_images=400, max_uncertainty_images=48, max_posterior_images=12, num_samples=20, num_chains=3)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny VSimCLR and SimCLR runs on digits (dim 8; 4 steps of the first epoch: the diagnostics need a
    checkpoint, not a good model), and their reports: VSimCLR's in the default folder RUN_DIR/report,
    SimCLR's in a folder of our choice."""
    root = tmp_path_factory.mktemp("diagnose")
    out = {}
    for method in ("vsimclr", "simclr"):
        run_dir = root / method
        config = make_config(
            method=method, epochs=1, batch_size=128, dim=8, device="cpu", run_dir=str(run_dir), max_steps=4
        )
        train(config, progress=False)
        out_dir = None if method == "vsimclr" else root / "simclr-report"
        report = diagnose_run(run_dir, out_dir=out_dir, device="cpu", **SMALL)
        out[method] = (run_dir, Path(report["out_dir"]), report)
    return out


def _finite(x) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def test_report_folders(runs):
    run_dir, folder, _ = runs["vsimclr"]
    assert folder == run_dir / "report"
    run_dir, folder, _ = runs["simclr"]
    assert folder.name == "simclr-report" and not (run_dir / "report").exists()


def test_every_method_gets_collapse_and_mutual_information(runs):
    for method, (_, folder, report) in runs.items():
        on_disk = json.loads((folder / "report.json").read_text())
        assert on_disk == report
        assert report["method"] == method and report["dim"] == 8
        for name in ("backbone", "embedding"):
            collapse = report["collapse"][name]
            assert 1.0 <= collapse["effective_rank"] <= collapse["num_dims"]
            assert collapse["singular_values"] == sorted(collapse["singular_values"], reverse=True)
            mi = report["mutual_information"][name]
            assert mi["label_entropy_nats"] == pytest.approx(math.log(10), abs=0.01)  # balanced digits
            assert _finite(mi["mi_lower_bound_nats"])
            assert mi["mi_lower_bound_nats"] <= mi["label_entropy_nats"]
            assert mi["mi_lower_bound_bits"] == pytest.approx(mi["mi_lower_bound_nats"] / math.log(2))
        assert report["collapse"]["embedding"]["num_dims"] == 8
        assert report["subsample"]["test_images"] == len(load_digits()[1])  # the whole split (< 400)
        assert report["subsample"]["train_images"] == 400
        assert (folder / "spectrum.png").stat().st_size > 0
        assert (folder / "training_curves.png").stat().st_size > 0
        assert "timing_s" in report and report["timing_s"]["total"] > 0


def test_variational_run_gets_uncertainty_ood_posterior_and_geometry(runs):
    _, folder, report = runs["vsimclr"]
    uncertainty = report["uncertainty"]
    assert uncertainty["score_names"] == ["log_det", "log_det_scale_free"]
    assert set(uncertainty["spearman"]) == set(CORRUPTIONS)
    for by_score in uncertainty["spearman"].values():
        for rho in by_score.values():
            assert rho is None or -1.0 <= rho <= 1.0  # None: a constant mean score (NaN in JSON)
    assert set(uncertainty["mean_score"]["contrast"]["log_det"]) == {"0", "1", "2", "3", "4", "5"}
    aurocs = report["ood"]["auroc"]["log_det"]
    near = {f"{name}_s5" for name in CORRUPTIONS}
    assert set(aurocs) == {"uniform_noise", "corruptions_s5_mean_over_set"} | near
    assert all(0.0 <= value <= 1.0 for value in aurocs.values())
    assert aurocs["corruptions_s5_mean_over_set"] == pytest.approx(sum(aurocs[k] for k in near) / len(near))
    # The headline: per-image Spearman, mean over images, then over the 15 corruptions.
    assert uncertainty["corruption_set"]["complete"] is True and len(CORRUPTIONS) == 15
    headline = uncertainty["per_image_spearman_mean_over_set"]["log_det"]["mean"]
    per_corruption = [uncertainty["per_image_spearman"][c]["log_det"]["mean"] for c in CORRUPTIONS]
    assert headline == pytest.approx(sum(per_corruption) / 15) and -1.0 <= headline <= 1.0
    assert "ood.other_dataset" in report["skipped"]  # digits has no second data set offline

    posterior = report["posterior"]
    assert (posterior["num_images"], posterior["num_chains"], posterior["num_draws"]) == (12, 3, 20)
    for name in ("cos_to_centroid", "geodesic_distance_to_mean"):
        stats = posterior["quantities"][name]
        assert stats["num_images"] == 12 and stats["ess_bulk_mean"] > 0 and stats["hdi_width_mean"] >= 0
    idata = read_netcdf(folder / "posterior.nc")
    assert idata.posterior["cos_to_centroid"].shape == (3, 20, 12)
    assert (folder / "posterior_summary.csv").read_text().count("\n") == 1 + 2 * 12
    geometry = report["geometry"]
    assert geometry["on_manifold"] is True
    assert 0.0 < geometry["geodesic_spread_mean"] < math.pi
    assert geometry["frechet_gradient_norm_max"] >= 0.0
    assert report["collapse"]["posterior_samples"]["num_rows"] == 3 * 20 * 12
    for figure in ("uncertainty_vs_severity_log_det", "score_histograms_log_det", "spectrum"):
        assert (folder / report["figures"][figure]).stat().st_size > 0
    assert set(report["skipped"]) == {"ood.other_dataset", "figures.cct_weights"}


def test_deterministic_run_says_what_it_skipped(runs):
    _, folder, report = runs["simclr"]
    for section in ("uncertainty", "ood", "posterior", "geometry"):
        assert "deterministic" in report[section]["skipped"]
        assert report["skipped"][section] == report[section]["skipped"]
    assert "skipped" in report["collapse"]["posterior_samples"]
    assert not (folder / "posterior.nc").exists()
    assert set(report["figures"]) == {"spectrum", "training_curves"}


def test_digits_as_the_cifar_far_ood_set_and_json_safety():
    import torch

    from vprob.diagnose import _far_ood_images
    from vprob.jsonio import json_safe

    like = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    images = _far_ood_images("digits", 7, like, torch.Generator().manual_seed(0))
    assert images.shape == (7, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.equal(images[:, 0], images[:, 2])  # grey repeated over RGB
    # An exact 4x box upsampling: every 4x4 block is one digit pixel.
    blocks = images[:, 0].view(7, 8, 4, 8, 4).float()
    assert torch.equal(blocks.amax(dim=(2, 4)), blocks.amin(dim=(2, 4)))
    assert int(images.max()) > 200  # digits' 0..16 scale was mapped to 0..255
    safe = json_safe({"a": float("nan"), 1: torch.tensor([1.0, float("inf")]), "b": (True, None, 2)})
    expected = {"a": None, "1": [1.0, None], "b": [True, None, 2]}
    assert json.loads(json.dumps(safe, allow_nan=False)) == expected


def test_posterior_false_skips_only_the_posterior_sections(runs, tmp_path):
    run_dir, _, full = runs["vsimclr"]
    report = diagnose_run(run_dir, out_dir=tmp_path / "light", device="cpu", posterior=False, **SMALL)
    for section in ("posterior", "geometry"):
        assert "not requested" in report[section]["skipped"]
    assert not (tmp_path / "light" / "posterior.nc").exists()
    # Every other number is the one of the full report (same seed, same subsets; to rounding).
    assert report["collapse"]["embedding"]["singular_values"] == pytest.approx(
        full["collapse"]["embedding"]["singular_values"], rel=1e-6
    )
    assert report["uncertainty"]["spearman_overall"] == pytest.approx(full["uncertainty"]["spearman_overall"])
