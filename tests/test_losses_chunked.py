"""The memory-lean chunked path: same values and gradients as the naive one, chosen automatically or on
request, and never holding the (N, N) score matrix in forward or backward."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from vprob.losses import MLPProjection, chunked, info_nce, masked_logsumexp, proj_nce, proj_nce_terms, supcon

TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.float64: {"rtol": 1e-10, "atol": 1e-10}}


def _losses(labels: torch.Tensor, dim: int):
    mlp = MLPProjection(dim, hidden=9)
    torch.nn.init.normal_(mlp.net[-1].weight, std=0.3)
    losses = {
        "info_nce": lambda z, c: (info_nce(z, 0.1, chunk_size=c),),
        "supcon": lambda z, c: (supcon(z, labels, 0.1, chunk_size=c),),
    }
    for projection in ("centroid", "median", "orthogonal", "mlp"):
        losses[f"proj_nce_{projection}"] = lambda z, c, p=projection: proj_nce_terms(
            z, labels, 0.1, projection=p, mlp=mlp if p == "mlp" else None, bandwidth=2.0, chunk_size=c
        )
    return losses


LOSS_NAMES = list(_losses(torch.zeros(1), 1))


def _values_and_grads(fn, z, chunk_size):
    z = z.detach().requires_grad_(True)
    values = fn(z, chunk_size)
    grads = [torch.autograd.grad(v, z, retain_graph=True)[0] for v in values]
    return [v.detach() for v in values], grads


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_chunked_equals_naive(name, dtype, chunk_size):
    views, batch, dim = 3, 20, 16
    labels = torch.randint(0, 4, (batch,))
    fn = _losses(labels, dim)[name]
    z = torch.randn(views, batch, dim, dtype=dtype)
    naive_values, naive_grads = _values_and_grads(fn, z, 0)
    values, grads = _values_and_grads(fn, z, chunk_size)
    for value, expected in zip(values + grads, naive_values + naive_grads, strict=True):
        torch.testing.assert_close(value, expected, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_logsumexp_chunked_equals_dense_reference(dtype):
    """Rectangular, anchors different from contrast, column bias, with and without exclusion."""
    anchors = torch.randn(13, 6, dtype=dtype, requires_grad=True)
    contrast = torch.randn(29, 6, dtype=dtype, requires_grad=True)
    bias = torch.randn(29, dtype=dtype)
    exclude = torch.randint(0, 29, (13,))
    weights = torch.randn(13, dtype=dtype)
    for excluded in (exclude, None):
        scores = anchors @ contrast.T * 3.0 + bias
        if excluded is not None:
            scores = scores.masked_fill(torch.nn.functional.one_hot(excluded, 29).bool(), float("-inf"))
        expected = torch.logsumexp(scores, dim=1)
        expected_grads = torch.autograd.grad((expected * weights).sum(), (anchors, contrast))
        for chunk_size in (0, 1, 5, 13, None):
            lse = masked_logsumexp(anchors, contrast, excluded, 3.0, bias=bias, chunk_size=chunk_size)
            grads = torch.autograd.grad((lse * weights).sum(), (anchors, contrast))
            torch.testing.assert_close(lse, expected, **TOL[dtype])
            for grad, expected_grad in zip(grads, expected_grads, strict=True):
                torch.testing.assert_close(grad, expected_grad, **TOL[dtype])


def test_resolve_chunk_size():
    limit = chunked.AUTO_CHUNK_ELEMENTS
    assert chunked.resolve_chunk_size(8192, 8192, None) == 0  # (VB)^2 = 2^26: still naive
    assert chunked.resolve_chunk_size(8193, 8193, None) == limit // 8193
    assert chunked.resolve_chunk_size(2**19, 2**19, None) == 128
    assert chunked.resolve_chunk_size(10, 10, 0) == 0
    assert chunked.resolve_chunk_size(10, 10, 3) == 3
    assert chunked.auto_chunk_rows(2 * limit) == 1


class _LargestBlock(TorchDispatchMode):
    """Records the largest tensor any ATen op produces (forward and backward run under the mode)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


def _largest_block(fn, z, chunk_size):
    z = z.detach().requires_grad_(True)
    with _LargestBlock() as mode:
        values = fn(z, chunk_size)
        sum(values).backward()
    return mode.largest


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_chunked_path_never_holds_the_full_score_matrix(name):
    views, batch, dim, chunk_size = 2, 48, 8, 8
    rows = views * batch
    fn = _losses(torch.randint(0, 3, (batch,)), dim)[name]
    z = torch.randn(views, batch, dim)
    assert _largest_block(fn, z, 0) >= rows * rows  # the naive path does build it
    # Chunked, forward and backward: score blocks of chunk_size × N, besides N × (d + 1) rows ("orthogonal"
    # adds a feature column) and the N × 9 hidden layer of the MLP projection.
    assert _largest_block(fn, z, chunk_size) <= rows * max(chunk_size, dim + 1, 9) < rows * rows // 4


