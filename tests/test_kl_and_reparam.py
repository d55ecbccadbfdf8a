"""gaussian_kl_bound, the registered uniform-vs-uniform KL, and ProjectedNormalReparam inside Pyro inference.

Oracles: torch's own Normal-Normal KL, Monte Carlo estimates of the exact KL, and what TraceMeanField_ELBO
does when a KL is (or is not) dispatched.
"""

import math

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from _distribution_helpers import log_sphere_area
from pyro import poutine
from pyro.distributions.testing.gof import auto_goodness_of_fit
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.reparam import AutoReparam, MinimalReparam
from pyro.infer.reparam import ProjectedNormalReparam as PyroProjectedNormalReparam
from torch.distributions import kl_divergence

from distributions.hyperspherical_uniform import HypersphericalUniform
from distributions.kl import gaussian_kl_bound
from distributions.projected_normal import ProjectedNormal
from distributions.reparam import ProjectedNormalReparam

F64 = torch.float64


# --------------------------------------------------------------------------------------------------
# gaussian_kl_bound
@pytest.mark.parametrize("scale_shape", [(), (4, 1), (4, 7)])
def test_bound_is_the_gaussian_kl(scale_shape):
    loc = torch.randn(4, 7, dtype=F64)
    scale = 1.3 if scale_shape == () else torch.rand(scale_shape, dtype=F64) + 0.2
    bound = gaussian_kl_bound(ProjectedNormal(loc, scale))
    scale_t = torch.as_tensor(scale, dtype=F64).expand_as(loc)
    expected = kl_divergence(
        dist.Normal(loc, scale_t).to_event(1),
        dist.Normal(torch.zeros_like(loc), torch.ones_like(loc)).to_event(1),
    )
    assert bound.shape == (4,)
    torch.testing.assert_close(bound, expected, rtol=1e-13, atol=1e-13)


def test_bound_is_zero_for_the_uniform_and_accepts_pyro_projected_normal():
    assert gaussian_kl_bound(ProjectedNormal(torch.zeros(3, 5), 1.0)).abs().max() == 0
    c = torch.randn(2, 3, dtype=F64)
    theirs, ours = dist.ProjectedNormal(c), ProjectedNormal(c)
    torch.testing.assert_close(gaussian_kl_bound(theirs), gaussian_kl_bound(ours))
    with pytest.raises(TypeError, match="expected a ProjectedNormal"):
        gaussian_kl_bound(dist.Normal(0.0, 1.0))


@pytest.mark.parametrize("d", [3, 16])
def test_bound_dominates_the_exact_kl(d):
    # Exact KL(PN || U) = E_q[log q(u)] + log|S^{d-1}|, estimated by Monte Carlo through log_prob.
    loc = torch.linspace(-1.0, 2.0, d, dtype=F64)
    scale = torch.linspace(0.3, 1.2, d, dtype=F64)
    pn = ProjectedNormal(loc, scale)
    terms = pn.log_prob(pn.sample((20000,))) + log_sphere_area(d)
    exact, std_err = terms.mean(), terms.std() / math.sqrt(len(terms))
    assert exact > 4 * std_err  # a genuinely non-uniform case
    assert gaussian_kl_bound(pn) > exact + 4 * std_err  # strictly looser here, by data processing


def test_bound_is_not_registered_as_the_kl():
    with pytest.raises(NotImplementedError):
        kl_divergence(ProjectedNormal(torch.ones(3)), HypersphericalUniform(3))


# --------------------------------------------------------------------------------------------------
# KL(uniform || uniform)
def test_uniform_uniform_kl_is_exactly_zero_with_broadcast_shape():
    p = HypersphericalUniform(5, batch_shape=(2, 1), dtype=F64)
    q = HypersphericalUniform(5, batch_shape=(3,), dtype=F64)
    kl = kl_divergence(p, q)
    assert kl.shape == (2, 3) and kl.dtype == F64 and (kl == 0).all()
    with pytest.raises(ValueError, match="different dimension"):
        kl_divergence(HypersphericalUniform(3), HypersphericalUniform(4))


class _OffByOneUniform(HypersphericalUniform):
    """A guide whose log density is wrong by +1: a Monte Carlo KL would be 1 per element, the analytic 0."""

    def log_prob(self, value):
        return super().log_prob(value) + 1.0


def test_trace_mean_field_dispatches_to_the_registered_uniform_kl_inside_a_plate():
    def model():
        with pyro.plate("n", 5):
            pyro.sample("z", HypersphericalUniform(3))

    def guide():
        with pyro.plate("n", 5):
            pyro.sample("z", _OffByOneUniform(3))

    # The plate expands the guide distribution; a class-preserving expand keeps the subclass, so the KL
    # registered for (HypersphericalUniform, HypersphericalUniform) is found through the class hierarchy.
    guide_fn = poutine.trace(guide).get_trace().nodes["z"]["fn"]
    assert type(guide_fn) is _OffByOneUniform and guide_fn.batch_shape == (5,)
    assert TraceMeanField_ELBO().differentiable_loss(model, guide).item() == 0.0
    # Monte Carlo (what TraceMeanField_ELBO falls back to without a registered KL) sees the +1.
    assert Trace_ELBO().differentiable_loss(model, guide).item() == pytest.approx(5.0)


