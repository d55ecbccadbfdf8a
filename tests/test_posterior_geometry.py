"""Posterior samples to arviz (shapes, ESS/HDI/R-hat columns, netCDF round trip) and geomstats geometry
(Fréchet mean of a symmetric cloud, first-order optimality, geodesic distance vs arccos, manifold check),
with torch's default dtype left alone."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vprob.diagnostics import (
    class_centroids,
    frechet_gradient_norm,
    frechet_mean,
    frechet_means,
    mean_geodesic_distance,
    on_manifold,
    posterior_geometry,
    posterior_samples,
    posterior_summary,
    read_netcdf,
    summary_statistics,
    to_inference_data,
    write_netcdf,
)
from vprob.diagnostics.posterior import angle_between, posterior_quantities

# ----------------------------------------------------------------------------------------- geometry


def _rotation_to(axis: torch.Tensor) -> torch.Tensor:
    """An orthogonal matrix whose last column is ``axis`` (unit, float64)."""
    d = axis.numel()
    basis = torch.cat([axis[:, None], torch.randn(d, d - 1, dtype=torch.float64)], dim=1)
    q, _ = torch.linalg.qr(basis)
    q = q * torch.sign(q[:, :1].T @ axis)  # make the first column +axis
    return torch.roll(q, shifts=-1, dims=1)


def _symmetric_cloud(axis: torch.Tensor, angle: float, count: int) -> torch.Tensor:
    """``count`` points at geodesic distance ``angle`` from ``axis`` on S^2, at equally spaced azimuths."""
    phi = torch.arange(count, dtype=torch.float64) * 2 * math.pi / count
    local = torch.stack(
        [math.sin(angle) * phi.cos(), math.sin(angle) * phi.sin(), torch.full_like(phi, math.cos(angle))],
        dim=1,
    )
    return local @ _rotation_to(axis).T


def _log_map_mean(points: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Mean Riemannian log map of points (S, d) at base (d,) on the sphere (closed form, float64)."""
    cos = (points @ base).clamp(-1, 1)
    theta = torch.arccos(cos)
    factor = torch.where(theta > 1e-12, theta / torch.sin(theta), torch.ones_like(theta))
    return (factor[:, None] * (points - cos[:, None] * base)).mean(dim=0)


def test_frechet_mean_of_a_symmetric_cloud_is_its_axis():
    axis = F.normalize(torch.tensor([0.3, -1.0, 0.5], dtype=torch.float64), dim=0)
    cloud = _symmetric_cloud(axis, angle=0.7, count=12)
    mean = frechet_mean(cloud)
    assert mean.dtype == torch.float64 and mean.shape == (3,)
    assert torch.allclose(mean, axis, atol=1e-8)
    assert float(mean_geodesic_distance(cloud, mean)) == pytest.approx(0.7, abs=1e-8)


def test_frechet_mean_is_a_critical_point_and_batched_agrees():
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(5, 1, 6, generator=g, dtype=torch.float64), dim=-1)
    # Skewed clouds: the Fréchet and extrinsic means differ, so the descent has work to do.
    noise = torch.randn(5, 40, 6, generator=g, dtype=torch.float64) * torch.linspace(0.1, 0.8, 6)
    samples = F.normalize(centres + noise, dim=-1)
    means = frechet_means(samples)
    assert means.shape == (5, 6)
    gradient = frechet_gradient_norm(samples, means)
    for row, mean, norm in zip(samples, means, gradient, strict=True):
        assert float(_log_map_mean(row, mean).norm()) < 1e-6  # the gradient of the Fréchet function
        assert float(norm) == pytest.approx(float(_log_map_mean(row, mean).norm()), abs=1e-9)
        assert torch.allclose(frechet_mean(row), mean, atol=1e-6)
    # Away from the mean the gradient is not zero, and geomstats' log map agrees with the closed form.
    assert float(frechet_gradient_norm(samples[0], samples[0, 0])) == pytest.approx(
        float(_log_map_mean(samples[0], samples[0, 0]).norm()), rel=1e-6
    )
    extrinsic = F.normalize(samples.mean(dim=1), dim=-1)
    assert float(angle_between(means, extrinsic).max()) > 1e-4


def test_mean_geodesic_distance_matches_arccos():
    g = torch.Generator().manual_seed(1)
    samples = F.normalize(torch.randn(4, 30, 5, generator=g), dim=-1)
    means = F.normalize(torch.randn(4, 5, generator=g), dim=-1)
    expected = np.arccos(
        np.clip(np.einsum("nsd,nd->ns", samples.double().numpy(), means.double().numpy()), -1, 1)
    ).mean(axis=1)
    ours = mean_geodesic_distance(samples, means)
    assert ours.shape == (4,) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.double().numpy(), expected, rtol=1e-5)


