"""Decoding and sizing image sets (vprob.data.decode): the memory arithmetic against exact integer answers
and hand-computed messages, the CUDA check with torch.cuda.mem_get_info replaced by a recorder, the resize's
centre crop against torchvision, 16-bit PNGs against numpy, the decoder's shape check and messages, and the
thread pool (its size, torch's threads inside it, what a failure cancels and waits for). Written for #19
(mutation testing left these unpinned by the layout tests)."""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vprob.data import decode
from vprob.data.decode import (
    bytes_needed,
    check_fits,
    check_fits_device,
    decode_files,
    largest_image_size,
    resize_square,
)


def _exact_largest(n: int, c: int, budget: int) -> int:
    """The largest S with n (c S^2 + 8) <= budget, in integers."""
    return 0 if budget < 8 * n + n * c else math.isqrt((budget - 8 * n) // (n * c))


def test_bytes_needed_by_hand():
    assert bytes_needed(10, 3, 32) == 10 * (3 * 1024 + 8) == 30_800
    assert bytes_needed(1, 1, 0) == 8
    assert bytes_needed(2.0, 3.0, 4.0) == 2 * (48 + 8) and type(bytes_needed(2.0, 3.0, 4.0)) is int


@pytest.mark.parametrize(
    "n, c, budget",
    [
        (1, 3, 11),  # exactly one 1x1 image: per image 3 bytes of pixels after the 8 of the label
        (1, 3, 10),
        (1, 1, 9),
        (3, 3, 3 * (3 * 49 + 8)),  # exactly 7 px
        (3, 3, 3 * (3 * 49 + 8) - 1),
        (1000, 3, 2_000_000_000),
        # above ~10^16 bytes a float budget / n rounds up; these gave one size too many before #19
        (1_281_167, 1, 11_035_821_013_097_742),
        (100_000, 1, 96_977_195_290_799_999),
    ],
)
def test_largest_image_size_is_exact(n, c, budget):
    assert largest_image_size(n, c, budget) == _exact_largest(n, c, budget)
    size = largest_image_size(n, c, budget)
    assert bytes_needed(n, c, size) <= budget or size == 0
    assert bytes_needed(n, c, size + 1) > budget


def test_largest_image_size_values_and_refusal():
    assert largest_image_size(1, 3, 11) == 1 and largest_image_size(1, 3, 10) == 0
    assert largest_image_size(3, 3, 3 * (3 * 49 + 8)) == 7
    assert largest_image_size(1000, 3, 2_000_000_000) == 816  # isqrt((2e9 / 1000 - 8) // 3) = isqrt(666,664)
    assert largest_image_size(1, 3, 11.9) == 1  # a float budget is floored
    for bad in (0, -2):
        with pytest.raises(ValueError) as info:
            largest_image_size(bad, 3, 100)
        assert str(info.value) == f"num_images must be positive, got {bad}"


def test_check_fits_boundary_and_whole_messages():
    check_fits(1, 3, 1, free_bytes=22, what="x")  # needs 11 bytes: exactly half of 22
    with pytest.raises(ValueError) as info:
        check_fits(1, 3, 1, free_bytes=21, what="x")
    assert "take 11 bytes" in str(info.value)
    with pytest.raises(ValueError) as info:
        check_fits(1000, 3, 1000, free_bytes=4_000_000_000, what="somewhere")
    assert str(info.value) == (
        "somewhere: 1,000 images of 3x1000x1000 take 3,000,008,000 bytes (2.79 GiB) on the device, more than "
        "50% of its 4,000,000,000 free bytes (the rest is for the model and its activations); the largest "
        "image size that fits is 816 px"
    )
    with pytest.raises(ValueError) as info:
        check_fits(10, 3, 8, free_bytes=400, what="tiny", fraction=0.25)
    assert str(info.value) == (
        "tiny: 10 images of 3x8x8 take 2,000 bytes (0.00 GiB) on the device, more than 25% of its 400 free "
        "bytes (the rest is for the model and its activations); no image size fits: use fewer images or a "
        "device with more memory"
    )
    assert decode.DEVICE_FRACTION == 0.5


def test_check_fits_device_asks_cuda_only(monkeypatch):
    asked = []
    free = {"bytes": 22}

    def mem_get_info(device):
        asked.append(device)
        return free["bytes"], 10**12

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    check_fits_device(10**9, 3, 1000, torch.device("cpu"), "x")
    check_fits_device(10**9, 3, 1000, torch.device("meta"), "x")
    assert asked == []
    check_fits_device(1, 3, 1, torch.device("cuda", 1), "x")
    assert asked == [torch.device("cuda", 1)]
    free["bytes"] = 21
    with pytest.raises(ValueError) as info:
        check_fits_device(1, 3, 1, torch.device("cuda", 1), "the set")
    assert str(info.value).startswith(
        "the set: 1 images of 3x1x1 take 11 bytes (0.00 GiB) on the device, more than 50% of its 21 free "
        "bytes"
    )


def _ramp(h: int, w: int) -> torch.Tensor:
    """(1, 3, h, w) uint8 whose every row and column differ: the crop offset shows."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    image = (y * 10 + x) % 256
    return torch.stack([image, 255 - image, image // 2]).unsqueeze(0).to(torch.uint8)


@pytest.mark.parametrize("h, w", [(24, 16), (16, 40), (12, 12), (10, 15)])
def test_resize_square_is_torchvisions_resize_and_centre_crop(h, w):
    from torchvision.transforms.v2 import functional as TF

    images = _ramp(h, w)
    got = resize_square(images, 8)
    ref = TF.center_crop(TF.resize(images.float(), [8], antialias=True), [8, 8]).round()
    assert got.shape == (1, 3, 8, 8) and got.dtype == torch.uint8
    assert (got.float() - ref).abs().max() <= 1


def test_resize_square_keeps_black_and_white_and_returns_a_square_of_the_size_as_is():
    black_white = torch.zeros(2, 3, 20, 30, dtype=torch.uint8)
    black_white[1] = 255
    out = resize_square(black_white, 5)
    assert torch.equal(out[0], torch.zeros(3, 5, 5, dtype=torch.uint8))
    assert torch.equal(out[1], torch.full((3, 5, 5), 255, dtype=torch.uint8))
    same = _ramp(8, 8)
    assert resize_square(same, 8) is same


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def test_16_bit_png_keeps_the_high_byte(tmp_path):
    values = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4099 + 7).astype(np.uint16)
    path = _png(tmp_path / "deep.png", values)
    assert Image.open(path).mode == "I;16"
    out = decode_files([path], 4, threads=1)
    expected = torch.from_numpy((values >> 8).astype(np.uint8))
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 4, 4)
    for channel in range(3):
        assert torch.equal(out[0, channel], expected)


def test_torchvisions_deprecation_notice_is_silenced_but_nothing_else(tmp_path):
    path = _png(tmp_path / "a.png", np.full((4, 4, 3), 9, dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning escaping the decoder would raise here
        out = decode_files([path], 4, threads=1)
    assert torch.equal(out, torch.full((1, 3, 4, 4), 9, dtype=torch.uint8))


def test_the_notice_stays_silenced_with_several_workers(tmp_path):
    """Warning filters are process-wide and catch_warnings is not thread-safe: a filter set inside each
    worker let the notice through in about a third of these calls (4 workers, 32 files) before #19."""
    paths = [_png(tmp_path / f"{i}.png", np.full((4, 4, 3), i, dtype=np.uint8)) for i in range(32)]
    filters = len(warnings.filters)
    for _ in range(10):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = decode_files(paths, 4, threads=4)
        assert [int(v) for v in out[:, 0, 0, 0]] == list(range(32))
    assert len(warnings.filters) == filters  # nothing left behind


def test_unreadable_file_and_size_refusal_messages(tmp_path):
    missing = tmp_path / "missing.png"
    with pytest.raises(ValueError) as info:
        decode_files([missing], 4, threads=1)
    assert str(info.value).startswith(f"{missing}: cannot be read (")
    assert isinstance(info.value.__cause__, (OSError, RuntimeError))
    for bad in (0, -1):
        with pytest.raises(ValueError) as info:
            decode_files([missing], bad)
        assert str(info.value) == f"image size must be positive, got {bad}"
    path = _png(tmp_path / "a.png", np.full((4, 4, 3), 200, dtype=np.uint8))
    assert torch.equal(decode_files([path], 1, threads=1), torch.full((1, 3, 1, 1), 200, dtype=torch.uint8))
    empty = decode_files([], 3)
    assert empty.shape == (0, 3, 3, 3) and empty.dtype == torch.uint8


@pytest.mark.parametrize("shape", [(1, 4, 4), (4, 4, 4), (3, 0, 4), (3, 4, 0), (4, 4), (1, 3, 4, 4)])
def test_decoded_shapes_that_are_not_rgb_images_are_refused(tmp_path, monkeypatch, shape):
    import torchvision.io

    path = _png(tmp_path / "a.png", np.zeros((4, 4, 3), dtype=np.uint8))
    monkeypatch.setattr(
        torchvision.io, "decode_image", lambda data, mode: torch.zeros(shape, dtype=torch.uint8)
    )
    with pytest.raises(ValueError) as info:
        decode_files([path], 2, threads=1)
    assert str(info.value) == f"{path}: decodes to shape {shape}, not an RGB image"


def test_a_one_pixel_image_is_an_image(tmp_path, monkeypatch):
    import torchvision.io

    path = _png(tmp_path / "a.png", np.zeros((4, 4, 3), dtype=np.uint8))
    monkeypatch.setattr(
        torchvision.io, "decode_image", lambda data, mode: torch.full((3, 1, 1), 77, dtype=torch.uint8)
    )
    assert torch.equal(decode_files([path], 2, threads=1), torch.full((1, 3, 2, 2), 77, dtype=torch.uint8))


class _Pools:
    """ThreadPoolExecutor recording its size and shutdown arguments."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.sizes: list[int | None] = []
        self.shutdowns: list[dict] = []
        pools = self

        class Pool(ThreadPoolExecutor):
            def __init__(self, max_workers=None):
                pools.sizes.append(max_workers)
                super().__init__(max_workers=max_workers)

            def shutdown(self, wait=True, *, cancel_futures=False):
                pools.shutdowns.append(dict(wait=wait, cancel_futures=cancel_futures))
                super().shutdown(wait=wait, cancel_futures=cancel_futures)

        self.Pool = Pool


def _fake_decoder(monkeypatch, seen: list, fail=(), slow=0.0):
    def decode_path(path, size):
        if path.name in fail:
            raise ValueError(f"{path.name} is bad")
        time.sleep(slow)
        seen.append((path.name, torch.get_num_threads(), threading.current_thread().name))
        return torch.full((3, size, size), int(path.name) % 256, dtype=torch.uint8)

    monkeypatch.setattr(decode, "_decode_path", decode_path)


def test_pool_size_from_the_cpus_this_process_may_use(monkeypatch):
    pools = _Pools()
    monkeypatch.setattr(decode, "ThreadPoolExecutor", pools.Pool)
    _fake_decoder(monkeypatch, [])
    asked = []
    cpus = {"set": set(range(20))}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: asked.append(pid) or cpus["set"])
    paths = [Path(str(i)) for i in range(3)]
    decode_files(paths, 2)
    cpus["set"] = {4, 7, 9}
    decode_files(paths, 2)
    assert asked == [0, 0] and pools.sizes == [16, 3]
    monkeypatch.delattr(os, "sched_getaffinity")  # a platform without it: the CPU count
    counts = iter([5, None, 40])
    monkeypatch.setattr(os, "cpu_count", lambda: next(counts))
    for _ in range(3):
        decode_files(paths, 2)
    decode_files(paths, 2, threads=0)
    decode_files(paths, 2, threads=3)
    assert pools.sizes == [16, 3, 5, 1, 16, 1, 3]
    assert pools.shutdowns[-1] == dict(wait=True, cancel_futures=True)


def test_workers_run_torch_single_threaded_and_the_setting_comes_back(monkeypatch):
    seen: list = []
    _fake_decoder(monkeypatch, seen)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = decode_files([Path(str(i)) for i in range(4)], 2, threads=2)
        assert torch.get_num_threads() == 2
        assert {threads for _, threads, _ in seen} == {1}
        assert [int(v) for v in out[:, 0, 0, 0]] == [0, 1, 2, 3]  # each row its own file
        _fake_decoder(monkeypatch, seen, fail={"1"})
        with pytest.raises(ValueError, match="1 is bad"):
            decode_files([Path(str(i)) for i in range(3)], 2, threads=1)
        assert torch.get_num_threads() == 2  # restored after a failure too
    finally:
        torch.set_num_threads(previous)


def test_a_failure_cancels_the_queued_files(monkeypatch):
    seen: list = []
    _fake_decoder(monkeypatch, seen, fail={"0"}, slow=0.005)
    with pytest.raises(ValueError, match="^0 is bad$"):
        decode_files([Path(str(i)) for i in range(200)], 2, threads=1)
    assert len(seen) < 20  # the one or two already started, not the 199 queued


def test_a_failure_waits_for_the_files_in_flight(monkeypatch):
    """Two workers: file 0 fails at once while file 1 takes 0.3 s; decode_files raises only after file 1 is
    done, so no worker thread outlives the call."""
    seen: list = []

    def decode_path(path, size):
        if path.name == "0":
            time.sleep(0.05)  # file 1 has started by now
            raise ValueError("0 is bad")
        time.sleep(0.3)
        seen.append(path.name)
        return torch.zeros((3, size, size), dtype=torch.uint8)

    monkeypatch.setattr(decode, "_decode_path", decode_path)
    with pytest.raises(ValueError, match="0 is bad"):
        decode_files([Path("0"), Path("1")], 2, threads=2)
    assert seen == ["1"]
