"""vprob.losses against the naive oracles of tests/_naive_losses.py, the stated identities, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _naive_losses import (
    naive_cct,
    naive_info_nce,
    naive_proj_nce_terms,
    naive_supcon,
    reference_supcon_loss,
)

from vprob.losses import (
    PROJECTIONS,
    CCTWeights,
    MLPProjection,
    cct,
    info_nce,
    proj_nce,
    proj_nce_terms,
    supcon,
)

F64 = {"rtol": 1e-10, "atol": 1e-10}


BATCH, DIM, TAU = 6, 5, 0.3
LABEL_PATTERNS = {
    "distinct": torch.tensor([4, 0, 7, 2, 9, 5]),
    "few_classes": torch.tensor([1, 0, 1, 1, 0, 0]),
    "singleton_class": torch.tensor([3, 3, 8, 3, 1, 1]),  # class 8 has one image
}


def _z(views: int, batch: int = BATCH, dim: int = DIM, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(views, batch, dim, dtype=dtype, requires_grad=True)


def _value_and_grad(fn, z: torch.Tensor, *extra: torch.Tensor):
    """fn(z) and its gradient with respect to z (and ``extra`` leaves)."""
    value = fn(z)
    grads = torch.autograd.grad(value, (z, *extra))
    return value.detach(), grads


def _assert_same(fn, oracle, z, *extra, tol=F64):
    """Same value(s) and same gradient(s) of each value; fn and oracle return a tensor or a tuple."""
    values, expected = fn(z), oracle(z)
    values = values if isinstance(values, tuple) else (values,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for value, target in zip(values, expected, strict=True):
        torch.testing.assert_close(value, target, **tol)
        grads = torch.autograd.grad(value, (z, *extra), retain_graph=True)
        target_grads = torch.autograd.grad(target, (z, *extra), retain_graph=True)
        for grad, target_grad in zip(grads, target_grads, strict=True):
            torch.testing.assert_close(grad, target_grad, **tol)


# ----------------------------------------------------------------------------------------------------------
# InfoNCE and SupCon against the line-by-line oracles


@pytest.mark.parametrize("views", [2, 5])
def test_info_nce_matches_oracle(views):
    _assert_same(lambda z: info_nce(z, TAU), lambda z: naive_info_nce(z, TAU), _z(views))


@pytest.mark.parametrize("pattern", LABEL_PATTERNS)
@pytest.mark.parametrize("views", [2, 5])
def test_supcon_matches_oracle(views, pattern):
    labels = LABEL_PATTERNS[pattern]
    _assert_same(lambda z: supcon(z, labels, TAU), lambda z: naive_supcon(z, labels, TAU), _z(views))


@pytest.mark.parametrize("pattern", LABEL_PATTERNS)
@pytest.mark.parametrize("views", [2, 5])
def test_supcon_matches_reference_supconloss(views, pattern):
    """The SupContrast SupConLoss takes features (B, V, d): our z transposed."""
    labels = LABEL_PATTERNS[pattern]

    def reference(z):
        return reference_supcon_loss(F.normalize(z, dim=-1).transpose(0, 1), labels, TAU)

    _assert_same(lambda z: supcon(z, labels, TAU), reference, _z(views))


def test_supcon_single_view_leaves_anchors_without_positive_out():
    """V = 1: the only image of class 8 has no positive; it is left out of the mean (documented choice)."""
    labels = LABEL_PATTERNS["singleton_class"]
    _assert_same(lambda z: supcon(z, labels, TAU), lambda z: naive_supcon(z, labels, TAU), _z(1))
    with pytest.raises(ValueError, match="labels"):
        supcon(_z(1), LABEL_PATTERNS["distinct"], TAU)


def test_info_nce_two_views_is_simclr_nt_xent():
    """SimCLR's NT-Xent as usually written: cross-entropy over the 2B−1 other rows, target the other view."""
    z = _z(2, batch=8)
    x = F.normalize(z, dim=-1).reshape(16, DIM)
    logits = (x @ x.T / TAU).masked_fill(torch.eye(16, dtype=torch.bool), float("-inf"))
    target = (torch.arange(16) + 8) % 16
    torch.testing.assert_close(info_nce(z, TAU), F.cross_entropy(logits, target), **F64)


