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
