"""Property-based tests (hypothesis) of issue #7: adversarial but valid input never gives NaN or inf, invalid
input always gives a ValueError (or, for the command line, a one-line message and a non-zero exit).

The fast set draws a few dozen examples per property; the ``slow`` variants draw many more.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distributions import HypersphericalUniform, PolarStudentT, ProjectedNormal
from vprob.cli import main
from vprob.losses import cct, info_nce, proj_nce, supcon

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Large dimensions cost milliseconds to seconds per example: a handful is enough to cover them.
LARGE_D_FAST = settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LARGE_D_SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SMALL_DIMS = st.sampled_from([2, 3, 4, 8, 33, 128])
LARGE_DIMS = st.sampled_from([1024, 4096])
DTYPES = st.sampled_from([torch.float32, torch.float64])
SEEDS = st.integers(0, 2**31 - 1)
# Scales log-uniform over 1e-4..1e4, |loc| over 0 and 1e-4..1e4.
LOG_SCALES = st.floats(-4.0, 4.0)
LOC_NORMS = st.one_of(st.just(0.0), st.floats(-4.0, 4.0).map(lambda e: 10.0**e))


def assert_finite(tensor: torch.Tensor, what: str) -> None:
    assert torch.isfinite(tensor).all(), f"{what} has non-finite values: {tensor}"


def unit_vectors(generator: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    return (x / x.norm(dim=-1, keepdim=True)).to(dtype)


# --------------------------------------------------------------------------------------------------
# ProjectedNormal


def check_projected_normal(
    d: int, dtype: torch.dtype, loc_norm: float, log_scale: float, diagonal: bool, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    batch = 3
    loc = (unit_vectors(generator, (batch, d), torch.float64) * loc_norm).to(dtype).requires_grad_()
    if diagonal:
        # Diagonal scales spread over two decades around 10**log_scale, clipped to the valid range.
        exponents = log_scale + torch.rand(batch, d, generator=generator, dtype=torch.float64) - 0.5
        scale = (10.0 ** exponents.clamp(-4, 4)).to(dtype)
    else:
        scale = torch.full((batch, 1), 10.0**log_scale, dtype=torch.float64).to(dtype)
    scale.requires_grad_()
    dist = ProjectedNormal(loc, scale, validate_args=True)
    samples = dist.rsample((2,))
    assert samples.dtype == dtype
    assert_finite(samples, "samples")
    torch.testing.assert_close(samples.norm(dim=-1), torch.ones(2, batch, dtype=dtype), atol=1e-4, rtol=0)
    # Densities at the samples (the peak, where cancellation bites) and at unrelated points.
    points = torch.cat([samples.detach(), unit_vectors(generator, (2, batch, d), dtype)])
    log_p = dist.log_prob(points)
    assert log_p.shape == (4, batch)
    assert_finite(log_p, "log_prob")
    loc_grad, scale_grad = torch.autograd.grad(log_p.sum(), (loc, scale))
    assert_finite(loc_grad, "d log_prob / d loc")
    assert_finite(scale_grad, "d log_prob / d scale")
    # Gradients through the reparameterized samples too (the KL and ELBO paths use them).
    sample_grads = torch.autograd.grad(samples.sum(), (loc, scale))
    for grad in sample_grads:
        assert_finite(grad, "d sample / d parameters")


@FAST
@given(SMALL_DIMS, DTYPES, LOC_NORMS, LOG_SCALES, st.booleans(), SEEDS)
def test_projected_normal_finite_for_valid_parameters(d, dtype, loc_norm, log_scale, diagonal, seed):
    check_projected_normal(d, dtype, loc_norm, log_scale, diagonal, seed)


@LARGE_D_FAST
@given(LARGE_DIMS, DTYPES, LOC_NORMS, LOG_SCALES, st.booleans(), SEEDS)
def test_projected_normal_finite_at_large_d(d, dtype, loc_norm, log_scale, diagonal, seed):
    check_projected_normal(d, dtype, loc_norm, log_scale, diagonal, seed)


@pytest.mark.slow
@SLOW
@given(SMALL_DIMS, DTYPES, LOC_NORMS, LOG_SCALES, st.booleans(), SEEDS)
def test_projected_normal_finite_for_valid_parameters_slow(d, dtype, loc_norm, log_scale, diagonal, seed):
    check_projected_normal(d, dtype, loc_norm, log_scale, diagonal, seed)


@pytest.mark.slow
@LARGE_D_SLOW
@given(LARGE_DIMS, DTYPES, LOC_NORMS, LOG_SCALES, st.booleans(), SEEDS)
def test_projected_normal_finite_at_large_d_slow(d, dtype, loc_norm, log_scale, diagonal, seed):
    check_projected_normal(d, dtype, loc_norm, log_scale, diagonal, seed)


BAD_SCALES = st.sampled_from([0.0, -1e-4, -1.0, math.inf, math.nan])
BAD_LOC_VALUES = st.sampled_from([math.nan, math.inf, -math.inf])


@FAST
@given(SMALL_DIMS, DTYPES, BAD_SCALES)
def test_projected_normal_rejects_bad_scale(d, dtype, bad):
    scale = torch.ones(2, d, dtype=dtype)
    scale[1, d // 2] = bad
    with pytest.raises(ValueError, match="scale"):
        ProjectedNormal(torch.ones(2, d, dtype=dtype), scale, validate_args=True)


@FAST
@given(SMALL_DIMS, DTYPES, BAD_LOC_VALUES)
def test_projected_normal_rejects_non_finite_loc(d, dtype, bad):
    loc = torch.ones(2, d, dtype=dtype)
    loc[0, -1] = bad
    with pytest.raises(ValueError, match="loc"):
        ProjectedNormal(loc, 1.0, validate_args=True)


@pytest.mark.parametrize(
    "loc, scale",
    [
        (torch.ones(1), 1.0),  # d = 1: no sphere to speak of
        (torch.tensor(1.0), 1.0),  # a scalar has no event dimension
        (torch.ones(3, 4), torch.ones(3)),  # scale's last dimension neither 1 nor d
        (torch.ones(3, 4), torch.ones(2, 4)),  # batch shapes that do not broadcast
    ],
)
def test_projected_normal_rejects_bad_shapes(loc, scale):
    with pytest.raises(ValueError, match="ProjectedNormal"):
        ProjectedNormal(loc, scale, validate_args=True)


def test_projected_normal_log_prob_rejects_points_off_the_sphere():
    dist = ProjectedNormal(torch.ones(4), 1.0, validate_args=True)
    with pytest.raises(ValueError):
        dist.log_prob(torch.full((4,), 2.0))
    with pytest.raises(ValueError, match="event shape"):
        dist.log_prob(torch.tensor([1.0, 0.0, 0.0]))


# --------------------------------------------------------------------------------------------------
# HypersphericalUniform


def check_uniform(d: int, dtype: torch.dtype, batch: int) -> None:
    dist = HypersphericalUniform(d, batch_shape=(batch,), dtype=dtype, validate_args=True)
    samples = dist.rsample((2,))
    assert samples.shape == (2, batch, d) and samples.dtype == dtype
    assert_finite(samples, "samples")
    torch.testing.assert_close(samples.norm(dim=-1), torch.ones(2, batch, dtype=dtype), atol=1e-4, rtol=0)
    # The uniform density has no parameters (and no gradient to check): its value is -log|S^{d-1}|.
    log_p = dist.log_prob(samples)
    assert_finite(log_p, "log_prob")
    assert_finite(dist.entropy(), "entropy")
    torch.testing.assert_close(dist.entropy(), -log_p[0])


@FAST
@given(st.integers(2, 300), DTYPES, st.integers(1, 4))
def test_uniform_finite(d, dtype, batch):
    check_uniform(d, dtype, batch)


@LARGE_D_FAST
@given(st.integers(301, 4096), DTYPES, st.integers(1, 4))
def test_uniform_finite_at_large_d(d, dtype, batch):
    check_uniform(d, dtype, batch)


@pytest.mark.slow
@SLOW
@given(st.integers(2, 4096), DTYPES, st.integers(1, 4))
def test_uniform_finite_slow(d, dtype, batch):
    check_uniform(d, dtype, batch)


# --------------------------------------------------------------------------------------------------
# PolarStudentT


def check_polar_student_t(
    d: int,
    dtype: torch.dtype,
    log_df: float,
    log_scale: float,
    radial_loc: float,
    log_radial_scale: float,
    seed: int,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    batch = 3
    direction = unit_vectors(generator, (batch, d), dtype).requires_grad_()
    df = torch.full((batch,), 10.0**log_df, dtype=dtype, requires_grad=True)
    scale = torch.full((batch, d), 10.0**log_scale, dtype=dtype, requires_grad=True)
    radial_loc_t = torch.full((batch,), radial_loc, dtype=dtype, requires_grad=True)
    radial_scale = torch.full((batch,), 10.0**log_radial_scale, dtype=dtype, requires_grad=True)
    params = (direction, df, scale, radial_loc_t, radial_scale)
    dist = PolarStudentT(direction, df, scale, radial_loc_t, radial_scale, validate_args=True)
    # Points at moderate radii in every direction: the density and its gradients must be finite there.
    radii = torch.exp(torch.empty(2, batch, 1, dtype=torch.float64).uniform_(-5, 5, generator=generator))
    points = (unit_vectors(generator, (2, batch, d), torch.float64) * radii).to(dtype)
    log_p = dist.log_prob(points)
    assert log_p.shape == (2, batch)
    assert_finite(log_p, "log_prob")
    for grad, name in zip(
        torch.autograd.grad(log_p.sum(), params),
        ("direction", "df", "scale", "radial_loc", "radial_scale"),
        strict=True,
    ):
        assert_finite(grad, f"d log_prob / d {name}")
    torch.manual_seed(seed)  # rsample draws from the global generator: reproducible examples
    samples = dist.rsample((2,))
    assert samples.shape == (2, batch, d)
    # log r is Student-t: with a heavy tail (df near 1: Cauchy) it overflows exp() now and then, which is
    # the distribution's own tail, not a numerical fault; every finite sample's direction must be finite,
    # and with df >= 10 at moderate radial parameters no sample may overflow.
    directions = samples / samples.norm(dim=-1, keepdim=True)
    finite = torch.isfinite(samples).all(-1) & (samples.norm(dim=-1) > 0)
    assert_finite(directions[finite], "sample directions")
    if log_df >= 1 and abs(radial_loc) <= 10 and log_radial_scale <= 0:
        assert bool(finite.all()), f"samples overflowed at moderate parameters: {samples}"


POLAR_ARGS = (DTYPES, st.floats(-1.0, 4.0), LOG_SCALES, st.floats(-30.0, 30.0), st.floats(-4.0, 1.0), SEEDS)


@FAST
@given(SMALL_DIMS, *POLAR_ARGS)
def test_polar_student_t_finite(d, dtype, log_df, log_scale, radial_loc, log_radial_scale, seed):
    check_polar_student_t(d, dtype, log_df, log_scale, radial_loc, log_radial_scale, seed)


@LARGE_D_FAST
@given(LARGE_DIMS, *POLAR_ARGS)
def test_polar_student_t_finite_at_large_d(d, dtype, log_df, log_scale, radial_loc, log_radial_scale, seed):
    check_polar_student_t(d, dtype, log_df, log_scale, radial_loc, log_radial_scale, seed)


@pytest.mark.slow
@SLOW
@given(SMALL_DIMS, *POLAR_ARGS)
def test_polar_student_t_finite_slow(d, dtype, log_df, log_scale, radial_loc, log_radial_scale, seed):
    check_polar_student_t(d, dtype, log_df, log_scale, radial_loc, log_radial_scale, seed)


@pytest.mark.slow
@LARGE_D_SLOW
@given(LARGE_DIMS, *POLAR_ARGS)
def test_polar_student_t_finite_at_large_d_slow(
    d, dtype, log_df, log_scale, radial_loc, log_radial_scale, seed
):
    check_polar_student_t(d, dtype, log_df, log_scale, radial_loc, log_radial_scale, seed)


@FAST
@given(SMALL_DIMS, DTYPES, st.sampled_from(["df", "scale", "radial_scale", "radial_df"]), BAD_SCALES)
def test_polar_student_t_rejects_bad_positive_parameters(d, dtype, name, bad):
    direction = torch.zeros(d, dtype=dtype)
    direction[0] = 1.0
    with pytest.raises(ValueError):
        PolarStudentT(direction, **{name: torch.tensor(bad, dtype=dtype)}, validate_args=True)


@FAST
@given(SMALL_DIMS, DTYPES, st.sampled_from([math.nan, math.inf, 2.0, 0.0]))
def test_polar_student_t_rejects_bad_direction(d, dtype, bad):
    direction = torch.full((d,), bad, dtype=dtype)
    with pytest.raises(ValueError):
        PolarStudentT(direction, validate_args=True)


@pytest.mark.parametrize("direction", [torch.ones(1), torch.tensor(1.0), torch.ones(3, dtype=torch.long)])
def test_polar_student_t_rejects_bad_direction_shape(direction):
    with pytest.raises(ValueError, match="direction"):
        PolarStudentT(direction, validate_args=True)


def test_polar_student_t_rejects_value_at_origin():
    dist = PolarStudentT(torch.tensor([1.0, 0.0, 0.0]), validate_args=True)
    with pytest.raises(ValueError, match="nonzero"):
        dist.log_prob(torch.zeros(3))


# --------------------------------------------------------------------------------------------------
# Losses

LABEL_PATTERNS = ("distinct", "all_same", "two_classes", "random", "singletons_and_pairs")


def make_labels(pattern: str, batch: int, generator: torch.Generator) -> torch.Tensor:
    if pattern == "distinct":
        return torch.arange(batch)
    if pattern == "all_same":
        return torch.zeros(batch, dtype=torch.long)
    if pattern == "two_classes":
        return torch.arange(batch) % 2
    if pattern == "random":
        return torch.randint(0, 3, (batch,), generator=generator)
    # Classes of one image (only their other views as positives) beside classes of two.
    return torch.arange(batch) // 2 * (torch.arange(batch) % 3 != 0)


def make_embeddings(
    views: int,
    batch: int,
    d: int,
    log_norm: float,
    dtype: torch.dtype,
    generator: torch.Generator,
    collapsed: bool,
) -> torch.Tensor:
    z = torch.randn(views, batch, d, generator=generator, dtype=torch.float64) * 10.0**log_norm
    if collapsed:
        # Every row the same direction (a collapsed encoder): the losses must stay finite.
        z = z[:1, :1].expand(views, batch, d).clone()
    return z.to(dtype).requires_grad_()


def check_losses(
    views: int,
    batch: int,
    d: int,
    log_norm: float,
    dtype: torch.dtype,
    log_tau: float,
    pattern: str,
    collapsed: bool,
    seed: int,
) -> None:
    generator = torch.Generator().manual_seed(seed)
    labels = make_labels(pattern, batch, generator)
    tau = 10.0**log_tau
    losses = {
        "info_nce": lambda z: info_nce(z, tau=tau),
        "supcon": lambda z: supcon(z, labels, tau=tau),
        "proj_nce": lambda z: proj_nce(z, labels, tau=tau),
        # CCT's inverse temperatures: 1/tau covers 0.01..100 as well.
        "cct": lambda z: cct(z, t_pos=1.0 / tau, t_neg=1.0 / tau),
    }
    for name, loss_fn in losses.items():
        z = make_embeddings(views, batch, d, log_norm, dtype, generator, collapsed)
        loss = loss_fn(z)
        assert loss.shape == () and loss.dtype == dtype, name
        assert_finite(loss, f"{name} loss")
        (grad,) = torch.autograd.grad(loss, z)
        assert_finite(grad, f"{name} gradient")


LOSS_ARGS = (
    st.integers(2, 4),
    st.integers(2, 24),
    st.integers(1, 64),
    st.floats(-4.0, 4.0),
    DTYPES,
    st.floats(-2.0, 2.0),
    st.sampled_from(LABEL_PATTERNS),
    st.booleans(),
    SEEDS,
)


@FAST
@given(*LOSS_ARGS)
def test_losses_finite(views, batch, d, log_norm, dtype, log_tau, pattern, collapsed, seed):
    check_losses(views, batch, d, log_norm, dtype, log_tau, pattern, collapsed, seed)


@pytest.mark.slow
@SLOW
@given(*LOSS_ARGS)
def test_losses_finite_slow(views, batch, d, log_norm, dtype, log_tau, pattern, collapsed, seed):
    check_losses(views, batch, d, log_norm, dtype, log_tau, pattern, collapsed, seed)


def _z(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


LOSS_CALLS = {
    "info_nce": lambda z, labels, tau: info_nce(z, tau=tau),
    "supcon": lambda z, labels, tau: supcon(z, labels, tau=tau),
    "proj_nce": lambda z, labels, tau: proj_nce(z, labels, tau=tau),
}

BAD_LOSS_INPUTS = [
    # (description, z, labels, tau, message)
    ("one image", _z(2, 1, 8), torch.zeros(1, dtype=torch.long), 0.1, "B = 2"),
    ("2-D z", _z(4, 8), torch.zeros(4, dtype=torch.long), 0.1, r"\(V, B, d\)"),
    ("integer z", torch.ones(2, 4, 8, dtype=torch.long), torch.zeros(4, dtype=torch.long), 0.1, "floating"),
    ("NaN in z", torch.full((2, 4, 8), math.nan), torch.zeros(4, dtype=torch.long), 0.1, "non-finite"),
    ("inf in z", torch.full((2, 4, 8), math.inf), torch.zeros(4, dtype=torch.long), 0.1, "non-finite"),
    ("zero tau", _z(2, 4, 8), torch.zeros(4, dtype=torch.long), 0.0, "tau"),
    ("negative tau", _z(2, 4, 8), torch.zeros(4, dtype=torch.long), -0.1, "tau"),
    ("NaN tau", _z(2, 4, 8), torch.zeros(4, dtype=torch.long), math.nan, "tau"),
    ("inf tau", _z(2, 4, 8), torch.zeros(4, dtype=torch.long), math.inf, "tau"),
]
BAD_LABELS = [
    ("float labels", torch.zeros(4), "integer"),
    ("bool labels", torch.zeros(4, dtype=torch.bool), "integer"),
    ("labels too short", torch.zeros(3, dtype=torch.long), "shape"),
    ("2-D labels", torch.zeros(4, 1, dtype=torch.long), "shape"),
    ("list labels", [0, 0, 1, 1], "labels"),
]


@pytest.mark.parametrize("loss_name", sorted(LOSS_CALLS))
@pytest.mark.parametrize("case", BAD_LOSS_INPUTS, ids=[case[0] for case in BAD_LOSS_INPUTS])
def test_losses_reject_bad_input(loss_name, case):
    _, z, labels, tau, message = case
    with pytest.raises(ValueError, match=message):
        LOSS_CALLS[loss_name](z, labels, tau)


def test_info_nce_rejects_one_view():
    # One view has no positive under InfoNCE (SupCon still has its same-class images, so it accepts V = 1).
    with pytest.raises(ValueError, match="views"):
        info_nce(torch.randn(1, 4, 8))


@pytest.mark.parametrize("loss_name", ["supcon", "proj_nce"])
@pytest.mark.parametrize("case", BAD_LABELS, ids=[case[0] for case in BAD_LABELS])
def test_supervised_losses_reject_bad_labels(loss_name, case):
    _, labels, message = case
    with pytest.raises(ValueError, match=message):
        LOSS_CALLS[loss_name](torch.randn(2, 4, 8), labels, 0.1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(t_pos=math.nan), "t_pos"),
        (dict(t_neg=math.inf), "t_neg"),
        (dict(t_pos="1"), "t_pos"),
    ],
)
def test_cct_rejects_bad_temperatures(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cct(torch.randn(2, 4, 8), **kwargs)


# --------------------------------------------------------------------------------------------------
# Command line: each bad combination gives one clear line and a non-zero exit, never a traceback.


def bad_cli_cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    a_file = tmp / "a_file"
    a_file.write_text("not a folder")
    empty = tmp / "empty"
    empty.mkdir()
    run = ["--run-dir", str(tmp / "run"), "--no-progress"]
    return [
        ("zero epochs", ["train", "--epochs", "0", *run], "argument --epochs: must be > 0"),
        ("text epochs", ["train", "--epochs", "many", *run], "argument --epochs: expected int"),
        ("negative batch", ["train", "--batch-size", "-8", *run], "argument --batch-size: must be > 0"),
        ("zero dim", ["train", "--dim", "0", *run], "argument --dim: must be >= 2"),
        ("zero lr", ["train", "--lr", "0", *run], "must be > 0"),
        ("NaN tau", ["train", "--tau", "nan", *run], "must be > 0"),
        ("unknown method", ["train", "--method", "byol", *run], "invalid choice"),
        ("unknown data", ["train", "--data", "mnist", *run], "invalid choice"),
        ("unknown kl", ["train", "--kl", "none", *run], "invalid choice"),
        (
            "zero checkpoint interval",
            ["train", "--checkpoint-every", "0", *run],
            "argument --checkpoint-every: must be > 0",
        ),
        (
            "3 views for vsimclr",
            ["train", "--method", "vsimclr", "--num-views", "3", *run],
            "num_views do not apply to method 'vsimclr'",
        ),
        (
            "3 views for vje",
            ["train", "--method", "vje", "--num-views", "3", *run],
            "num_views do not apply to method 'vje'",
        ),
        ("negative VJE df", ["train", "--method", "vje", "--df", "-1", *run], "argument --df: must be > 0"),
        (
            "negative VJE radial weight",
            ["train", "--method", "vje", "--radial-weight", "-1", *run],
            "argument --radial-weight: must be >= 0",
        ),
        ("resume without run dir", ["train", "--resume"], "--resume needs --run-dir"),
        ("resume of an empty folder", ["train", "--resume", "--run-dir", str(empty)], "nothing to resume"),
        ("batch larger than the data", ["train", "--batch-size", "100000", *run], "exceeds"),
        ("CUDA without a GPU", ["train", "--device", "cuda", *run], "no CUDA device"),
        ("unknown device", ["train", "--device", "gpu7", *run], "device"),
        (
            "run folder under a file",
            ["train", "--run-dir", str(a_file / "run"), "--no-progress"],
            "not writable",
        ),
        (
            "CIFAR without its folder",
            ["train", "--data", "cifar10", "--data-dir", str(tmp / "missing"), *run],
            "missing",
        ),
        ("evaluate a missing run", ["evaluate", str(tmp / "missing")], "no checkpoint"),
        ("diagnose a missing run", ["diagnose", str(tmp / "missing")], "no checkpoint"),
        ("anomaly without a class", ["anomaly", "--no-progress"], "one of the arguments"),
        ("anomaly, class and all", ["anomaly", "--normal-class", "1", "--all-classes"], "not allowed with"),
        ("anomaly, class out of range", ["anomaly", "--normal-class", "12", *run], "does not exist"),
        (
            "anomaly, zero pairs",
            ["anomaly", "--normal-class", "1", "--num-pairs", "0", *run],
            "must be a positive integer",
        ),
        ("no command", [], "required"),
    ]


@pytest.fixture(scope="module")
def cli_cases(tmp_path_factory) -> dict[str, tuple[list[str], str, Path]]:
    tmp = tmp_path_factory.mktemp("cli")
    return {name: (argv, message, tmp) for name, argv, message in bad_cli_cases(tmp)}


def _case_names() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return [case[0] for case in bad_cli_cases(Path(tmp))]


@pytest.mark.parametrize("name", _case_names())
def test_cli_rejects_bad_arguments(name, cli_cases, capsys):
    argv, message, tmp = cli_cases[name]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit directly
        code = exc.code
    err = capsys.readouterr().err
    assert code not in (0, None), f"{name}: exit code {code}"
    assert message.lower() in err.lower(), f"{name}: {message!r} not in {err!r}"
    assert "Traceback" not in err
    # A rejected run never leaves a checkpoint behind.
    assert not list(tmp.rglob("checkpoint.pt"))
