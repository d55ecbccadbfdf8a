"""VCL as a Pyro model/guide pair: the objective it computes, a user's own SVI loop, Predictive."""

import math

import pyro
import pytest
import torch
from _digits import two_views
from pyro import poutine
from pyro.infer import SVI, Predictive, Trace_ELBO

from distributions import ProjectedNormal, gaussian_kl_bound
from vprob.losses import info_nce, supcon
from vprob.methods import get_method
from vprob.models import VCL
from vprob.nets import DigitsConvNet


def log_sphere_area(d):
    return math.log(2) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


@pytest.mark.parametrize("supervised", [False, True])
def test_bound_objective_is_contrastive_plus_normalized_gaussian_kl(digits, supervised):
    pyro.clear_param_store()
    torch.manual_seed(1)
    vcl = VCL(DigitsConvNet(), dim=8, supervised=supervised, kl="bound", beta=0.7, tau=0.2)
    x1, x2, labels = two_views(digits)
    loss, stats = vcl.training_loss(torch.stack([x1, x2]), labels)
    # Independently: the Gaussian bound from the posterior parameters, averaged over the 2B views, / d.
    loc, scale = vcl.posterior(torch.cat([x1, x2]))
    expected_kl = 0.7 * gaussian_kl_bound(ProjectedNormal(loc, scale)).mean() / 8
    torch.testing.assert_close(stats["kl_term"], expected_kl.detach(), rtol=1e-4, atol=1e-5)
    expected_loss = stats["contrastive"] + expected_kl.detach()
    torch.testing.assert_close(loss.detach(), expected_loss, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("supervised", [False, True])
def test_exact_objective_matches_hand_written_elbo(digits, supervised):
    """-ELBO / 2B = L_con(z) + beta/d * mean(log q(z) - log p(z)) at the guide's own sample z."""
    x1, x2, labels = (t.double() if t.is_floating_point() else t for t in two_views(digits, batch=16))
    torch.set_default_dtype(torch.float64)
    pyro.clear_param_store()
    vcl = VCL(DigitsConvNet(), dim=6, supervised=supervised, kl="exact", beta=2.0, tau=0.3).double()
    torch.manual_seed(5)
    loss = Trace_ELBO().differentiable_loss(vcl.model, vcl.guide, x1, x2, labels) / 32
    torch.manual_seed(5)
    guide_trace = poutine.trace(vcl.guide).get_trace(x1, x2, labels)
    z = guide_trace.nodes["z"]["value"]
    loc, scale = vcl.posterior(torch.cat([x1, x2]))
    log_q = ProjectedNormal(loc.view(2, 16, 6), scale.view(2, 16, 6)).log_prob(z)
    log_p = -log_sphere_area(6)
    contrastive = supcon(z, labels, tau=0.3) if supervised else info_nce(z, tau=0.3)
    expected = contrastive + 2.0 / 6 * (log_q - log_p).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-10)


def test_exact_kl_is_below_the_gaussian_bound():
    """Data processing: the Monte Carlo exact KL estimate stays below the bound (d = 16)."""
    torch.manual_seed(0)
    loc, scale = torch.randn(4, 16), torch.rand(4, 16) + 0.3
    posterior = ProjectedNormal(loc, scale)
    z = posterior.sample((4000,))
    exact = (posterior.log_prob(z) + log_sphere_area(16)).mean(0)
    assert torch.all(exact < gaussian_kl_bound(posterior))
    assert torch.all(exact > 0)


@pytest.mark.parametrize("kl", ["bound", "exact"])
def test_user_svi_loop_reduces_the_loss_on_digits(digits, kl):
    pyro.clear_param_store()
    torch.manual_seed(0)
    vcl = VCL(DigitsConvNet(), dim=16, kl=kl, tau=0.2)
    svi = SVI(vcl.model, vcl.guide, pyro.optim.Adam({"lr": 2e-3}), Trace_ELBO())
    losses = []
    for step in range(40):
        x1, x2, _ = two_views(digits, batch=128, seed=step)
        losses.append(svi.step(x1, x2) / 256)
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 0.3