@pytest.mark.parametrize("views", [1, 2, 5])
def test_supcon_with_each_image_its_own_class_is_info_nce(views):
    if views == 1:
        with pytest.raises(ValueError, match="z"):
            info_nce(_z(1), TAU)
        return
    z = _z(views)
    value, (grad,) = _value_and_grad(lambda z: supcon(z, torch.arange(BATCH), TAU), z)
    expected, (expected_grad,) = _value_and_grad(lambda z: info_nce(z, TAU), z)
    assert torch.equal(value, expected) and torch.equal(grad, expected_grad)  # one code path
    # Any distinct labels, in any order, give the same loss.
    _assert_same(lambda z: supcon(z, torch.randperm(BATCH) * 7 - 3, TAU), lambda z: info_nce(z, TAU), z)


# ----------------------------------------------------------------------------------------------------------
# ProjNCE


def _mlp(dim: int = DIM) -> MLPProjection:
    """An MLPProjection moved away from its identity initialization, so that the test means something."""
    mlp = MLPProjection(dim, hidden=7).double()
    torch.nn.init.normal_(mlp.net[-1].weight, std=0.5)
    torch.nn.init.normal_(mlp.net[-1].bias, std=0.1)
    return mlp


@pytest.mark.parametrize("pattern", LABEL_PATTERNS)
@pytest.mark.parametrize("views", [2, 5])
@pytest.mark.parametrize("projection", PROJECTIONS)
def test_proj_nce_terms_match_oracle(projection, views, pattern):
    labels = LABEL_PATTERNS[pattern]
    mlp = _mlp() if projection == "mlp" else None
    extra = tuple(mlp.parameters()) if mlp is not None else ()
    bandwidth = 2.5 if views == 5 else 1.3  # orthogonal: kappa = 0.68, and kappa = 0 (the class mean)
    kwargs = {"projection": projection, "mlp": mlp, "bandwidth": bandwidth}
    z = _z(views, batch=BATCH if views == 2 else 4)
    labels = labels[: z.shape[1]]
    # Values and gradients of I_proj and of R separately.
    _assert_same(
        lambda z: proj_nce_terms(z, labels, TAU, **kwargs),
        lambda z: naive_proj_nce_terms(z, labels, TAU, **kwargs),
        z,
        *extra,
    )
    i_proj, adjustment = proj_nce_terms(z, labels, TAU, **kwargs)
    torch.testing.assert_close(proj_nce(z, labels, TAU, beta=5.0, **kwargs), i_proj + 5.0 * adjustment, **F64)


def test_proj_nce_single_view_matches_oracle():
    labels = LABEL_PATTERNS["singleton_class"]  # with V = 1, the anchor of class 8 has no positive
    for projection in ("centroid", "median", "orthogonal"):
        _assert_same(
            lambda z, p=projection: proj_nce_terms(z, labels, TAU, projection=p),
            lambda z, p=projection: naive_proj_nce_terms(z, labels, TAU, p),
            _z(1, batch=6),
        )


