"""gather=True across two gloo processes on CPU equals one process holding the concatenated batch.

Convention (vprob.distributed): rank r's loss L_r is the mean over its own anchors, its contrast rows are
every rank's rows, and (1/W) Σ_r L_r = L, the single-process loss on the concatenated batch. gather_with_grad
sums the gradients of every rank's loss in backward, so the gradient on rank r's rows is
∂(Σ_s L_s)/∂z_r = W ∂L/∂z_r (the factor W = 2 checked below), and DDP's average of parameter gradients over
ranks is exactly ∂L/∂θ.
"""

from __future__ import annotations

import datetime

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vprob import distributed
from vprob.losses import info_nce, proj_nce, supcon

WORLD = 2
TOL = {"rtol": 1e-10, "atol": 1e-10}

# name -> (views, labels of the concatenated 2 × 5 images or None, loss(z, labels, chunk_size, gather))
CASES = {
    "info_nce": (3, None, lambda z, y, c, g: info_nce(z, 0.2, chunk_size=c, gather=g)),
    "supcon": (
        2,
        [0, 1, 1, 2, 0, 2, 2, 1, 0, 3],
        lambda z, y, c, g: supcon(z, y, 0.2, chunk_size=c, gather=g),
    ),
    # One view: image 3 (rank 0) and image 9 (rank 1) are alone in their class and have no positive.
    "supcon_one_view": (
        1,
        [0, 1, 0, 2, 1, 1, 0, 1, 1, 3],
        lambda z, y, c, g: supcon(z, y, 0.2, chunk_size=c, gather=g),
    ),
    "proj_nce_median": (
        2,
        [0, 1, 1, 2, 0, 2, 2, 1, 0, 3],
        lambda z, y, c, g: proj_nce(z, y, 0.2, projection="median", chunk_size=c, gather=g),
    ),
}


def _worker(rank: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        assert distributed.world_size() == WORLD and distributed.rank() == rank
        torch.manual_seed(0)  # the same full batch on every rank
        batch, dim_in, dim = 5, 4, 6
        own = slice(rank * batch, (rank + 1) * batch)
        for name, (views, labels, loss_fn) in CASES.items():
            x = torch.randn(views, WORLD * batch, dim_in, dtype=torch.float64)
            weight = torch.randn(dim_in, dim, dtype=torch.float64)  # a shared "network parameter"
            y = None if labels is None else torch.tensor(labels)
            for chunk_size in (0, 3):
                # One process holding the concatenated batch.
                single_weight = weight.clone().requires_grad_(True)
                z_all = x @ single_weight
                z_all.retain_grad()
                single = loss_fn(z_all, y, chunk_size, False)
                single.backward()
                # This rank: its own rows are the anchors, every rank's rows the contrast rows.
                local_weight = weight.clone().requires_grad_(True)
                z_own = x[:, own] @ local_weight
                z_own.retain_grad()
                local = loss_fn(z_own, None if y is None else y[own], chunk_size, True)
                local.backward()

                mean_loss = local.detach().clone()
                dist.all_reduce(mean_loss)
                torch.testing.assert_close(mean_loss / WORLD, single.detach(), **TOL, msg=name)
                # Gradient on this rank's rows: W times the single-process gradient of the same rows.
                torch.testing.assert_close(z_own.grad, WORLD * z_all.grad[:, own], **TOL, msg=name)
                # DDP averages parameter gradients over ranks: exactly the single-process gradient.
                averaged = local_weight.grad.clone()
                dist.all_reduce(averaged)
                torch.testing.assert_close(averaged / WORLD, single_weight.grad, **TOL, msg=name)
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one_process_on_the_concatenated_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"),), nprocs=WORLD, join=True)


def test_gather_without_process_group_is_the_identity():
    assert not distributed.is_initialized()
    assert distributed.world_size() == 1 and distributed.rank() == 0
    x = torch.randn(4, 3)
    assert distributed.gather_with_grad(x) is x and distributed.all_gather_nograd(x) is x
    z, labels = torch.randn(2, 4, 3), torch.tensor([0, 1, 0, 1])
    assert torch.equal(info_nce(z, gather=True), info_nce(z))
    assert torch.equal(supcon(z, labels, gather=True), supcon(z, labels))