def test_predictive_draws_posterior_embeddings_on_the_sphere(digits):
    pyro.clear_param_store()
    vcl = VCL(DigitsConvNet(), dim=8)
    x1, x2, _ = two_views(digits, batch=10)
    vcl.eval()
    samples = Predictive(vcl.model, guide=vcl.guide, num_samples=5, return_sites=["z"])(x1, x2)["z"]
    assert samples.shape == (5, 2, 10, 8)
    torch.testing.assert_close(samples.norm(dim=-1), torch.ones(5, 2, 10))
    # Different draws differ (they are samples, not the point embedding).
    assert (samples[0] - samples[1]).abs().max() > 1e-4


def test_uncertainty_scores_and_point_embedding(digits):
    vcl = VCL(DigitsConvNet(), dim=8).eval()
    x1, _, _ = two_views(digits, batch=12)
    scores = vcl.uncertainty(x1)
    loc, scale = vcl.posterior(x1)
    torch.testing.assert_close(scores["log_det"], (scale**2).log().sum(-1))
    # The scale-free score does not change when mu and sigma are scaled together.
    shifted = scores["log_det_scale_free"]
    torch.testing.assert_close(shifted, (scale**2).log().sum(-1) - 16 * loc.norm(dim=-1).log())
    torch.testing.assert_close(vcl.embed(x1).norm(dim=-1), torch.ones(12))


def test_bad_arguments():
    with pytest.raises(ValueError, match="dim"):
        VCL(DigitsConvNet(), dim=1)
    with pytest.raises(ValueError, match="kl"):
        VCL(DigitsConvNet(), dim=4, kl="approximate")
    with pytest.raises(ValueError, match="tau"):
        VCL(DigitsConvNet(), dim=4, tau=0.0)
    with pytest.raises(ValueError, match="method"):
        get_method("vsimsiam")
    vsupcon = VCL(DigitsConvNet(), dim=4, supervised=True)
    with pytest.raises(ValueError, match="labels"):
        vsupcon.training_loss(torch.zeros(2, 4, 1, 8, 8))


@pytest.mark.parametrize("posterior", ["vmf", "power_spherical"])
def test_vmf_and_power_spherical_posteriors_use_their_exact_analytic_kl(digits, posterior):
    """-ELBO / 2B = L_con(z) + beta/d * mean KL(q || U) with the closed-form KL (not a bound, not Monte
    Carlo) at the guide's own sample z; the KL checked against log q(z) - log p(z) averaged over draws."""
    from distributions import HypersphericalUniform, PowerSpherical, VonMisesFisher

    pyro.clear_param_store()
    torch.manual_seed(1)
    vcl = VCL(DigitsConvNet(), dim=8, beta=0.7, tau=0.2, posterior=posterior)
    x1, x2, labels = two_views(digits, batch=32)
    torch.manual_seed(4)
    loss, stats = vcl.training_loss(torch.stack([x1, x2]), labels)
    torch.manual_seed(4)
    z = poutine.trace(vcl.guide).get_trace(x1, x2, labels).nodes["z"]["value"]
    direction, kappa = vcl.posterior(torch.cat([x1, x2]))
    assert direction.shape == (64, 8) and kappa.shape == (64,)
    family = VonMisesFisher if posterior == "vmf" else PowerSpherical
    q = family(direction.view(2, 32, 8), kappa.view(2, 32))
    kl = torch.distributions.kl_divergence(q, HypersphericalUniform(8))
    expected = info_nce(z, tau=0.2) + 0.7 / 8 * kl.mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    # The registered KL is E_q[log q - log p] (a Monte Carlo check of what the ELBO used).
    draws = q.sample((4000,))
    monte_carlo = (q.log_prob(draws) + log_sphere_area(8)).mean(0)
    torch.testing.assert_close(kl, monte_carlo, rtol=0.05, atol=0.02)
    assert stats["log_det"].isfinite() and vcl.uncertainty(x1)["log_det"].shape == (32,)


def test_the_posterior_option_reaches_the_model_and_refuses_unknown_families():
    model = get_method("vsupcon").from_options(DigitsConvNet(), {"dim": 8, "posterior": "vmf"})
    assert model.posterior_family == "vmf" and model.head.out_dim == 9  # d directions + one concentration
    with pytest.raises(ValueError, match="posterior must be one of"):
        VCL(DigitsConvNet(), dim=8, posterior="gaussian")