@pytest.mark.parametrize("views", [1, 2, 5])
@pytest.mark.parametrize("pattern", LABEL_PATTERNS)
def test_proj_nce_centroid_without_adjustment_is_supcon_exactly(views, pattern):
    """With g₊ = centroid of the positives (anchor left out, not renormalized), s⁺_ii is the mean of
    s⁻_ip over the positives, so I_proj is SupCon term by term; same code path, so bitwise equal."""
    labels = LABEL_PATTERNS[pattern]
    if views == 1 and pattern == "distinct":
        return  # no anchor has a positive
    for dtype in (torch.float32, torch.float64):
        z = _z(views, dtype=dtype)
        value, (grad,) = _value_and_grad(lambda z: proj_nce(z, labels, TAU, projection="centroid", beta=0), z)
        expected, (expected_grad,) = _value_and_grad(lambda z: supcon(z, labels, TAU), z)
        assert torch.equal(value, expected) and torch.equal(grad, expected_grad)


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_adjustment_vanishes_when_positive_and_negative_projections_agree(projection):
    """Collapsed classes (every row of class c at the same point u_c): every projection of the class is u_c
    (orthogonal at a bandwidth <= √2, mlp at its identity initialization), so g₊(c_j) = z_j = g₋(c_j) for all
    j, R = 0 and ProjNCE = I_proj = mean_i −log( e^{z_i·z_i/τ} / Σ_{j≠i} e^{z_i·z_j/τ} ) (InfoNCE-style)."""
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    centers = F.normalize(torch.randn(3, DIM, dtype=torch.float64), dim=-1)
    z = centers[labels].expand(2, -1, -1).clone().requires_grad_(True)
    mlp = MLPProjection(DIM).double() if projection == "mlp" else None
    i_proj, adjustment = proj_nce_terms(z, labels, TAU, projection=projection, mlp=mlp, bandwidth=1.0)
    assert abs(adjustment.item()) < 1e-12
    x = z.detach().reshape(16, DIM)
    scores = (x @ x.T / TAU).masked_fill(torch.eye(16, dtype=torch.bool), float("-inf"))
    expected = (torch.logsumexp(scores, dim=1) - 1 / TAU).mean()
    torch.testing.assert_close(i_proj, expected, **F64)
    loss = proj_nce(z, labels, TAU, projection=projection, mlp=mlp, bandwidth=1.0)
    torch.testing.assert_close(loss, expected, **F64)


def _separable_batch(num: int, classes: int, dim: int, sigma: float):
    """C uniform on K classes, z = normalize(e_C + σ ε): Bayes error ~ Φ(−1/(σ√2)) (~1e-12 at σ = 0.1)."""
    c = torch.randint(0, classes, (num,))
    return (torch.eye(dim, dtype=torch.float64)[c] + sigma * torch.randn(num, dim, dtype=torch.float64))[
        None
    ], c


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_mutual_information_bound_on_separable_classes(projection):
    """I(Z;C) = log K (classes separable up to a ~1e-12 Bayes error) >= log N − ProjNCE (β = 1), averaged
    over i.i.d. batches (the bound is an expectation over batches; see the low-τ caveat test below)."""
    num, classes, tau = 64, 4, 0.5
    mlp = MLPProjection(16).double() if projection == "mlp" else None
    estimates = []
    for _ in range(20):
        z, c = _separable_batch(num, classes, 16, sigma=0.1)
        estimates.append(math.log(num) - proj_nce(z, c, tau, projection=projection, mlp=mlp).item())
    assert sum(estimates) / len(estimates) <= math.log(classes)
    assert max(estimates) <= math.log(classes)


def test_mutual_information_bound_caveat_in_the_collapsed_limit():
    """Pins the small-sample behaviour behind the caveat in the report: with every sum over j ≠ i and the
    critic's projections estimated from the batch, a balanced batch of collapsed classes at low τ has
    ProjNCE → log(n_c − 1) (R = 0), so log N − ProjNCE → log(N/(n_c − 1)) > log K = I(Z;C): the bound only
    holds in expectation over i.i.d. batches, up to O(K/N) terms."""
    labels = torch.arange(4).repeat(4)  # K = 4 classes of n_c = 4 rows
    z = torch.eye(8, dtype=torch.float64)[labels][None]
    loss = proj_nce(z, labels, tau=0.01)
    torch.testing.assert_close(loss, torch.tensor(math.log(3), dtype=torch.float64), rtol=0, atol=1e-12)
    assert math.log(16) - loss.item() > math.log(4)


def test_mlp_projection_starts_as_identity_and_learns():
    mlp = MLPProjection(DIM)
    x = torch.randn(3, DIM)
    torch.testing.assert_close(mlp(x), x)
    z, labels = _z(2, dtype=torch.float32), LABEL_PATTERNS["few_classes"]
    proj_nce(z, labels, TAU, projection="mlp", mlp=mlp).backward()
    assert mlp.net[-1].weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------------