# --------------------------------------------------------------------------------------------------
# ProjectedNormalReparam
def _vcl_like_pair(loc, scale):
    """Prior PN(0, 1) (= uniform) and guide PN(loc, diag scale^2) over z of shape (2, B, d) in two plates."""
    views, batch, d = loc.shape

    def model():
        with pyro.plate("views", views, dim=-2), pyro.plate("images", batch, dim=-1):
            return pyro.sample("z", ProjectedNormal(torch.zeros(d, dtype=F64), 1.0).expand([views, batch]))

    def guide():
        with pyro.plate("views", views, dim=-2), pyro.plate("images", batch, dim=-1):
            return pyro.sample("z", ProjectedNormal(loc, scale))

    config = {"z": ProjectedNormalReparam()}
    return poutine.reparam(model, config), poutine.reparam(guide, config)


# With both sides reparameterized, the guide's deterministic site "z" is unknown to the model as a latent,
# and Pyro's model/guide check warns about it (as it does for pyro.deterministic in a guide).
@pytest.mark.filterwarnings("ignore:Found non-auxiliary vars in guide")
@pytest.mark.parametrize("scale_shape", [(2, 6, 1), (2, 6, 5)])
def test_trace_mean_field_kl_equals_gaussian_bound(scale_shape):
    loc = torch.randn(2, 6, 5, dtype=F64, requires_grad=True)
    scale = (torch.rand(scale_shape, dtype=F64) + 0.3).requires_grad_()
    model, guide = _vcl_like_pair(loc, scale)
    loss = TraceMeanField_ELBO().differentiable_loss(model, guide)
    bound = gaussian_kl_bound(ProjectedNormal(loc, scale)).sum()
    torch.testing.assert_close(loss, bound, rtol=1e-14, atol=0)
    # and the gradients agree too (the SVI objective is the bound)
    torch.testing.assert_close(
        torch.autograd.grad(loss, (loc, scale)), torch.autograd.grad(bound, (loc, scale)), rtol=1e-12, atol=0
    )
    # Trace_ELBO estimates the same bound by Monte Carlo.
    with torch.no_grad():
        draws = torch.stack([Trace_ELBO().differentiable_loss(model, guide) for _ in range(400)])
    assert abs(draws.mean() - bound.detach()) < 4 * draws.std() / math.sqrt(len(draws))


def test_reparam_sites():
    loc = torch.randn(2, 6, 5, dtype=F64)
    scale = torch.rand(2, 6, 5, dtype=F64) + 0.3
    model, guide = _vcl_like_pair(loc, scale)
    guide_trace = poutine.trace(guide).get_trace()
    aux = guide_trace.nodes["z_normal"]
    assert isinstance(aux["fn"], torch.distributions.Independent)
    torch.testing.assert_close(aux["fn"].base_dist.loc, loc)
    torch.testing.assert_close(aux["fn"].base_dist.scale, scale)
    z = guide_trace.nodes["z"]["value"]
    torch.testing.assert_close(z, aux["value"] / aux["value"].norm(dim=-1, keepdim=True))
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace()
    model_trace.compute_log_prob()
    assert model_trace.nodes["z"]["is_observed"] and model_trace.nodes["z"]["log_prob_sum"] == 0
    torch.testing.assert_close(model_trace.nodes["z"]["value"], z)


