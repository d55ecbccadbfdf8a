"""Every figure function writes a non-empty PNG of a sensible size and returns its path."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import pytest
import torch
import torch.nn.functional as F

from vprob.losses import cct
from vprob.plots import (
    plot_cct_weights,
    plot_score_histograms,
    plot_spectrum,
    plot_sphere_samples,
    plot_training_curves,
    plot_uncertainty_vs_severity,
)


def _assert_png(path, min_pixels: int = 200):
    assert path.is_file() and path.suffix == ".png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = mpimg.imread(path)
    assert image.shape[0] >= min_pixels and image.shape[1] >= min_pixels
    assert image[..., :3].std() > 0.01  # something was drawn, not a blank canvas


def test_plot_spectrum(tmp_path):
    spectra = {"backbone": torch.linspace(10, 0.1, 64), "embedding": torch.tensor([3.0, 1.0, 0.1, 0.0])}
    path = plot_spectrum(spectra, tmp_path / "deep" / "spectrum.png")
    assert path == tmp_path / "deep" / "spectrum.png"
    _assert_png(path)


def test_plot_uncertainty_vs_severity(tmp_path):
    means = {
        "gaussian_noise": {0: 1.0, 1: 1.2, 2: 1.5, 3: 1.7, 4: 2.0, 5: 2.4},
        "contrast": {0: 1.0, 1: 0.9, 2: 1.1, 3: 1.3, 4: 1.2, 5: 1.6},
    }
    _assert_png(
        plot_uncertainty_vs_severity(
            means,
            tmp_path / "u.png",
            score_name="log_det",
            spearman={"gaussian_noise": 1.0, "contrast": 0.83},
        )
    )


def test_plot_score_histograms_puts_the_auroc_in_the_legend(tmp_path):
    g = torch.Generator().manual_seed(0)
    scores_out = {"noise": torch.randn(200, generator=g) + 2, "other": torch.randn(100, generator=g) + 0.5}
    path = plot_score_histograms(
        torch.randn(300, generator=g), scores_out, tmp_path / "h.png", score_name="log_det"
    )
    _assert_png(path)


def test_plot_sphere_samples(tmp_path):
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(4, 1, 3, generator=g), dim=-1)
    samples = F.normalize(centres + 0.2 * torch.randn(4, 50, 3, generator=g), dim=-1)
    _assert_png(
        plot_sphere_samples(samples, tmp_path / "s.png", means=centres[:, 0], labels=["a", "b", "c", "d"])
    )
    _assert_png(plot_sphere_samples(samples[0], tmp_path / "one.png"))
    with pytest.raises(ValueError):
        plot_sphere_samples(torch.randn(2, 5, 4), tmp_path / "bad.png")


@pytest.mark.parametrize("channels", [1, 3])
def test_plot_cct_weights_from_the_loss(tmp_path, channels):
    views, batch = 3, 10
    z = torch.randn(views, batch, 8)
    _, weights = cct(z, return_weights=True)
    images = torch.randint(0, 256, (batch, channels, 8, 8), dtype=torch.uint8)
    _assert_png(plot_cct_weights(images, weights, tmp_path / "cct.png", queries=(0, 4, 9), top_k=4))
    # The plain-tensor form and float images work too.
    path = plot_cct_weights(
        images.float() / 255 - 0.5,
        (weights.attraction, weights.repulsion),
        tmp_path / "cct2.png",
        queries=(1,),
    )
    _assert_png(path, min_pixels=100)
    with pytest.raises(ValueError):
        plot_cct_weights(images[:5], weights, tmp_path / "bad.png")


def test_plot_training_curves_is_kept(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(
        "".join(
            json.dumps({"step": s, "loss": 5 - 0.1 * s, "contrastive": 4 - 0.1 * s}) + "\n"
            for s in range(1, 20)
        )
    )
    _assert_png(plot_training_curves(metrics, tmp_path / "curves.png"))