# CCT / CACR


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("views", [2, 5])
def test_cct_matches_oracle(views, detach):
    z = _z(views)
    t_pos, t_neg = 1.3, 0.9
    _assert_same(
        lambda z: cct(z, t_pos, t_neg, detach_weights=detach),
        lambda z: naive_cct(z, t_pos, t_neg, detach)[0],
        z,
    )
    loss, weights = cct(z, t_pos, t_neg, detach_weights=detach, return_weights=True)
    _, w_pos, w_neg = naive_cct(z, t_pos, t_neg, detach)
    assert isinstance(weights, CCTWeights)
    torch.testing.assert_close(weights.attraction, w_pos.detach(), **F64)
    torch.testing.assert_close(weights.repulsion, w_neg.detach(), **F64)
    assert weights.pairs.tolist() == [[x, y] for x in range(views) for y in range(x + 1, views)]


def test_cct_live_and_detached_weights_differ_in_gradient_only():
    z = _z(3)
    live, (grad_live,) = _value_and_grad(lambda z: cct(z), z)
    detached, (grad_detached,) = _value_and_grad(lambda z: cct(z, detach_weights=True), z)
    torch.testing.assert_close(live, detached, **F64)
    assert not torch.allclose(grad_live, grad_detached)


def test_cct_gradient_is_info_nce_gradient_times_two_tau():
    """t⁺ = 0, V = 2, detached weights, t⁻ = 1/(2τ). With unit rows d = 2 − 2 z·z', so
    w⁻_ij = softmax_{j≠i}(z¹_i·z²_j/τ) and, with B images,
        ∇_{z¹_i} CCT = (2/B) (Σ_{j≠i} w⁻_ij z²_j − z²_i),  ∇_{z²_j} CCT = (2/B) (Σ_{i≠j} w⁻_ij z¹_i − z¹_j),
    which is 2τ times the gradient of the one-directional InfoNCE whose denominator leaves the positive out,
        L = mean_i [ −z¹_i·z²_i/τ + log Σ_{j≠i} exp(z¹_i·z²_j/τ) ].
    The usual InfoNCE differs: its denominator has the positive (and, for NT-Xent, same-view negatives)."""
    tau = 0.2
    z = _z(2, batch=7)

    def decoupled_info_nce(z):
        x = F.normalize(z, dim=-1)
        scores = x[0] @ x[1].T / tau
        negatives = scores.masked_fill(torch.eye(7, dtype=torch.bool), float("-inf"))
        return (torch.logsumexp(negatives, dim=1) - scores.diagonal()).mean()

    _, (grad_cct,) = _value_and_grad(lambda z: cct(z, 0.0, 1 / (2 * tau), detach_weights=True), z)
    _, (grad_nce,) = _value_and_grad(decoupled_info_nce, z)
    torch.testing.assert_close(grad_cct, 2 * tau * grad_nce, **F64)
    _, (grad_nt_xent,) = _value_and_grad(lambda z: info_nce(z, tau), z)
    assert not torch.allclose(grad_cct, 2 * tau * grad_nt_xent, rtol=1e-3, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Precision, extreme inputs, bad input

ALL_LOSSES = {
    "info_nce": lambda z, **kw: info_nce(z, **kw),
    "supcon": lambda z, **kw: supcon(z, torch.arange(z.shape[1]) % 3, **kw),
    **{
        f"proj_nce_{p}": (
            lambda z, p=p, **kw: proj_nce(
                z,
                torch.arange(z.shape[1]) % 3,
                projection=p,
                mlp=MLPProjection(z.shape[-1]) if p == "mlp" else None,
                **kw,
            )
        )
        for p in PROJECTIONS
    },
    "cct": lambda z, tau=None, **kw: cct(z, **kw),
}


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_bf16_input_gives_float32_loss(name):
    z32 = torch.randn(2, 6, 8)
    z16 = z32.bfloat16().requires_grad_(True)
    loss = ALL_LOSSES[name](z16)
    assert loss.dtype == torch.float32
    loss.backward()
    assert z16.grad.dtype == torch.bfloat16 and torch.isfinite(z16.grad.float()).all()
    torch.testing.assert_close(loss, ALL_LOSSES[name](z16.detach().float()))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast is switched off inside the losses
        torch.testing.assert_close(ALL_LOSSES[name](z32), ALL_LOSSES[name](z32.double()).float())


@pytest.mark.parametrize("case", ["random", "identical", "antipodal"])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_finite_at_tau_001_identical_and_antipodal(name, case):
    u = torch.randn(8)
    z = (
        {
            "random": torch.randn(2, 6, 8),
            "identical": u.expand(2, 6, 8),  # every row the same point
            "antipodal": torch.stack(
                [u.expand(6, 8), -u.expand(6, 8)]
            ),  # the two views of each image opposite
        }[case]
        .clone()
        .requires_grad_(True)
    )
    loss = ALL_LOSSES[name](z, tau=0.01) if name != "cct" else cct(z, t_pos=50.0, t_neg=50.0)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    for chunk_size in (0, 2) if name in ("info_nce", "supcon") else ():
        assert torch.isfinite(ALL_LOSSES[name](z.detach(), tau=0.01, chunk_size=chunk_size))


def _bad_inputs():
    z, labels = torch.randn(2, 4, 3), torch.tensor([0, 1, 0, 1])
    nan = z.clone()
    nan[0, 1, 2] = float("nan")
    inf = z.clone()
    inf[1, 0, 0] = float("inf")
    return [
        ("z", lambda: info_nce(torch.randn(8, 3))),
        ("z", lambda: info_nce(torch.randn(2, 4, 3, 1))),
        ("z", lambda: supcon(z.numpy(), labels)),
        ("z", lambda: info_nce(torch.randint(0, 3, (2, 4, 3)))),
        ("z", lambda: info_nce(torch.randn(2, 1, 3))),  # B < 2
        ("z", lambda: supcon(torch.randn(2, 1, 3), labels[:1])),
        ("z", lambda: info_nce(torch.randn(1, 4, 3))),  # V < 2
        ("z", lambda: cct(torch.randn(1, 4, 3))),
        ("z", lambda: info_nce(nan)),
        ("z", lambda: supcon(inf, labels)),
        ("z", lambda: proj_nce(nan, labels)),
        ("z", lambda: cct(inf)),
        ("labels", lambda: supcon(z, labels[:3])),
        ("labels", lambda: supcon(z, labels[None])),
        ("labels", lambda: supcon(z, labels.float())),
        ("labels", lambda: supcon(z, labels.bool())),
        ("labels", lambda: proj_nce(z, labels[:3])),
        ("labels", lambda: supcon(z, [0, 1, 0, 1])),
        ("tau", lambda: info_nce(z, 0.0)),
        ("tau", lambda: supcon(z, labels, -0.1)),
        ("tau", lambda: proj_nce(z, labels, float("nan"))),
        ("tau", lambda: info_nce(z, float("inf"))),
        ("beta", lambda: proj_nce(z, labels, beta=float("nan"))),
        ("bandwidth", lambda: proj_nce(z, labels, projection="orthogonal", bandwidth=0.0)),
        ("projection", lambda: proj_nce(z, labels, projection="mean")),
        ("mlp", lambda: proj_nce(z, labels, projection="mlp")),
        ("mlp", lambda: proj_nce(z, labels, projection="centroid", mlp=MLPProjection(3))),
        ("t_pos", lambda: cct(z, t_pos=float("nan"))),
        ("t_neg", lambda: cct(z, t_neg=float("inf"))),
        ("chunk_size", lambda: info_nce(z, chunk_size=-1)),
        ("chunk_size", lambda: supcon(z, labels, chunk_size=2.5)),
        ("chunk_size", lambda: info_nce(z, chunk_size=True)),
    ]


@pytest.mark.parametrize("index", range(len(_bad_inputs())))
def test_bad_input_raises_value_error_naming_the_argument(index):
    name, call = _bad_inputs()[index]
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()


def _naive_cct_unnormalized(z: torch.Tensor, t_pos: float, t_neg: float) -> torch.Tensor:
    """CACR on the raw rows: d(a, b) = Σ (a − b)², loops only (``naive_cct`` normalizes its input first)."""
    views, batch, _ = z.shape

    def cost(a, b):
        return ((a - b) ** 2).sum()

    attraction = []
    for v in range(views):
        for i in range(batch):
            costs = torch.stack([cost(z[v, i], z[u, i]) for u in range(views) if u != v])
            attraction.append((torch.softmax(t_pos * costs, dim=0) * costs).sum())
    repulsion = []
    for x in range(views):
        for y in range(x + 1, views):
            for i in range(batch):
                costs = torch.stack([cost(z[x, i], z[y, j]) for j in range(batch) if j != i])
                repulsion.append((torch.softmax(-t_neg * costs, dim=0) * costs).sum())
    return torch.stack(attraction).mean() - torch.stack(repulsion).mean()


def test_cct_without_normalization_uses_raw_squared_distances():
    # Rows of very unequal norms: |a|², |b|² and a·b all enter the cost separately, so dropping or replacing
    # any term of |a − b|² = |a|² + |b|² − 2 a·b changes the loss (unit rows would hide a constant shift).
    torch.manual_seed(11)
    scale = torch.tensor([0.3, 1.0, 2.5, 0.7, 1.8], dtype=torch.float64)
    z = (torch.randn(3, 5, 4, dtype=torch.float64) * scale[:, None]).requires_grad_(True)
    t_pos, t_neg = 0.4, 0.6
    _assert_same(
        lambda z: cct(z, t_pos, t_neg, normalize=False),
        lambda z: _naive_cct_unnormalized(z, t_pos, t_neg),
        z,
    )
    # The rows really are not unit: the default (normalize=True) gives another value.
    assert not torch.allclose(cct(z, t_pos, t_neg), cct(z, t_pos, t_neg, normalize=False))


def test_value_checks_switch_the_non_finite_check_only_and_restore_it():
    from vprob.losses import set_value_checks, value_checks

    z = torch.randn(2, 4, 3)
    z[0, 1, 2] = float("nan")
    with value_checks(False):
        assert torch.isnan(info_nce(z))  # no check: the NaN reaches the loss
        with pytest.raises(ValueError, match=r"^z\b"):
            info_nce(torch.randn(2, 1, 3))  # shape checks still run
        with value_checks(True):
            with pytest.raises(ValueError, match="non-finite"):
                info_nce(z)
        assert torch.isnan(info_nce(z))  # the inner block restored "off"
    with pytest.raises(ValueError, match="non-finite"):
        info_nce(z)
    # Restored on the way out of an exception too.
    with pytest.raises(RuntimeError), value_checks(False):
        raise RuntimeError
    with pytest.raises(ValueError, match="non-finite"):
        info_nce(z)
    try:
        set_value_checks(False)
        assert torch.isnan(cct(z))
        set_value_checks(True)
        with pytest.raises(ValueError, match="non-finite"):
            cct(z)
    finally:
        set_value_checks(True)


def test_scalar_arguments_accept_one_element_tensors_and_refuse_others():
    z, labels = torch.randn(2, 4, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 1])
    torch.testing.assert_close(info_nce(z, torch.tensor(0.3, dtype=torch.float64)), info_nce(z, 0.3), **F64)
    torch.testing.assert_close(info_nce(z, 1), info_nce(z, 1.0), **F64)  # an int is a real number
    torch.testing.assert_close(cct(z, torch.tensor([1.5]), 2), cct(z, 1.5, 2.0), **F64)
    for name, call in [
        ("tau", lambda: info_nce(z, torch.tensor([0.3, 0.3]))),
        ("tau", lambda: info_nce(z, True)),
        ("tau", lambda: supcon(z, labels, "0.1")),
        ("t_pos", lambda: cct(z, t_pos=torch.ones(2, 1))),
        ("beta", lambda: proj_nce(z, labels, beta=None)),
        ("chunk_size", lambda: info_nce(z, chunk_size=1.0)),
    ]:
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            call()
    # chunk_size 0 (naive) and a positive int are both accepted and agree.
    torch.testing.assert_close(info_nce(z, 0.3, chunk_size=0), info_nce(z, 0.3, chunk_size=3), **F64)


