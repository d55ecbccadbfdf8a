"""The methods' wiring (vprob.methods), on a tiny linear encoder: every option reaches the loss or the model
exactly as given (the loss function is replaced by a recorder, so a dropped, swapped or defaulted keyword
shows even where its value would not change the number, e.g. ``gather`` in one process), the body's checks
and messages, the construction from options, and the registry. Written for #19; the numerical wiring (the
objective equal to the loss function called directly) is in tests/test_methods.py."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from vprob import methods
from vprob.losses import PROJECTIONS
from vprob.methods import METHODS, get_method, methods_with, register_method
from vprob.methods import cct as cct_module
from vprob.methods import projnce as projnce_module
from vprob.methods import simclr as simclr_module
from vprob.methods import supcon as supcon_module
from vprob.methods.base import Method

FEATURES = 6


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(4, FEATURES))
    encoder.feature_dim = FEATURES
    return encoder


def _views(num_views=2, batch=4):
    return torch.randn(num_views, batch, 1, 2, 2, generator=torch.Generator().manual_seed(1))


class _Recorder:
    """Stands in for a loss function: records its arguments and returns sum(z) (so the method's own
    embedding is checked too)."""

    def __init__(self):
        self.calls = []

    def __call__(self, z, *args, **kwargs):
        self.calls.append((z, args, kwargs))
        return z.sum()


@pytest.mark.parametrize(
    "name, module, loss_name, options, labels, args, kwargs",
    [
        (
            "simclr",
            simclr_module,
            "info_nce",
            dict(tau=0.3, num_views=3, chunk_size=5),
            None,
            (),
            dict(tau=0.3, chunk_size=5, gather=True),
        ),
        (
            "supcon",
            supcon_module,
            "supcon",
            dict(tau=0.4, chunk_size=0),
            torch.tensor([0, 1, 0, 1]),
            ("labels",),
            dict(tau=0.4, chunk_size=0, gather=True),
        ),
        (
            "projnce",
            projnce_module,
            "proj_nce",
            dict(tau=0.2, projection="median", beta=2.5, chunk_size=3),
            torch.tensor([0, 1, 0, 1]),
            ("labels",),
            dict(tau=0.2, projection="median", beta=2.5, mlp=None, chunk_size=3, gather=True),
        ),
        (
            "cct",
            cct_module,
            "cct",
            dict(t_pos=1.7, t_neg=0.3, num_views=3, detach_weights=True),
            None,
            (),
            dict(t_pos=1.7, t_neg=0.3, detach_weights=True),
        ),
    ],
)
def test_point_methods_pass_every_option_to_their_loss(
    monkeypatch, name, module, loss_name, options, labels, args, kwargs
):
    recorder = _Recorder()
    monkeypatch.setattr(module, loss_name, recorder)
    gather = get_method(name).capabilities.distributed
    model = get_method(name).from_options(_encoder(), {"dim": 3, "head_hidden": 5, **options}, gather=gather)
    views = _views(model.num_views)
    loss, stats = model.training_loss(views, labels)
    assert model.head.hidden_dim == 5 and model.dim == 3 and model.num_views == options.get("num_views", 2)
    ((z, got_args, got_kwargs),) = recorder.calls
    assert got_kwargs == kwargs
    assert len(got_args) == len(args) and all(a is labels for a in got_args)
    torch.testing.assert_close(z, model(views.flatten(0, 1)).view(model.num_views, 4, 3), rtol=0, atol=0)
    assert list(stats) == ["contrastive"] and torch.equal(stats["contrastive"], loss.detach())
    assert not stats["contrastive"].requires_grad and loss.requires_grad


def test_point_method_defaults_are_the_declared_ones_and_not_gathered(monkeypatch):
    """Built with no options, each point method passes the defaults of its declared options, and gather=False
    (a single process): the constructor's defaults are the declarations'."""
    expected = {
        "simclr": (simclr_module, "info_nce", dict(tau=0.07, chunk_size=None, gather=False)),
        "supcon": (supcon_module, "supcon", dict(tau=0.07, chunk_size=None, gather=False)),
        "projnce": (
            projnce_module,
            "proj_nce",
            dict(tau=0.07, projection="centroid", beta=1.0, mlp=None, chunk_size=None, gather=False),
        ),
        "cct": (cct_module, "cct", dict(t_pos=1.0, t_neg=0.9, detach_weights=False)),
    }
    for name, (module, loss_name, kwargs) in expected.items():
        recorder = _Recorder()
        monkeypatch.setattr(module, loss_name, recorder)
        model = get_method(name)(_encoder())
        assert model.dim == 128 and model.num_views == 2
        assert model.head.hidden_dim == FEATURES and model.head.out_dim == 128
        model.training_loss(_views(), torch.tensor([0, 1, 0, 1]))
        assert recorder.calls[0][2] == kwargs, name
    for name, method in METHODS.items():
        signature = inspect.signature(method.__init__).parameters
        for option in method.options:
            key = "hidden" if (name, option.name) == ("vje", "head_hidden") else option.name
            assert signature[key].default == option.default, (name, option.name)


def test_projnce_mlp_projection_is_owned_and_passed(monkeypatch):
    model = get_method("projnce")(_encoder(), dim=3, projection="mlp")
    assert isinstance(model.projection_mlp, methods.projnce.MLPProjection)
    assert model.projection_mlp in model.modules()
    recorder = _Recorder()
    monkeypatch.setattr(projnce_module, "proj_nce", recorder)
    model.training_loss(_views(), torch.tensor([0, 1, 0, 1]))
    assert recorder.calls[0][2]["mlp"] is model.projection_mlp and recorder.calls[0][2]["projection"] == "mlp"
    with pytest.raises(ValueError) as info:
        get_method("projnce")(_encoder(), projection="mean")
    assert str(info.value) == f"projection must be one of {PROJECTIONS}, got 'mean'"


def test_cct_refuses_gather_and_gives_its_weights():
    with pytest.raises(ValueError) as info:
        get_method("cct").from_options(_encoder(), {}, gather=True)
    assert str(info.value) == "cct has no distributed (gathered) form; train it in a single process"
    model = get_method("cct")(_encoder(), dim=3, t_pos=1.7, t_neg=0.3)
    z = torch.nn.functional.normalize(torch.randn(3, 4, 3), dim=-1)  # V = 3: t+ weighs two positives
    weights = model.weights(z)
    reference = cct_module.cct(z, t_pos=1.7, t_neg=0.3, return_weights=True)[1]
    for got, want in zip(weights, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    swapped = cct_module.cct(z, t_pos=0.3, t_neg=1.7, return_weights=True)[1]
    assert not all(torch.equal(a, b) for a, b in zip(weights, swapped, strict=True))


def test_point_embedding_checks_and_forward():
    cls = get_method("simclr")
    for bad in (1, 3.0, True):
        with pytest.raises(ValueError) as info:
            cls(_encoder(), dim=bad)
        assert str(info.value) == f"dim must be an integer >= 2, got {bad!r}"
        with pytest.raises(ValueError) as info:
            cls(_encoder(), num_views=bad)
        assert str(info.value) == f"num_views must be an integer >= 2, got {bad!r}"
    cls(_encoder(), dim=2, num_views=2)  # the smallest allowed
    body = methods.PointEmbedding(_encoder())
    assert (body.dim, body.num_views, body.head.in_dim, body.head.hidden_dim, body.head.out_dim) == (
        128,
        2,
        FEATURES,
        FEATURES,
        128,
    )
    assert (
        methods.PointEmbedding(_encoder(), feature_dim=7).head.in_dim == 7
    )  # given: not asked of the encoder
    model = cls(_encoder(), dim=3, head_hidden=5).double()
    x = torch.randn(4, 1, 2, 2, dtype=torch.double)
    z = model(x)
    assert z.dtype == torch.float32 and z.shape == (4, 3)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(model.embed(x), z, rtol=0, atol=0)
    with pytest.raises(ValueError) as info:
        model.training_loss(_views(3))
    assert str(info.value) == "simclr expects 2 views, got 3"
    with pytest.raises(ValueError) as info:
        get_method("supcon")(_encoder(), dim=3).training_loss(_views())
    assert str(info.value) == "labels are required for method 'supcon'"


def test_from_options_and_objective():
    class Fixed(Method, nn.Module):
        name = "fixed"

        def __init__(self, encoder, **kwargs):
            super().__init__()
            self.kwargs = kwargs

        def training_loss(self, views, labels=None, **kwargs):
            return views.sum(), {"kwargs": kwargs}

        def elbo(self):
            return "own elbo"

    options = {"a": 1}
    model = Fixed.from_options(_encoder(), options)
    assert model.kwargs == {"a": 1} and options == {"a": 1}
    assert Fixed.from_options(_encoder(), options, gather=True).kwargs == {"a": 1, "gather": True}
    assert model.objective() == model.training_loss
    with pytest.raises(ValueError) as info:
        model.objective(elbo="x")
    assert str(info.value) == "method 'fixed' is not variational: it takes no ELBO"
    Fixed.capabilities = methods.Capabilities(variational=True)
    assert model.objective()(torch.ones(2), None)[1] == {"kwargs": {"elbo": "own elbo"}}
    assert model.objective("given")(torch.ones(2), None)[1] == {"kwargs": {"elbo": "given"}}
    assert Fixed.option_names() == () and Method.capabilities == methods.Capabilities()
    with pytest.raises(NotImplementedError):
        Method.training_loss(model, torch.ones(1))
    with pytest.raises(NotImplementedError):
        Method.embed(model, torch.ones(1))


def test_variational_methods_build_their_model_from_the_options():
    cls = get_method("vsimclr")
    model = cls(_encoder(), dim=3, head_hidden=5, tau=0.5, kl="exact", beta=2.0, chunk_size=7, gather=True)
    assert (model.dim, model.tau, model.kl, model.beta, model.chunk_size, model.gather) == (
        3,
        0.5,
        "exact",
        2.0,
        7,
        True,
    )
    assert model.supervised is False and model.kl_reference_tau is None
    assert model.head.hidden_dim == 5 and model.posterior_family == "projected_normal"
    # beta given relative to the contrastive term at the reference temperature: beta * reference / tau.
    scaled = cls(_encoder(), dim=3, tau=0.5, beta=2.0, kl_reference_tau=0.07, posterior="vmf")
    assert scaled.beta == pytest.approx(2.0 * 0.07 / 0.5) and scaled.kl_reference_tau == 0.07
    assert scaled.posterior_family == "vmf"
    default = cls(_encoder())
    assert (default.dim, default.tau, default.kl, default.beta, default.chunk_size, default.gather) == (
        128,
        0.07,
        "bound",
        1.0,
        None,
        False,
    )
    assert default.head.hidden_dim == FEATURES
    assert get_method("vsupcon")(_encoder(), dim=3).supervised is True


def test_vje_from_options_maps_head_hidden_and_refuses_gather():
    cls = get_method("vje")
    model = cls.from_options(_encoder(), {"head_hidden": 5, "df": 3.0, "num_particles": 2})
    assert model.head.hidden_dim == 5 and model.df == 3.0 and model.num_particles == 2
    assert cls.from_options(_encoder(), {}).head.hidden_dim == FEATURES
    with pytest.raises(ValueError) as info:
        cls.from_options(_encoder(), {}, gather=True)
    assert str(info.value) == "vje has no multi-process form yet; train it in a single process"


def test_registry_lookups_and_messages():
    assert get_method("cct") is METHODS["cct"]
    names = ", ".join(METHODS)
    for bad in ("nope", ["simclr"]):
        with pytest.raises(ValueError) as info:
            get_method(bad)
        assert str(info.value) == f"unknown method {bad!r}; registered methods: {names}"
    assert methods_with() == tuple(METHODS)
    assert methods_with(variational=True, needs_labels=True) == ("vsupcon",)
    assert methods_with(variational=False, distributed=True) == ("simclr", "supcon", "projnce")

    with pytest.raises(TypeError) as info:
        register_method(nn.Linear)
    assert str(info.value) == f"register_method needs a subclass of vprob.methods.Method, got {nn.Linear!r}"
    with pytest.raises(TypeError):
        register_method(get_method("cct")(_encoder()))  # an instance, not a class
    for bad_name in (None, "two words", "simclr", 3):
        bad = type("Bad", (Method,), {} if bad_name is None else {"name": bad_name})
        with pytest.raises(ValueError) as info:
            register_method(bad)
        assert str(info.value) == (
            f"method name must be a new identifier, got {bad_name!r} (taken: {sorted(METHODS)})"
        )
    new = type("New", (Method,), {"name": "brand_new"})
    try:
        assert register_method(new) is new and METHODS["brand_new"] is new
    finally:
        METHODS.pop("brand_new", None)
