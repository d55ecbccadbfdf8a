"""Small torch.distributed helpers shared by the losses and the training engine.

Every helper is the identity (or rank 0 of a world of 1) when ``torch.distributed`` is not available or not
initialized, so single-process code calls them unconditionally.

Gradient convention of :func:`gather_with_grad` (the one DDP expects). Let rank r hold rows x_r and compute
a local loss L_r from its own anchors against the gathered rows of every rank. Forward is an all_gather.
Backward sums, over all ranks, the gradients that reach rank r's slice (an all_reduce followed by taking
the own slice, i.e. a reduce-scatter), so that the gradient left on x_r is ∂(Σ_s L_s)/∂x_r. With the
losses defined so that (1/W) Σ_s L_s is the single-process loss L on the concatenated batch, every rank
holds W·∂L/∂x_r, and DDP's averaging of parameter gradients over the W ranks gives exactly the
single-process gradient ∂L/∂θ.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_initialized() -> bool:
    """True when torch.distributed is available and a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    """Rank of this process in the default group (0 when not distributed)."""
    return dist.get_rank() if is_initialized() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dimension 0 in forward; sum of every rank's gradient for our slice in backward."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.rows = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        # Each rank's loss saw every rank's rows: the gradient of Σ_s L_s for our rows is the sum over ranks.
        # all_reduce + slice rather than reduce_scatter, which the gloo backend lacks.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate every rank's ``x`` along dimension 0, keeping the gradient path to each rank's rows.

    Args:
        x: (n, ...) this rank's rows; every rank must pass the same shape.
    Returns:
        (W·n, ...) rows of rank 0, then rank 1, ...; ``x`` itself when not distributed (or W = 1).
    Backward: the gradient left on ``x`` is the sum over ranks of the gradients reaching this rank's slice
    (see the module docstring for why that is the DDP-consistent choice).
    """
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def all_gather_nograd(x: Tensor) -> Tensor:
    """Concatenate every rank's ``x`` along dimension 0 without gradient (labels, indices)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def launched_by_torchrun() -> bool:
    """True when the environment describes a process group of more than one process (torchrun sets RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK; 0 when not launched by torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(device_type: str) -> bool:
    """Join the process group the environment describes (gloo on CPU, nccl on CUDA); True if distributed."""
    if is_initialized():
        return world_size() > 1
    if not launched_by_torchrun():
        return False
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return True


def all_reduce_mean_(tensors: list[Tensor]) -> None:
    """Average ``tensors`` in place over all ranks, in one collective (a flat buffer), the way DDP averages
    gradients; the identity when not distributed."""
    if world_size() == 1 or not tensors:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_from_rank0(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object) on every rank: decisions that must agree across ranks
    (stop, pause) are taken on rank 0 and shared, instead of each rank deciding on its own clock."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_error(message: str | None) -> str | None:
    """Rank 0's error message (or None) on every rank, so that every rank stops when rank 0 cannot go on
    instead of waiting for it in the next collective."""
    return broadcast_from_rank0(message)
