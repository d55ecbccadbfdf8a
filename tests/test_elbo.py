"""The engine's sync-free ELBO equals Pyro's differentiable_loss in value and gradient."""

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from vprob.data import SimCLRAugment, load_digits
from vprob.models import VCL, VJE
from vprob.models.elbo import differentiable_loss
from vprob.nets import DigitsConvNet


@pytest.fixture(scope="module")
def views():
    train, _ = load_digits()
    generator = torch.Generator().manual_seed(0)
    augment = SimCLRAugment.for_dataset("digits", train)
    x = train.images[:24]
    return augment(x, generator), augment(x, generator), train.labels[:24]


def value_and_grads(loss_fn, module, seed):
    module.zero_grad()
    torch.manual_seed(seed)
    loss = loss_fn()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in module.parameters() if p.grad is not None]


@pytest.mark.parametrize(
    "make_model, elbo",
    [
        (lambda: VCL(DigitsConvNet(), dim=8, kl="bound"), TraceMeanField_ELBO()),
        (lambda: VCL(DigitsConvNet(), dim=8, kl="bound"), Trace_ELBO()),
        (lambda: VCL(DigitsConvNet(), dim=8, kl="exact"), Trace_ELBO()),
        (lambda: VCL(DigitsConvNet(), dim=8, kl="exact", supervised=True), TraceMeanField_ELBO()),
        (lambda: VJE(DigitsConvNet(feature_dim=16)), None),
        (lambda: VJE(DigitsConvNet(feature_dim=16), num_particles=3), None),
    ],
)
def test_equals_pyro_differentiable_loss(views, make_model, elbo):
    x1, x2, labels = views
    pyro.clear_param_store()
    model = make_model()
    elbo = elbo or model.elbo()
    args = (model.model, model.guide, x1, x2, labels)
    ours = value_and_grads(lambda: differentiable_loss(elbo, *args), model, 3)
    pyros = value_and_grads(lambda: elbo.differentiable_loss(*args), model, 3)
    torch.testing.assert_close(ours[0], pyros[0], rtol=1e-5, atol=1e-5)
    assert len(ours[1]) == len(pyros[1]) > 0
    for a, b in zip(ours[1], pyros[1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_score_function_gradient_equals_pyros():
    """A guide with a non-reparameterized (Bernoulli) site inside a plate: the surrogate's score-function
    term, weighted by the downstream log ratio, gives Pyro's gradient estimate."""
    import pyro.distributions as dist
    from torch.distributions import constraints

    x = torch.tensor([0.2, 2.9, -0.4, 3.3, 1.1])

    def model(x):
        p = pyro.param("prior_p", torch.tensor(0.4), constraint=constraints.unit_interval)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(p))
            pyro.sample("x", dist.Normal(3.0 * z, 1.0), obs=x)

    def guide(x):
        w, b = pyro.param("w", torch.tensor(0.5)), pyro.param("b", torch.tensor(-0.2))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(logits=w * x + b))

    def grads(loss_fn):
        torch.manual_seed(5)
        loss_fn().backward()
        params = [pyro.param(name).unconstrained() for name in ("prior_p", "w", "b")]
        out = [p.grad.clone() for p in params]
        for p in params:
            p.grad = None
        return out

    pyro.clear_param_store()
    elbo = Trace_ELBO(num_particles=4)
    ours = grads(lambda: differentiable_loss(elbo, model, guide, x))
    pyros = grads(lambda: elbo.differentiable_loss(model, guide, x))
    assert all(bool(g.abs().sum() > 0) for g in ours)  # the score-function term reaches w and b
    for a, b in zip(ours, pyros, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_the_private_pyro_functions_vprob_relies_on_are_still_there():
    """vprob.models.pyro_internals is the one place that reaches Pyro's private API; if a Pyro release renames
    or changes ELBO._get_traces or trace_elbo._compute_log_r, this fails with a message naming them."""
    from vprob.models import pyro_internals

    pyro_internals.check_available()
    assert pyro_internals.PRIVATE_NAMES == (
        "pyro.infer.ELBO._get_traces",
        "pyro.infer.trace_elbo._compute_log_r",
    )
