"""LARS against a per-parameter reference written from the paper; the warm-up + cosine schedule."""

import math

import pytest
import torch

from vprob.optim import LARS, build_optimizer, warmup_cosine


def test_lars_matches_a_per_parameter_reference():
    torch.manual_seed(0)
    weight, bias = torch.randn(5, 4, requires_grad=True), torch.randn(4, requires_grad=True)
    ref = {"w": weight.detach().clone(), "b": bias.detach().clone()}
    lr, momentum, decay, eta = 0.1, 0.9, 1e-3, 1e-3
    optimizer = LARS([weight, bias], lr=lr, momentum=momentum, weight_decay=decay, trust_coefficient=eta)
    buffers = {}
    for _ in range(4):
        x = torch.randn(8, 5)
        optimizer.zero_grad()
        ((x @ weight + bias) ** 2).sum().backward()
        w, b = (t.detach().clone().requires_grad_() for t in (ref["w"], ref["b"]))
        ((x @ w + b) ** 2).sum().backward()
        optimizer.step()
        for name, p in (("w", w), ("b", b)):
            g = p.grad
            if p.ndim > 1:  # decay and trust ratio for weights only, as SimCLR's LARS
                g = g + decay * p.detach()
                g = g * (eta * p.detach().norm() / g.norm())
            buffers[name] = g if name not in buffers else momentum * buffers[name] + g
            ref[name] = p.detach() - lr * buffers[name]
    torch.testing.assert_close(weight.detach(), ref["w"])
    torch.testing.assert_close(bias.detach(), ref["b"])


def test_warmup_then_cosine():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    schedule = warmup_cosine(optimizer, total_steps=20, warmup_steps=4)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert rates[4] == pytest.approx(2.0)
    assert rates[12] == pytest.approx(2.0 * 0.5 * (1 + math.cos(math.pi * 8 / 16)))
    assert all(a >= b for a, b in zip(rates[4:], rates[5:], strict=False))


def test_bad_optimizer_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="adamw"):
        build_optimizer("rmsprop", torch.nn.Linear(2, 2), lr=0.1, weight_decay=0.0)


# ------------------------------------------------------------------------------------ pinned behaviour
# Each test below pins a setting that decides whether a reproduction matches its paper, against a hand
# computation, so that a one-line change (a dropped weight decay, a group swapped, a schedule constant)
# fails here rather than showing up as a slightly worse accuracy weeks later.


def _net():
    """Two weight matrices, their biases and a BatchNorm (1-D weight and bias), one frozen parameter."""
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    net.frozen = torch.nn.Parameter(torch.ones(2, 2), requires_grad=False)
    return net


@pytest.mark.parametrize("name", ["sgd", "adamw", "lars"])
def test_build_optimizer_groups_and_weight_decay(name):
    net = _net()
    optimizer = build_optimizer(name, net, lr=0.3, weight_decay=0.05)
    expected_type = {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW, "lars": LARS}[name]
    assert type(optimizer) is expected_type
    trainable = [p for p in net.parameters() if p.requires_grad]
    seen = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(seen) == len(trainable) == 6 and {id(p) for p in seen} == {id(p) for p in trainable}
    assert all(group["lr"] == 0.3 for group in optimizer.param_groups)
    if name == "lars":
        # One group; LARS itself exempts 1-D tensors from decay and trust ratio (checked below).
        (group,) = optimizer.param_groups
        assert group["weight_decay"] == 0.05 and group["momentum"] == 0.9
        assert group["trust_coefficient"] == 1e-3
        return
    decay_by_param = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    for p in trainable:
        assert decay_by_param[id(p)] == (0.05 if p.ndim > 1 else 0.0), tuple(p.shape)
    if name == "sgd":
        assert all(g["momentum"] == 0.9 and not g["nesterov"] for g in optimizer.param_groups)


def _step_with_zero_grads(name, lr=0.3, weight_decay=0.05, steps=1):
    net = _net()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    optimizer = build_optimizer(name, net, lr=lr, weight_decay=weight_decay)
    for _ in range(steps):
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()
    return before, dict(net.named_parameters())


@pytest.mark.parametrize("name", ["sgd", "adamw", "lars"])
def test_zero_gradient_step_decays_weights_only(name):
    """With zero gradients the only update is weight decay, computed by hand per optimizer; biases and
    BatchNorm parameters must not move."""
    lr, wd = 0.3, 0.05
    before, after = _step_with_zero_grads(name, lr, wd)
    for n, p in after.items():
        if p.ndim <= 1 or n == "frozen":
            assert torch.equal(p.detach(), before[n]), n
            continue
        if name == "sgd":  # coupled decay: g = wd * w, first momentum step is g
            expected = before[n] * (1 - lr * wd)
        elif name == "adamw":  # decoupled decay, then an Adam step of exactly zero (m = v = 0)
            expected = before[n] * (1 - lr * wd)
        else:  # LARS: d = wd * w, trust = eta |w| / |d| = eta / wd, update lr * trust * d = lr * eta * w
            expected = before[n] * (1 - lr * 1e-3)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-7, msg=n)


def test_sgd_momentum_is_point_nine():
    net = torch.nn.Linear(2, 1, bias=False)
    w0 = net.weight.detach().clone()
    optimizer = build_optimizer("sgd", net, lr=0.1, weight_decay=0.0)
    for _ in range(2):
        net.weight.grad = torch.ones_like(net.weight)
        optimizer.step()
    # Buffer after two steps: 1 then 0.9 * 1 + 1; total displacement lr * (1 + 1.9).
    torch.testing.assert_close(net.weight.detach(), w0 - 0.1 * 2.9)