def test_autoguide_accepts_reparameterized_sphere_latent():
    pyro.clear_param_store()
    data = ProjectedNormal(torch.tensor([0.0, 4.0, 0.0])).sample((40,))

    def model(data):
        z = pyro.sample("z", ProjectedNormal(torch.zeros(3), 1.0))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", ProjectedNormal(4.0 * z), obs=data)

    with pytest.raises(ValueError, match="spherical"):
        AutoNormal(model)(data)
    reparam_model = poutine.reparam(model, {"z": ProjectedNormalReparam()})
    guide = AutoNormal(reparam_model)
    svi = SVI(reparam_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(150):
        svi.step(data)
    direction = guide.median(data)["z_normal"]
    assert (direction / direction.norm())[1] > 0.95


def test_reparam_with_a_given_value_inverts_the_projection():
    loc = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    scale = torch.tensor([0.5, 1.0, 2.0, 0.7], dtype=F64)
    value = torch.nn.functional.normalize(torch.tensor([0.3, -0.2, 0.9, 0.1], dtype=F64), dim=0)
    msg = {"name": "z", "fn": ProjectedNormal(loc, scale), "value": value, "is_observed": False}
    with poutine.trace() as tracer:
        out = ProjectedNormalReparam().apply(msg)
    torch.testing.assert_close(out["value"], value)
    x = tracer.trace.nodes["z_normal"]["value"]
    torch.testing.assert_close(x / x.norm(), value)
    # x sits at the most probable radius on its ray: d/dr [log N(r u; loc, scale) + (d - 1) log r] = 0.
    r = x.norm().clone().requires_grad_()
    objective = dist.Normal(loc, scale).log_prob(r * value).sum() + 3 * r.log()
    (slope,) = torch.autograd.grad(objective, r)
    assert abs(slope.item()) < 1e-10


def test_reparam_of_wrapped_distribution_and_errors():
    pn = ProjectedNormal(torch.randn(4, 3), 0.5).to_event(1)  # batch (), event (4, 3)
    with poutine.trace() as tracer:
        out = ProjectedNormalReparam().apply({"name": "z", "fn": pn, "value": None, "is_observed": False})
    assert out["value"].shape == (4, 3) and out["fn"].event_dim == 2
    assert tracer.trace.nodes["z_normal"]["fn"].event_shape == (4, 3)
    observed = {"name": "z", "fn": pn, "value": out["value"], "is_observed": True}
    with pytest.raises(NotImplementedError, match="observe"):
        ProjectedNormalReparam().apply(observed)
    with pytest.raises(TypeError, match="distributions.ProjectedNormal"):
        ProjectedNormalReparam().apply(
            {"name": "z", "fn": dist.ProjectedNormal(torch.ones(3)), "value": None, "is_observed": False}
        )


# --------------------------------------------------------------------------------------------------
# Pyro's strategies (MinimalReparam, AutoReparam) and Pyro's own ProjectedNormalReparam on our class
def _direction_model(scale):
    true = torch.tensor([0.0, 0.6, 0.8])
    data = ProjectedNormal(6.0 * true).sample((50,))

    def model():
        z = pyro.sample("z", ProjectedNormal(torch.zeros(3), scale))
        with pyro.plate("data", len(data)):
            pyro.sample("obs", ProjectedNormal(6.0 * z), obs=data)

    return model, true


@pytest.mark.parametrize("strategy", [MinimalReparam, AutoReparam])
@pytest.mark.parametrize("scale", [torch.ones(1), torch.tensor([1.0, 0.5, 2.0])], ids=["iso", "diag"])
def test_strategies_choose_our_reparam_and_autonormal_trains(strategy, scale):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model, true = _direction_model(scale)
    config = strategy()
    reparam_model = poutine.reparam(model, config=config)
    guide = AutoNormal(reparam_model)
    svi = SVI(reparam_model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(150):
        svi.step()
    assert type(config.config["z"]) is ProjectedNormalReparam  # ours, not Pyro's (unit covariance)
    assert config.config["obs"] is None  # observed: log_prob exists in every d, nothing to do
    # the direction the trained guide implies, through the model's deterministic site
    with torch.no_grad():
        zs = torch.stack(
            [
                poutine.trace(poutine.replay(reparam_model, trace=poutine.trace(guide).get_trace()))
                .get_trace()
                .nodes["z"]["value"]
                for _ in range(50)
            ]
        )
    mean_direction = zs.mean(0) / zs.mean(0).norm()
    assert torch.dot(mean_direction, true) > 0.98


def test_pyro_projected_normal_reparam_is_exact_on_our_isotropic_class():
    # Pyro's reparameterizer draws normalize(concentration + N(0, I)); ours reports concentration = loc/scale,
    # and PN(loc, s^2 I) = PN(loc / s, I), so the draws follow our distribution. Oracle: Pyro's gof test.
    loc = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    pn = ProjectedNormal(loc, 0.5)
    assert isinstance(pn, dist.ProjectedNormal)
    pyro.set_rng_seed(0)
    config = {"z": PyroProjectedNormalReparam()}
    site = poutine.reparam(lambda: pyro.sample("z", pn.expand([3000])), config)
    z = poutine.trace(site).get_trace().nodes["z"]["value"]
    assert auto_goodness_of_fit(z, pn.log_prob(z).exp(), dim=2) > 1 / 50
    # A reparameterizer that ignored the scale would sample PN(loc, 1): its mean cosine to the mean
    # direction is far from ours (Monte Carlo, 20,000 draws of each).
    cosine = z @ (loc / loc.norm())
    ours = ProjectedNormal(loc, 0.5).sample((20000,)) @ (loc / loc.norm())
    unscaled = ProjectedNormal(loc, 1.0).sample((20000,)) @ (loc / loc.norm())
    std_err = cosine.std() / math.sqrt(len(cosine))
    assert abs(cosine.mean() - ours.mean()) < 4 * std_err
    assert abs(cosine.mean() - unscaled.mean()) > 10 * std_err


def test_pyro_projected_normal_reparam_refuses_diagonal_scale_naming_ours():
    pn = ProjectedNormal(torch.ones(3), torch.tensor([1.0, 2.0, 3.0]))
    site = poutine.reparam(lambda: pyro.sample("z", pn), {"z": PyroProjectedNormalReparam()})
    with pytest.raises(ValueError, match="distributions.ProjectedNormalReparam"):
        poutine.trace(site).get_trace()