def test_automatic_selection_switches_to_chunks_above_the_threshold(monkeypatch):
    views, batch, dim = 2, 48, 8
    rows = views * batch
    fn = _losses(torch.randint(0, 3, (batch,)), dim)["info_nce"]
    z = torch.randn(views, batch, dim)
    assert _largest_block(fn, z, None) >= rows * rows  # below the threshold: naive
    monkeypatch.setattr(chunked, "AUTO_CHUNK_ELEMENTS", rows * rows - 1)
    assert chunked.resolve_chunk_size(rows, rows, None) == (rows * rows - 1) // rows
    assert _largest_block(fn, z, None) < rows * rows  # above it: chunked
    monkeypatch.undo()
    naive_values, naive_grads = _values_and_grads(fn, z, 0)
    monkeypatch.setattr(chunked, "AUTO_CHUNK_ELEMENTS", 100)
    values, grads = _values_and_grads(fn, z, None)
    torch.testing.assert_close(values + grads, naive_values + naive_grads, **TOL[torch.float32])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["info_nce", "supcon", "proj_nce_median"])
def test_chunked_equals_naive_at_the_automatic_threshold(name):
    """(VB)² just above 2^26: chunk_size=None picks the chunked path; compare with naive in float32."""
    views, batch, dim = 2, 4100, 128
    fn = _losses(torch.randint(0, 10, (batch,)), dim)[name]
    z = torch.randn(views, batch, dim)
    assert chunked.resolve_chunk_size(views * batch, views * batch, None) > 0
    naive_values, naive_grads = _values_and_grads(fn, z, 0)
    values, grads = _values_and_grads(fn, z, None)
    torch.testing.assert_close(values + grads, naive_values + naive_grads, **TOL[torch.float32])


def test_auto_chunk_rows_divides_the_element_budget():
    limit = chunked.AUTO_CHUNK_ELEMENTS
    assert chunked.auto_chunk_rows(1) == limit  # one contrast row: the whole budget in rows
    assert chunked.auto_chunk_rows(0) == limit
    assert chunked.auto_chunk_rows(3) == limit // 3


def test_masked_logsumexp_input_checks_name_the_argument():
    anchors, contrast = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(ValueError, match=r"^contrast\b"):
        masked_logsumexp(anchors, contrast[:1], torch.zeros(3, dtype=torch.long), 1.0)
    with pytest.raises(ValueError, match=r"^bias\b"):
        masked_logsumexp(anchors, contrast, None, 1.0, bias=torch.zeros(5, requires_grad=True))
    # No exclusion: a single contrast row is fine (lse is its score); one feature column is fine too.
    single = masked_logsumexp(anchors, contrast[:1], None, 2.0)
    torch.testing.assert_close(single, 2.0 * anchors @ contrast[0])
    narrow = torch.randn(3, 1)
    lse = masked_logsumexp(narrow, narrow, torch.arange(3), 1.0)
    expected = torch.stack(
        [torch.logsumexp(narrow[i] * narrow[[j for j in range(3) if j != i], 0], 0) for i in range(3)]
    )
    torch.testing.assert_close(lse, expected)


class _MatmulCount(TorchDispatchMode):
    """Counts the matrix products (mm) run under the mode."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten.mm.default
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("rows", [1, 4, 5])
def test_chunked_forward_computes_each_block_once(rows):
    # 12 anchors in chunks of ``rows``: ceil(12 / rows) score blocks in forward, no more.
    anchors, contrast = torch.randn(12, 3), torch.randn(7, 3)
    with _MatmulCount() as mode:
        masked_logsumexp(anchors, contrast, torch.arange(12) % 7, 1.0, chunk_size=rows)
    assert mode.count == -(-12 // rows)


@pytest.mark.parametrize("projection", ["centroid", "median"])
def test_proj_nce_chunks_the_class_side_too(projection):
    # Every image its own class: the class-side log-sum-exp is (rows × classes), as big as the row side.
    views, batch, dim, chunk_size = 2, 48, 8, 8
    rows = views * batch
    labels = torch.arange(batch)
    z = torch.randn(views, batch, dim)
    fn = lambda z, c: (proj_nce(z, labels, 0.1, projection=projection, chunk_size=c),)  # noqa: E731
    assert _largest_block(fn, z, chunk_size) <= rows * max(chunk_size, dim + 1) < rows * batch
