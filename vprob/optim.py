"""Optimizers and the learning-rate schedule of the training engine."""

from __future__ import annotations

import math

import torch
from torch import nn

OPTIMIZERS = ("adamw", "sgd", "lars")


class LARS(torch.optim.Optimizer):
    """SGD with momentum and layer-wise adaptive rate scaling (You et al., 2017, "Large Batch Training of
    Convolutional Networks"), as used by SimCLR. Biases and normalization parameters (1-D tensors) get
    neither weight decay nor the trust ratio, following SimCLR's reference implementation.
    """

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        trust_coefficient: float = 1e-3,
    ) -> None:
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            # Multi-tensor (foreach) ops: a handful of kernel launches per step instead of several per
            # parameter, which matters when the GPU step is only ~20 ms.
            adapted = [p for p in params if p.ndim > 1]
            grads = [p.grad for p in params]
            if adapted:
                adapted_grads = torch._foreach_add(
                    [p.grad for p in adapted], adapted, alpha=group["weight_decay"]
                )
                param_norms = torch.stack(torch._foreach_norm(adapted))
                grad_norms = torch.stack(torch._foreach_norm(adapted_grads))
                trust = torch.where(
                    (param_norms > 0) & (grad_norms > 0),
                    group["trust_coefficient"] * param_norms / grad_norms,
                    torch.ones_like(param_norms),
                )
                torch._foreach_mul_(adapted_grads, list(trust.unbind()))
                scaled = iter(adapted_grads)
                grads = [next(scaled) if p.ndim > 1 else p.grad for p in params]
            buffers = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buffers.append(state["momentum_buffer"])
            torch._foreach_mul_(buffers, group["momentum"])
            torch._foreach_add_(buffers, grads)
            torch._foreach_add_(params, buffers, alpha=-group["lr"])
        return loss


def build_optimizer(name: str, module: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, SGD (momentum 0.9) or LARS over ``module``'s trainable parameters.

    Weight decay skips biases and normalization parameters (1-D tensors) for AdamW and SGD too.
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    params = [p for p in module.parameters() if p.requires_grad]
    if name == "lars":
        return LARS(params, lr=lr, weight_decay=weight_decay)
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    return torch.optim.SGD(groups, lr=lr, momentum=0.9)


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, final_fraction: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0 over ``warmup_steps``, then cosine decay to ``final_fraction`` of the base lr."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    warmup_steps = max(0, min(warmup_steps, total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return final_fraction + (1 - final_fraction) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