def _fake_world(monkeypatch, rank: int, parts: list[torch.Tensor], labels: list[torch.Tensor]):
    """Pretend to be ``rank`` of len(parts) processes whose (V, B, d) rows and (B,) labels are given."""
    from vprob import distributed

    views = parts[0].shape[0]
    monkeypatch.setattr(distributed, "world_size", lambda: len(parts))
    monkeypatch.setattr(distributed, "rank", lambda: rank)
    # Rank r's rows are its normalized z.reshape(V·B, d) (view-major); other ranks' rows are constants here.
    rows = [F.normalize(p, dim=-1).reshape(-1, p.shape[-1]) for p in parts]
    monkeypatch.setattr(
        distributed,
        "gather_with_grad",
        lambda x: torch.cat([x if r == rank else c for r, c in enumerate(rows)]),
    )
    monkeypatch.setattr(
        distributed,
        "all_gather_nograd",
        lambda x: torch.cat([x if r == rank else y.repeat(views) for r, y in enumerate(labels)]),
    )


@pytest.mark.parametrize(
    "views, name",
    [
        (2, "info_nce"),
        (2, "supcon"),
        (1, "supcon"),
        (2, "proj_nce_orthogonal"),
        (2, "proj_nce_median"),
        (2, "proj_nce_terms"),
    ],
)
def test_gather_in_a_fake_world_of_two_averages_to_the_whole_batch_loss(monkeypatch, views, name):
    """In process (mutation testing sees it, unlike tests/test_distributed_losses.py's spawned ranks):
    rank r's loss with gather=True, averaged over the 2 ranks, is the one-process loss on both halves."""
    torch.manual_seed(5)
    z = torch.randn(views, 10, 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 2, 0, 2, 2, 1, 0, 3])
    if views == 1:
        labels = torch.tensor([0, 1, 0, 2, 1, 1, 0, 1, 1, 3])  # images 3 and 9 have no positive
    loss = {
        "info_nce": lambda z, y, **kw: info_nce(z, 0.2, **kw),
        "supcon": lambda z, y, **kw: supcon(z, y, 0.2, **kw),
        "proj_nce_orthogonal": lambda z, y, **kw: proj_nce(z, y, 0.2, projection="orthogonal", **kw),
        "proj_nce_median": lambda z, y, **kw: proj_nce(z, y, 0.2, projection="median", **kw),
        "proj_nce_terms": lambda z, y, **kw: sum(proj_nce_terms(z, y, 0.2, **kw)),
    }[name]
    whole = loss(z, labels)
    parts, part_labels = [z[:, :5], z[:, 5:]], [labels[:5], labels[5:]]
    local = [loss(parts[r], part_labels[r]) for r in range(2)]
    per_rank = []
    for rank in range(2):
        _fake_world(monkeypatch, rank, parts, part_labels)
        per_rank.append(loss(parts[rank], part_labels[rank], gather=True))
        # gather=False ignores the world.
        torch.testing.assert_close(loss(parts[rank], part_labels[rank]), local[rank], **F64)
        monkeypatch.undo()
    torch.testing.assert_close((per_rank[0] + per_rank[1]) / 2, whole, **F64)
    assert not torch.allclose(per_rank[0], local[0])


