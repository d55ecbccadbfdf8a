"""Collapse, mutual information and uncertainty diagnostics against known answers and independent oracles
(numpy's SVD, scipy's entropy and Spearman, scikit-learn's ROC AUC)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from torch import nn

from vprob.diagnostics import (
    auroc,
    effective_rank,
    label_entropy,
    mutual_information_lower_bound,
    severity_correlation,
    singular_value_spectrum,
    spectrum_report,
    uncertainty_vs_corruption,
)
from vprob.diagnostics.uncertainty import per_image_severity_correlation, per_image_severity_summary

# ----------------------------------------------------------------------------------------- collapse


def _random_rotation(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


@pytest.mark.parametrize("k", [1, 3, 7])
def test_effective_rank_of_k_equal_directions_is_k(k):
    d = 10
    # Rows +e_i and -e_i for i < k: centred already, k equal singular values sqrt(2), the rest zero;
    # a random rotation must not change anything.
    eye = torch.eye(d, dtype=torch.float64)[:k]
    x = torch.cat([eye, -eye]) @ _random_rotation(d, k).T
    spectrum = singular_value_spectrum(x)
    assert spectrum.shape == (min(2 * k, d),)
    assert torch.allclose(spectrum[:k], torch.full((k,), math.sqrt(2), dtype=torch.float64))
    assert effective_rank(x) == pytest.approx(k, rel=1e-6)
    assert effective_rank(torch.tensor([1.0] * k + [0.0] * 3)) == pytest.approx(k)


def test_spectrum_matches_numpy_svd_of_the_centred_matrix():
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(1)) * torch.arange(1, 9) + 3.0
    ours = singular_value_spectrum(x).numpy()
    a = x.double().numpy()
    theirs = np.linalg.svd(a - a.mean(axis=0), compute_uv=False)
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    assert np.all(np.diff(ours) <= 0)
    # A shared offset is not a direction.
    np.testing.assert_allclose(singular_value_spectrum(x.double() + 100.0).numpy(), ours, rtol=1e-8)


def test_effective_rank_of_a_decaying_spectrum_is_exp_entropy():
    s = 0.5 ** torch.arange(12, dtype=torch.float64)
    expected = math.exp(scipy_entropy((s / s.sum()).numpy()))
    assert effective_rank(s) == pytest.approx(expected, rel=1e-12)
    assert 1.0 < effective_rank(s) < 12


def test_effective_rank_edge_cases():
    assert effective_rank(torch.ones(5, 4)) == 0.0  # every embedding identical: total collapse
    report = spectrum_report(torch.randn(20, 6))
    assert report["num_rows"] == 20 and report["num_dims"] == 6 and len(report["singular_values"]) == 6
    assert 1.0 <= report["effective_rank"] <= 6.0
    with pytest.raises(ValueError):
        singular_value_spectrum(torch.randn(5))
    with pytest.raises(ValueError):
        effective_rank(torch.tensor([1.0, -1.0]))


# -------------------------------------------------------------------------------------- information


def _balanced_labels(n_per_class: int, k: int) -> torch.Tensor:
    return torch.arange(k).repeat_interleave(n_per_class)


def test_label_entropy_matches_scipy():
    y = torch.tensor([0, 0, 1, 2, 2, 2, 5])
    counts = np.bincount(y.numpy())
    assert label_entropy(y) == pytest.approx(scipy_entropy(counts[counts > 0]))


def test_mi_bound_of_a_separable_toy_reaches_log_k():
    k, g = 5, torch.Generator().manual_seed(0)
    centres = 6.0 * torch.randn(k, 4, generator=g)
    y_train, y_test = _balanced_labels(60, k), _balanced_labels(40, k)
    z_train = centres[y_train] + 0.1 * torch.randn(len(y_train), 4, generator=g)
    z_test = centres[y_test] + 0.1 * torch.randn(len(y_test), 4, generator=g)
    result = mutual_information_lower_bound(z_train, y_train, z_test, y_test)
    assert result["label_entropy_nats"] == pytest.approx(math.log(k))
    assert result["mi_lower_bound_nats"] > 0.97 * math.log(k)
    assert result["mi_lower_bound_nats"] <= math.log(k) + 1e-9
    assert result["test_accuracy"] == 1.0
    assert result["mi_lower_bound_bits"] == pytest.approx(result["mi_lower_bound_nats"] / math.log(2))
    # Standardized features: the representation's scale does not matter.
    scaled = mutual_information_lower_bound(100 * z_train, y_train, 100 * z_test, y_test)
    assert scaled["mi_lower_bound_nats"] == pytest.approx(result["mi_lower_bound_nats"], abs=1e-3)


def test_mi_bound_of_independent_labels_is_about_zero():
    k, g = 4, torch.Generator().manual_seed(1)
    y_train, y_test = _balanced_labels(150, k), _balanced_labels(100, k)
    z_train, z_test = torch.randn(len(y_train), 8, generator=g), torch.randn(len(y_test), 8, generator=g)
    result = mutual_information_lower_bound(z_train, y_train, z_test, y_test)
    assert abs(result["mi_lower_bound_nats"]) < 0.05
    assert result["cross_entropy_nats"] == pytest.approx(math.log(k), abs=0.05)


def test_mi_bound_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        mutual_information_lower_bound(torch.randn(10, 3), torch.zeros(10), torch.randn(5, 4), torch.zeros(5))


# ------------------------------------------------------------------------------------- uncertainty


def test_severity_correlation_of_a_monotone_toy():
    increasing = {s: torch.full((7,), float(s) ** 2) + torch.randn(7) * 0.01 for s in range(6)}
    assert severity_correlation(increasing) == pytest.approx(1.0)
    assert severity_correlation([3.0, 2.0, 1.5, 1.0, 0.0, -4.0]) == pytest.approx(-1.0)
    assert math.isnan(severity_correlation([1.0, 1.0, 1.0]))


def test_severity_correlation_matches_scipy_on_a_non_monotone_toy():
    means = [0.3, 0.1, 0.5, 0.4, 0.9, 0.7]
    assert severity_correlation(means) == pytest.approx(spearmanr(range(6), means).statistic)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_matches_sklearn_with_ties(seed):
    g = torch.Generator().manual_seed(seed)
    scores_in = torch.randint(0, 6, (80,), generator=g).double()  # few distinct values: many ties
    scores_out = torch.randint(2, 9, (50,), generator=g).double()
    expected = roc_auc_score(np.r_[np.zeros(80), np.ones(50)], np.r_[scores_in.numpy(), scores_out.numpy()])
    assert auroc(scores_in, scores_out) == pytest.approx(expected, abs=1e-12)
    continuous_in, continuous_out = torch.randn(200, generator=g), torch.randn(70, generator=g) + 0.5
    expected = roc_auc_score(
        np.r_[np.zeros(200), np.ones(70)], np.r_[continuous_in.numpy(), continuous_out.numpy()]
    )
    assert auroc(continuous_in, continuous_out) == pytest.approx(expected, abs=1e-12)


def test_auroc_limits():
    a = torch.arange(10.0)
    assert auroc(a, a + 100) == 1.0
    assert auroc(a + 100, a) == 0.0
    assert auroc(a, a) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        auroc(torch.tensor([]), a)


class _PixelStatistics(nn.Module):
    """A "model" whose uncertainty scores are image statistics with a known response to corruptions."""

    def uncertainty(self, x):
        roughness = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean(dim=(1, 2, 3))
        return {"roughness": roughness, "brightness": x.mean(dim=(1, 2, 3))}


def test_uncertainty_vs_corruption_on_statistics_with_known_trends():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(16, 3, 8, 8, generator=g), size=32, mode="bilinear")
    images = (smooth * 180 + 40).round().to(torch.uint8)
    result = uncertainty_vs_corruption(
        _PixelStatistics(),
        images,
        lambda u: u.float() / 255.0,
        corruptions=("gaussian_noise", "contrast", "brightness"),
        generator=torch.Generator().manual_seed(1),
    )
    rho = result["spearman"]
    assert rho["gaussian_noise"]["roughness"] == pytest.approx(1.0)  # noise roughens
    assert rho["contrast"]["roughness"] == pytest.approx(-1.0)  # lower contrast smooths
    assert rho["brightness"]["brightness"] == pytest.approx(1.0)
    scores = result["scores"]["contrast"]["roughness"]
    assert sorted(scores) == [0, 1, 2, 3, 4, 5] and scores[3].shape == (16,)
    assert result["scores"]["gaussian_noise"]["roughness"][0] is scores[0]  # clean images scored once
    assert set(result["spearman_overall"]) == {"roughness", "brightness"}
    assert -1.0 <= result["spearman_overall"]["roughness"] <= 1.0
    with pytest.raises(ValueError):
        uncertainty_vs_corruption(_PixelStatistics(), images, lambda u: u.float(), corruptions=("spatter",))


# ------------------------------------------------------------------- uncertainty against severity per image


def _spearman(x, y) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on a constant input (and returns NaN, as we do)
        return float(spearmanr(x, y).statistic)


def test_per_image_severity_correlation_matches_scipy_per_image_and_pooled():
    g = torch.Generator().manual_seed(0)
    n = 40
    scores = {s: torch.randn(n, generator=g, dtype=torch.float64) + 0.4 * s for s in range(6)}
    scores[3][:5] = scores[2][:5]  # ties within an image
    scores[1][5] = scores[4][5] = scores[0][5]
    for s in range(6):
        scores[s][7] = 2.5  # a constant image: rho undefined
    result = per_image_severity_correlation(scores)
    matrix = np.stack([scores[s].numpy() for s in range(6)], axis=1)  # (N, 6)
    expected = np.array([_spearman(np.arange(6), row) for row in matrix])
    np.testing.assert_allclose(result["per_image"].numpy(), expected, rtol=0, atol=1e-12, equal_nan=True)
    defined = expected[~np.isnan(expected)]
    assert result["n_images"] == n and result["n_defined"] == n - 1
    assert result["mean"] == pytest.approx(defined.mean(), abs=1e-12)
    assert result["median"] == pytest.approx(np.median(defined), abs=1e-12)
    assert result["fraction_positive"] == pytest.approx(np.mean(defined > 0), abs=1e-12)
    pooled = _spearman(np.tile(np.arange(6), n), matrix.ravel())
    assert result["pooled"] == pytest.approx(pooled, abs=1e-12)
    assert 0.3 < result["mean"] < 1 and result["pooled"] < result["mean"]  # images differ more than this


def test_per_image_severity_correlation_with_unordered_severities_and_a_sequence():
    g = torch.Generator().manual_seed(1)
    columns = {s: torch.rand(9, generator=g) for s in (5, 0, 2, 1)}
    result = per_image_severity_correlation(columns)
    for i in range(9):
        expected = _spearman([5, 0, 2, 1], [float(columns[s][i]) for s in (5, 0, 2, 1)])
        assert float(result["per_image"][i]) == pytest.approx(expected, abs=1e-12)
    rising = per_image_severity_correlation([torch.tensor([0.0, 5.0]) + s for s in range(6)])
    assert rising["per_image"].tolist() == [1.0, 1.0] and rising["fraction_positive"] == 1.0
    falling = per_image_severity_correlation([torch.tensor([3.0]) - s**2 for s in range(4)])
    assert falling["mean"] == -1.0 and falling["fraction_positive"] == 0.0


def test_per_image_severity_correlation_refuses_bad_input():
    with pytest.raises(ValueError, match="two or more"):
        per_image_severity_correlation({0: torch.ones(3)})
    with pytest.raises(ValueError, match="same"):
        per_image_severity_correlation({0: torch.ones(3), 1: torch.ones(4)})
    with pytest.raises(ValueError, match="finite"):
        per_image_severity_correlation({0: torch.ones(3), 1: torch.tensor([1.0, float("nan"), 2.0])})


def test_per_image_severity_summary_averages_over_the_corruption_set():
    g = torch.Generator().manual_seed(2)

    def sweep(shift):
        return {
            "a": {s: torch.randn(12, generator=g) + shift * s for s in range(6)},
            "b": {s: torch.randn(12, generator=g) - shift * s for s in range(6)},
        }

    scores = {"fog": sweep(0.5), "snow": sweep(1.0), "gaussian_blur": sweep(-3.0)}
    summary = per_image_severity_summary(scores)
    for name in scores:
        for score in ("a", "b"):
            direct = per_image_severity_correlation(scores[name][score])
            for key in ("mean", "median", "fraction_positive", "pooled", "n_defined"):
                assert summary["per_corruption"][name][score][key] == direct[key]
    for score in ("a", "b"):
        for key in ("mean", "median", "fraction_positive", "pooled"):
            # the extra gaussian_blur is not part of the standard set
            expected = (
                summary["per_corruption"]["fog"][score][key] + summary["per_corruption"]["snow"][score][key]
            ) / 2
            assert summary["mean_over_set"][score][key] == pytest.approx(expected)
    assert summary["corruptions"] == ["snow", "fog"] and not summary["complete"]
    assert summary["mean_over_set"]["a"]["mean"] > 0.5 > -0.5 > summary["mean_over_set"]["b"]["mean"]
    with pytest.raises(ValueError, match="score names"):
        per_image_severity_summary({"fog": sweep(1.0), "snow": {"a": sweep(1.0)["a"]}})


def test_per_image_summary_of_a_sweep_on_statistics_with_known_trends():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(16, 3, 8, 8, generator=g), size=32, mode="bilinear")
    images = (smooth * 180 + 40).round().to(torch.uint8)
    result = uncertainty_vs_corruption(
        _PixelStatistics(),
        images,
        lambda u: u.float() / 255.0,
        corruptions=("gaussian_noise", "contrast"),
        generator=torch.Generator().manual_seed(1),
    )
    summary = per_image_severity_summary(result["scores"])
    roughness = summary["per_corruption"]
    assert roughness["gaussian_noise"]["roughness"]["mean"] == 1.0  # every image's own roughness rises
    assert roughness["gaussian_noise"]["roughness"]["fraction_positive"] == 1.0
    assert roughness["contrast"]["roughness"]["mean"] == -1.0
    assert summary["mean_over_set"]["roughness"]["mean"] == pytest.approx(0.0)
