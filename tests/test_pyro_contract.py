"""The contract every Pyro distribution keeps, checked on each of ours.

Pyro runs one battery of generic checks over all its distributions (``tests/distributions/
test_distributions.py`` in its repository: shapes of the support check, ``infer_shapes`` from argument shapes,
``log_prob`` and ``entropy`` shapes, refusal of values with the wrong event or batch shape, ``expand`` and
``expand_by`` agreeing with Pyro's default ``TorchDistribution.expand``, moments against samples). These are
the same checks, written for our classes and their parameters; the per-class test files hold the numerics
(mpmath, scipy, quadrature, goodness of fit). The expand checks compare densities of a small and a large
distribution on samples of each: a wrong view or a dropped broadcast in an ``expand`` shows up there.
"""

from __future__ import annotations

import copy
import itertools
import pickle

import pytest
import torch
from pyro.distributions import TorchDistribution

from distributions import (
    HypersphericalUniform,
    PolarStudentT,
    PowerSpherical,
    ProjectedNormal,
    VonMisesFisher,
)


def _unit(*shape: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


def _cases():
    """``(name, class, [parameter dicts])``: an unbatched and a batched set each, the batched one with a
    batch dimension of size 1 (for expanding an existing dimension) and broadcasting between parameters."""
    torch.manual_seed(0)
    f64 = {"dtype": torch.float64}
    return [
        (
            "ProjectedNormal, unit scale",
            ProjectedNormal,
            [{"loc": torch.tensor([1.0, -2.0, 0.5], **f64)}, {"loc": 2 * torch.randn(2, 1, 3, **f64)}],
        ),
        (
            "ProjectedNormal, isotropic",
            ProjectedNormal,
            [
                {"loc": torch.randn(4, **f64), "scale": 0.7},
                {"loc": torch.randn(2, 1, 4, **f64), "scale": 0.5 + torch.rand(3, 1, **f64)},
            ],
        ),
        (
            "ProjectedNormal, diagonal",
            ProjectedNormal,
            [
                {"loc": torch.randn(3, **f64), "scale": 0.5 + torch.rand(3, **f64)},
                {"loc": torch.randn(1, 2, 3, **f64), "scale": 0.5 + torch.rand(4, 1, 3, **f64)},
            ],
        ),
        (
            "HypersphericalUniform",
            HypersphericalUniform,
            [{"dim": 3, "dtype": torch.float64}, {"dim": 5, "batch_shape": (2, 1), "dtype": torch.float64}],
        ),
        (
            "PolarStudentT",
            PolarStudentT,
            [
                {"direction": _unit(3), "df": 4.0},
                {"direction": _unit(2, 1, 3), "df": 3.0 + torch.rand(2, 1, **f64), "scale": 0.5},
            ],
        ),
        (
            "VonMisesFisher",
            VonMisesFisher,
            [
                {"loc": _unit(3), "concentration": 5.0},
                {"loc": _unit(2, 1, 4), "concentration": 10 * torch.rand(3, **f64)},
            ],
        ),
        (
            "PowerSpherical",
            PowerSpherical,
            [
                {"loc": _unit(3), "concentration": 5.0},
                {"loc": _unit(2, 1, 4), "concentration": 10 * torch.rand(3, **f64)},
            ],
        ),
    ]


CASES = _cases()
IDS = [name for name, _, _ in CASES]


def _instances(case):
    _, cls, param_sets = case
    return [cls(**params) for params in param_sets]


def _assert_same_density(small, large) -> None:
    """``small`` and its expansion ``large`` give the same density on samples of either."""
    x = small.sample()
    torch.testing.assert_close(small.log_prob(x).expand(large.batch_shape), large.log_prob(x))
    x = large.sample()
    torch.testing.assert_close(small.log_prob(x), large.log_prob(x))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_support_check_shape_and_samples_inside(case):
    for d in _instances(case):
        assert d.support.event_dim == d.event_dim == 1
        assert not d.support.is_discrete
        x = d.sample((5,))
        inside = d.support.check(x)
        assert inside.shape == (5,) + d.batch_shape
        assert inside.all()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_infer_shapes_from_argument_shapes(case):
    _, cls, param_sets = case
    for params in param_sets:
        # As Pyro's generic test calls it: tensors by their shapes, anything else as ().
        shapes = {k: v.shape if torch.is_tensor(v) else () for k, v in params.items() if k != "dtype"}
        d = cls(**params)
        if cls is HypersphericalUniform:
            # Its event size is the value of an integer, which no shape carries: refused as Pyro refuses
            # LKJCholesky's, and answered from the shapes it documents (dim=(d,), batch_shape a shape).
            with pytest.raises(NotImplementedError):
                cls.infer_shapes(**shapes)
            shapes = {"dim": (params["dim"],), "batch_shape": tuple(params.get("batch_shape", ()))}
        assert cls.infer_shapes(**shapes) == (d.batch_shape, d.event_shape)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_log_prob_and_entropy_shapes(case):
    for d in _instances(case):
        for sample_shape in ((), (4,), (2, 3)):
            assert d.log_prob(d.sample(sample_shape)).shape == sample_shape + d.batch_shape
        # A value broadcast against the batch: one point for every batch member.
        one_point = d.sample()[(0,) * len(d.batch_shape)]
        assert d.log_prob(one_point).shape == d.batch_shape
        try:
            entropy = d.entropy()
        except NotImplementedError as e:  # no closed form (a diagonal projected normal, PolarStudentT)
            assert "Monte Carlo" in str(e), f"{case[0]}: the refusal names no estimator"
            continue
        assert entropy.shape == d.batch_shape


# Parameters with an event dimension (the rest are per batch member).
EVENT_PARAMETERS = {"loc", "direction"}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_log_prob_of_a_batch_is_each_member_alone(case):
    # The batched distribution against each member built on its own from the sliced parameters.
    _, cls, param_sets = case
    params = param_sets[1]
    d = cls(**params)
    x = d.sample((3,))
    batched = d.log_prob(x)
    for index in itertools.product(*[range(n) for n in d.batch_shape]):
        member_params = {}
        for name, value in params.items():
            if name == "batch_shape":
                value = ()
            elif torch.is_tensor(value):
                has_event = name in EVENT_PARAMETERS or (name == "scale" and cls is ProjectedNormal)
                value = value.expand(d.batch_shape + (value.shape[-1:] if has_event else ()))[index]
            member_params[name] = value
        member = cls(**member_params)
        at = (slice(None), *index)
        torch.testing.assert_close(member.log_prob(x[at]), batched[at])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_values_of_the_wrong_shape_are_refused(case):
    for d in _instances(case):
        with pytest.raises((ValueError, RuntimeError)):
            d.log_prob(torch.ones(d.batch_shape + d.event_shape + (1,), dtype=torch.float64))
        if d.batch_shape:
            shape = (d.batch_shape[0] + 1,) + d.batch_shape[1:] + d.event_shape
            with pytest.raises((ValueError, RuntimeError)):
                d.log_prob(torch.nn.functional.normalize(torch.ones(shape, dtype=torch.float64), dim=-1))


@pytest.mark.parametrize("default", [False, True], ids=["ours", "TorchDistribution.expand"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_expand_new_existing_and_subsequent_dims(case, default):
    def expand(d, shape):
        return TorchDistribution.expand(d, shape) if default else d.expand(shape)

    for small in _instances(case):
        for sample_shape, shape_type in (((), torch.Size), ((2,), tuple), ((2, 3), list)):
            large = expand(small, shape_type(sample_shape + tuple(small.batch_shape)))
            assert large.batch_shape == sample_shape + small.batch_shape
            assert type(large) is type(small) or default
            _assert_same_density(small, large)
            by = small.expand_by(shape_type(sample_shape))
            assert by.batch_shape == large.batch_shape
            _assert_same_density(small, by)
        for dim, size in enumerate(small.batch_shape):
            if size == 1:
                grown = list(small.batch_shape)
                grown[dim] = 5
                _assert_same_density(small, expand(small, torch.Size(grown)))
        d = small
        for shape in ((2, 1, 1), (2, 1, 3), (2, 5, 3)):
            d_next = expand(d, torch.Size(shape) + small.batch_shape)
            _assert_same_density(d, d_next)
            d = d_next


@pytest.mark.parametrize("default", [False, True], ids=["ours", "TorchDistribution.expand"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_expand_refuses_what_torch_refuses(case, default):
    for small in _instances(case):
        for initial, proposed in (((2, 1), (4, 3)), ((2, 4), (2, 2, 1)), ((1, 2, 1), (2, 1))):
            shape = torch.Size(initial) + small.batch_shape
            large = TorchDistribution.expand(small, shape) if default else small.expand(shape)
            with pytest.raises((RuntimeError, ValueError)):
                large.expand(torch.Size(proposed) + small.batch_shape)


# E[x] and the per-coordinate variance of x on the sphere. Not for the projected normal, whose `mean` is the
# directional centroid (as in Pyro's), nor for PolarStudentT, which has no moments in closed form.
MOMENT_CASES = [case for case in CASES if case[1] not in (ProjectedNormal, PolarStudentT)]


@pytest.mark.parametrize("case", MOMENT_CASES, ids=[name for name, _, _ in MOMENT_CASES])
def test_mean_and_variance_against_samples(case):
    torch.manual_seed(1)
    for d in _instances(case):
        x = d.sample((200_000,))
        torch.testing.assert_close(d.mean, x.mean(0), atol=0.01, rtol=0.0)
        torch.testing.assert_close(d.variance, x.var(0), atol=0.01, rtol=0.0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pickle_and_deepcopy_keep_the_density(case):
    # Multiprocessing (DataLoader workers, parallel MCMC chains) pickles what it ships.
    for d in _instances(case):
        x = d.sample((3,))
        for clone in (pickle.loads(pickle.dumps(d)), copy.deepcopy(d)):
            assert type(clone) is type(d) and clone.batch_shape == d.batch_shape
            torch.testing.assert_close(clone.log_prob(x), d.log_prob(x), rtol=0, atol=0)