def test_contrast_batch_layout_device_and_positive_flag():
    """The layout of ``ContrastBatch``: row v·B + i is view v of image i, each image its own class without
    labels (counts V, int64), a labelled batch's classes are the ranks of its labels; the index tensors are
    made on z's device (the meta device stands in for a GPU here: one made on the CPU would show); and
    ``every_anchor_has_positive`` is True exactly when V >= 2, when ``anchor_mean`` needs no count."""
    from vprob.losses._batch import contrast_batch

    batch = contrast_batch(torch.empty(3, 4, 5, device="meta"), None, gather=False)
    for name in ("anchors", "contrast", "classes", "counts", "self_index"):
        assert getattr(batch, name).device.type == "meta", name
    for views in (1, 2, 3):
        batch = contrast_batch(torch.randn(views, 4, 5), None, gather=False)
        assert batch.every_anchor_has_positive is (views >= 2), views
        assert batch.classes.tolist() == list(range(4)) * views
        assert batch.counts.dtype == torch.int64 and batch.counts.tolist() == [views] * 4
        assert batch.self_index.tolist() == list(range(4 * views)) and batch.world == 1
        labelled = contrast_batch(torch.randn(views, 3, 5), torch.tensor([7, 2, 7]), gather=False)
        assert labelled.every_anchor_has_positive is (views >= 2), views
        assert labelled.classes.tolist() == [1, 0, 1] * views
        assert labelled.counts.tolist() == [views, 2 * views]