def test_on_manifold_and_posterior_geometry():
    g = torch.Generator().manual_seed(2)
    samples = F.normalize(torch.randn(3, 20, 4, generator=g), dim=-1)
    assert on_manifold(samples)
    assert not on_manifold(samples * 1.01)
    assert torch.get_default_dtype() == torch.float32
    geometry = posterior_geometry(samples)
    assert geometry["on_manifold"] is True
    assert geometry["frechet_mean"].shape == (3, 4) and geometry["geodesic_spread"].shape == (3,)
    assert float(geometry["frechet_gradient_norm"].max()) < 1e-5
    assert torch.allclose(geometry["frechet_mean"].norm(dim=-1), torch.ones(3), atol=1e-6)


def test_circle_uses_the_closed_form_mean():
    angles = torch.tensor([0.1, 0.3, 0.5], dtype=torch.float64)
    points = torch.stack([angles.cos(), angles.sin()], dim=1)
    assert torch.allclose(
        frechet_means(points[None])[0],
        torch.tensor([math.cos(0.3), math.sin(0.3)], dtype=torch.float64),
        atol=1e-8,
    )


def test_pytorch_backend_leaves_the_default_dtype_float32():
    """geomstats' pytorch backend switches torch to float64 at import; geometry.py must undo it (run in a
    fresh process: the backend is chosen once per process)."""
    code = (
        "import torch, torch.nn.functional as F\n"
        "from vprob.diagnostics import frechet_mean, on_manifold\n"
        "x = F.normalize(torch.randn(10, 3), dim=-1)\n"
        "m = frechet_mean(x)\n"
        "assert torch.get_default_dtype() == torch.float32, torch.get_default_dtype()\n"
        "assert m.dtype == torch.float32 and on_manifold(x)\n"
        "assert torch.get_default_dtype() == torch.float32\n"
        "import geomstats._backend as b; assert b.get_backend_name() == 'pytorch'\n"
        "print('ok')\n"
    )
    env = {**os.environ, "GEOMSTATS_BACKEND": "pytorch"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


# ---------------------------------------------------------------------------------------- posterior


class _SpherePair(nn.Module):
    """A VCL-shaped Pyro pair built from Pyro's own ProjectedNormal: latent "z" (2, B, d) in plates
    "views" (dim -2) x "images" (dim -1), posterior concentration from a linear map of the input."""

    def __init__(self, d: int = 3, concentration: float = 20.0) -> None:
        super().__init__()
        self.linear = nn.Linear(4, d)
        self.norm = nn.BatchNorm1d(4)
        self.dim, self.concentration = d, concentration

    def direction(self, x):
        return F.normalize(self.linear(self.norm(x)), dim=-1)

    def model(self, x1, x2, labels=None):
        batch = x1.shape[0]
        with pyro.plate("views", 2, dim=-2), pyro.plate("images", batch, dim=-1):
            z = pyro.sample("z", dist.ProjectedNormal(torch.zeros(self.dim)).expand([2, batch]))
        pyro.factor("contrastive", (z[0] * z[1]).sum())
        return z

    def guide(self, x1, x2, labels=None):
        pyro.module("sphere_pair", self)
        batch = x1.shape[0]
        loc = self.concentration * self.direction(torch.cat([x1, x2])).view(2, batch, self.dim)
        with pyro.plate("views", 2, dim=-2), pyro.plate("images", batch, dim=-1):
            return pyro.sample("z", dist.ProjectedNormal(loc))


@pytest.fixture
def pair_and_samples():
    pyro.clear_param_store()
    pair = _SpherePair().train()
    x = torch.randn(6, 4)
    samples = posterior_samples(pair, x, num_samples=40, num_chains=3, batch_size=4)
    return pair, x, samples


def test_posterior_samples_shapes_sphere_and_modes(pair_and_samples):
    pair, x, samples = pair_and_samples
    assert samples.shape == (3, 40, 6, 3)
    assert torch.allclose(samples.norm(dim=-1), torch.ones(()), atol=1e-5)
    assert pair.training  # restored after sampling in eval mode
    # The draws concentrate around the guide's direction (eval-mode BatchNorm).
    pair.eval()
    with torch.no_grad():
        direction = pair.direction(x)
    mean_direction = F.normalize(samples.mean(dim=(0, 1)), dim=-1)
    assert float((mean_direction * direction).sum(-1).min()) > 0.99
    both = posterior_samples(pair, x, num_samples=5, num_chains=2, view=None)
    assert both.shape == (2, 5, 2, 6, 3)
    sequential = posterior_samples(pair, x, num_samples=30, num_chains=2, batch_size=4, parallel=False)
    assert sequential.shape == (2, 30, 6, 3)
    assert float((F.normalize(sequential.mean(dim=(0, 1)), dim=-1) * direction).sum(-1).min()) > 0.98
    with pytest.raises(ValueError):
        posterior_samples(pair, x, num_samples=0)


def test_posterior_quantities_match_direct_formulas(pair_and_samples):
    _, _, samples = pair_and_samples
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    centroids = F.normalize(torch.randn(3, 3), dim=-1)
    quantities = posterior_quantities(samples, labels, centroids)
    z = F.normalize(samples.double(), dim=-1)
    expected_cos = torch.einsum("csnd,nd->csn", z, centroids.double()[labels])
    assert torch.allclose(quantities["cos_to_centroid"], expected_cos, atol=1e-12)
    means = F.normalize(z.mean(dim=(0, 1)), dim=-1)
    expected_angle = torch.arccos(torch.einsum("csnd,nd->csn", z, means).clamp(-1, 1))
    assert torch.allclose(quantities["geodesic_distance_to_mean"], expected_angle, atol=1e-6)


def test_class_centroids_are_unit_class_means():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, -1.0]])
    centroids = class_centroids(embeddings, torch.tensor([0, 1, 0, 2]), num_classes=4)
    assert torch.allclose(centroids, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0], [0.0, 0.0]]))