def test_lars_trust_ratio_by_hand():
    """One weight row of norm 5 and one bias; the LARS update of You et al. (2017) written out in floats."""
    lr, wd, eta, mu = 0.5, 0.1, 2e-3, 0.9
    weight = torch.tensor([[3.0, 4.0]], requires_grad=True)
    bias = torch.tensor([0.5], requires_grad=True)
    optimizer = LARS([weight, bias], lr=lr, momentum=mu, weight_decay=wd, trust_coefficient=eta)
    weight.grad, bias.grad = torch.tensor([[0.0, 1.0]]), torch.tensor([2.0])
    optimizer.step()
    d = [0.0 + wd * 3.0, 1.0 + wd * 4.0]  # gradient plus decay: (0.3, 1.4)
    trust = eta * 5.0 / math.hypot(*d)
    w1 = [3.0 - lr * trust * d[0], 4.0 - lr * trust * d[1]]
    b1 = 0.5 - lr * 2.0  # bias: plain momentum SGD, no decay, no trust ratio
    torch.testing.assert_close(weight.detach(), torch.tensor([w1]), rtol=1e-6, atol=0)
    torch.testing.assert_close(bias.detach(), torch.tensor([b1]), rtol=1e-6, atol=0)
    # Second step: the momentum buffer holds the first scaled step.
    weight.grad, bias.grad = torch.tensor([[1.0, 0.0]]), torch.tensor([-1.0])
    optimizer.step()
    d2 = [1.0 + wd * w1[0], 0.0 + wd * w1[1]]
    trust2 = eta * math.hypot(*w1) / math.hypot(*d2)
    buf = [mu * trust * d[i] + trust2 * d2[i] for i in range(2)]
    w2 = [w1[i] - lr * buf[i] for i in range(2)]
    b2 = b1 - lr * (mu * 2.0 - 1.0)
    torch.testing.assert_close(weight.detach(), torch.tensor([w2]), rtol=1e-6, atol=0)
    torch.testing.assert_close(bias.detach(), torch.tensor([b2]), rtol=1e-6, atol=0)


def test_lars_defaults_and_degenerate_norms():
    p = torch.zeros(2, 2, requires_grad=True)
    q = torch.ones(2, 2, requires_grad=True)
    optimizer = LARS([p, q], lr=0.5)
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["trust_coefficient"]) == (0.9, 1e-6, 1e-3)
    # A zero weight or a zero (gradient + decay) falls back to trust ratio 1, not 0 or inf.
    p.grad, q.grad = torch.ones(2, 2), -1e-6 * torch.ones(2, 2)  # q's grad cancels its decay exactly
    optimizer.step()
    torch.testing.assert_close(p.detach(), -0.5 * torch.ones(2, 2))
    torch.testing.assert_close(q.detach(), torch.ones(2, 2))
    for lr in (0.0, -1.0):
        with pytest.raises(ValueError, match="lr"):
            LARS([p], lr=lr)


def _rates(total, warmup, final_fraction, base=2.0, steps=None):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    schedule = warmup_cosine(optimizer, total_steps=total, warmup_steps=warmup, final_fraction=final_fraction)
    rates = []
    for _ in range(total + 5 if steps is None else steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates


def test_warmup_cosine_known_steps_with_final_fraction():
    """Hand values for total 20, warm-up 4, base 2, final fraction 0.1:
    lr(s) = 2 (s + 1) / 4 for s < 4, else 2 (0.1 + 0.9 * (1 + cos(pi (s - 4) / 16)) / 2),
    and 0.2 from s = 20."""
    rates = _rates(20, 4, 0.1)
    assert rates[0] == pytest.approx(0.5)  # first step: 1 / warmup of the base rate, not 0
    assert rates[3] == pytest.approx(2.0)  # end of warm-up
    assert rates[4] == pytest.approx(2.0)  # start of the decay
    assert rates[12] == pytest.approx(1.1)  # middle: 2 * (0.1 + 0.9 / 2)
    assert rates[19] == pytest.approx(2.0 * (0.1 + 0.45 * (1 + math.cos(math.pi * 15 / 16))))  # last step
    assert rates[20:] == pytest.approx([0.2] * 5)  # past the end: held at the final fraction
    assert min(rates) == pytest.approx(0.2)


def test_warmup_cosine_edge_cases():
    assert _rates(5, 0, 0.0)[:6] == pytest.approx(
        [2.0 * 0.5 * (1 + math.cos(math.pi * s / 5)) for s in range(5)] + [0.0]
    )
    # warm-up as long as the run: the decay part has length max(1, 0) = 1
    assert _rates(4, 4, 0.25)[:6] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 0.5])
    assert _rates(5, 4, 0.25)[:6] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0, 0.5])
    assert _rates(3, 10, 0.0)[:3] == pytest.approx([2 / 3, 4 / 3, 2.0])  # warm-up clipped to the run
    assert _rates(1, 0, 0.5)[:3] == pytest.approx([2.0, 1.0, 1.0])  # a one-step run is valid
    with pytest.raises(ValueError, match="total_steps"):
        _rates(0, 0, 0.0)