def test_no_anchor_with_a_positive_names_labels():
    with pytest.raises(ValueError, match=r"^labels\b"):
        supcon(torch.randn(1, 4, 3), torch.tensor([0, 1, 2, 3]))


def test_embedding_shape_limits_and_messages():
    info_nce(torch.randn(2, 2, 3))  # B = 2 is enough
    for dim in (1, 2):  # d = 1 is allowed (rows normalize to ±1)
        assert torch.isfinite(info_nce(torch.randn(2, 4, dim)))
    with pytest.raises(ValueError, match=r"^z has an empty embedding dimension: \(2, 4, 0\)"):
        info_nce(torch.randn(2, 4, 0))
    with pytest.raises(ValueError, match=r"^z must be a torch.Tensor .* got list"):
        info_nce([[[0.0]]])
    with pytest.raises(ValueError, match=r"^labels must be an integer torch.Tensor .* got list"):
        supcon(torch.randn(2, 4, 3), [0, 1, 0, 1])


def test_mlp_projection_is_x_plus_a_relu_mlp():
    torch.manual_seed(2)
    assert MLPProjection(4).net[0].out_features == 4 and MLPProjection(4, hidden=9).net[0].out_features == 9
    mlp = MLPProjection(4, hidden=9).double()
    for layer in (mlp.net[0], mlp.net[-1]):
        torch.nn.init.normal_(layer.weight)
        torch.nn.init.normal_(layer.bias)
    x = torch.randn(5, 4, dtype=torch.float64)
    first, last = mlp.net[0], mlp.net[-1]
    expected = x + torch.clamp(x @ first.weight.T + first.bias, min=0) @ last.weight.T + last.bias
    torch.testing.assert_close(mlp(x), expected, **F64)