def test_inference_data_shapes_summary_and_netcdf_round_trip(pair_and_samples, tmp_path):
    _, _, samples = pair_and_samples
    labels = torch.tensor([0, 1, 0, 1, 2, 2])
    centroids = F.normalize(torch.randn(3, 3), dim=-1)
    idata = to_inference_data(
        samples,
        labels,
        centroids,
        image_index=[10, 11, 12, 13, 14, 15],
        include_samples=True,
        attrs={"method": "test"},
    )
    posterior = idata.posterior
    assert posterior["cos_to_centroid"].dims == ("chain", "draw", "image")
    assert posterior["cos_to_centroid"].shape == (3, 40, 6)
    assert posterior["geodesic_distance_to_mean"].shape == (3, 40, 6)
    assert posterior["z"].shape == (3, 40, 6, 3)
    assert list(posterior["image"].values) == [10, 11, 12, 13, 14, 15]
    assert list(idata.constant_data["label"].values) == [0, 1, 0, 1, 2, 2]

    summary = posterior_summary(idata)
    for column in ("mean", "sd", "hdi_3%", "hdi_97%", "ess_bulk", "ess_tail", "r_hat"):
        assert column in summary.columns
    assert len(summary) == 2 * 6  # z is not summarized
    # Independent draws: ESS of the order of the number of draws, R-hat near 1.
    assert (summary["ess_bulk"] > 40).all()
    assert (summary["r_hat"] < 1.1).all()
    hdi = summary["hdi_97%"] - summary["hdi_3%"]
    assert (hdi > 0).all()
    stats = summary_statistics(summary)
    assert set(stats) == {"cos_to_centroid", "geodesic_distance_to_mean"}
    assert stats["cos_to_centroid"]["num_images"] == 6
    assert stats["geodesic_distance_to_mean"]["hdi_width_mean"] == pytest.approx(float(hdi[6:].mean()))

    path = write_netcdf(idata, tmp_path / "sub" / "posterior.nc")
    assert path.is_file() and path.stat().st_size > 0
    back = read_netcdf(path)
    for name in ("cos_to_centroid", "geodesic_distance_to_mean", "z"):
        np.testing.assert_array_equal(back.posterior[name].values, posterior[name].values)
    np.testing.assert_array_equal(back.constant_data["label"].values, [0, 1, 0, 1, 2, 2])
    assert back.posterior.attrs["method"] == "test"


@pytest.mark.parametrize("kl", ["bound", "exact"])
def test_vcl_posterior_samples_follow_the_guide_distribution(kl):
    """Predictive over the real VCL pair (sequential) and over its guide (vectorized) return draws of
    PN(mu(x), diag sigma(x)^2): their mean resultants agree with direct draws from that distribution."""
    from distributions import ProjectedNormal
    from vprob.models import VCL
    from vprob.nets import DigitsConvNet

    pyro.clear_param_store()
    vcl = VCL(DigitsConvNet(feature_dim=16, width=8), dim=3, head_hidden=16, kl=kl).eval()
    last = [m for m in vcl.head.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():  # a concentrated posterior (|mu| ~ 1.5, sigma ~ 0.4): the test has teeth
        last.bias.copy_(torch.tensor([1.5, 0.0, 0.0, -2.0, -2.0, -2.0]))
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        loc, scale = vcl.posterior(x)
        theirs = ProjectedNormal(loc, scale).sample((8000,)).mean(dim=0)  # mean resultant (5, 3)
    vectorized = posterior_samples(vcl, x, num_samples=2000, num_chains=2)
    sequential = posterior_samples(vcl, x, num_samples=50, num_chains=2, parallel=False)
    assert vectorized.shape == (2, 2000, 5, 3) and sequential.shape == (2, 50, 5, 3)
    assert float(theirs.norm(dim=-1).min()) > 0.5
    for samples, tolerance in ((vectorized, 0.05), (sequential, 0.2)):  # > 5 standard errors
        assert torch.allclose(samples.norm(dim=-1), torch.ones(()), atol=1e-5)
        assert torch.allclose(samples.flatten(0, 1).mean(dim=0), theirs, atol=tolerance)