def test_proj_nce_defaults_and_beta():
    torch.manual_seed(3)
    z, labels = torch.randn(2, 6, 4, dtype=torch.float64), torch.tensor([0, 1, 1, 2, 0, 2])
    i_proj, r = proj_nce_terms(z, labels, 0.07, projection="centroid")
    torch.testing.assert_close(proj_nce_terms(z, labels), (i_proj, r), **F64)
    torch.testing.assert_close(proj_nce(z, labels), i_proj + r, **F64)  # tau 0.07, centroid, beta 1
    torch.testing.assert_close(proj_nce(z, labels, beta=0.0), i_proj, **F64)
    torch.testing.assert_close(proj_nce(z, labels, beta=1.0), i_proj + r, **F64)
    torch.testing.assert_close(proj_nce(z, labels, beta=2.5), i_proj + 2.5 * r, **F64)
    torch.testing.assert_close(
        proj_nce(z, labels, projection="orthogonal"),
        proj_nce(z, labels, 0.07, projection="orthogonal", bandwidth=1.5, beta=1.0),
        **F64,
    )
    assert not torch.allclose(
        proj_nce(z, labels, projection="orthogonal"),
        proj_nce(z, labels, projection="orthogonal", bandwidth=2.5),
    )
    # Any d -> d module serves as "mlp", a parameterless one included: the identity gives "centroid".
    identity = proj_nce(z, labels, projection="mlp", mlp=torch.nn.Identity())
    torch.testing.assert_close(identity, i_proj + r, **F64)
    with pytest.raises(ValueError, match="MLPProjection"):
        proj_nce(z, labels, projection="mlp")


@pytest.mark.parametrize("projection, bandwidth", [("orthogonal", 1.0), ("median", 1.5), ("centroid", 1.5)])
def test_proj_nce_one_view_singleton_classes_give_finite_gradients(projection, bandwidth):
    # One view, classes 0 and 3 with a single image (no positive: masked out). Class 0 comes first in the
    # median's class order, and with bandwidth <= sqrt(2) ("orthogonal", kappa = 0) its held-out mass is 0.
    torch.manual_seed(4)
    z = torch.randn(1, 7, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([1, 0, 1, 2, 2, 3, 1])
    loss = proj_nce(z, labels, 0.5, projection=projection, bandwidth=bandwidth)
    (grad,) = torch.autograd.grad(loss, z)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert grad[0, 1].abs().max() > 0  # the singleton still serves as a negative
