"""Throughput of ProjectedNormal.log_prob and .rsample against a diagonal Normal and Pyro's ProjectedNormal.

    python benchmarks/distributions.py                     # CPU, plus CUDA when available
    python benchmarks/distributions.py --device cuda       # one device
    python benchmarks/distributions.py --quick             # a small CPU run

For d in {3, 128, 1024} and a batch of 65,536 events (float32, diagonal scale), each row times one call:
``ProjectedNormal(loc, scale).log_prob(u)`` (construction included, validation off), the same followed by
a backward pass to ``loc`` and ``scale``, and ``.rsample()``; the yardstick is
``pyro.distributions.Normal(loc, scale).to_event(1)`` of the same shape doing the same, and at d = 3 also
Pyro's ``ProjectedNormal(loc)`` (isotropic unit scale, its only form). Timing: warm-up calls, then the median
of repeated calls, each bracketed by ``torch.cuda.synchronize`` on CUDA. Prints a markdown table per device:
milliseconds per call, events per second, and the ratio to the Normal's time (the goal at d = 128 is a
log_prob no more than 3x the Normal's).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import pyro.distributions as dist
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from distributions.projected_normal import ProjectedNormal  # noqa: E402

DIMS = (3, 128, 1024)
BATCH = 65_536
QUICK_DIMS = (3, 128)
QUICK_BATCH = 8_192


def timed(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds per call of ``fn()``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cases(d: int, loc: torch.Tensor, scale: torch.Tensor):
    """(operation, distribution name, callable) triples for one dimension."""
    u = ProjectedNormal(loc, scale, validate_args=False).sample()
    x = dist.Normal(loc, scale, validate_args=False).sample()
    loc_g, scale_g = loc.clone().requires_grad_(), scale.clone().requires_grad_()

    def backward(value):
        loc_g.grad = scale_g.grad = None
        value.sum().backward()

    makers = {
        "Normal (diagonal)": lambda lo, sc: dist.Normal(lo, sc, validate_args=False).to_event(1),
        "ProjectedNormal (ours)": lambda lo, sc: ProjectedNormal(lo, sc, validate_args=False),
    }
    if d == 3:
        makers["ProjectedNormal (Pyro)"] = lambda lo, sc: dist.ProjectedNormal(lo, validate_args=False)
    for name, make in makers.items():
        value = x if name.startswith("Normal") else u
        with torch.no_grad():
            yield "log_prob", name, lambda make=make, value=value: make(loc, scale).log_prob(value)
        yield (
            "log_prob + backward",
            name,
            lambda make=make, value=value: backward(make(loc_g, scale_g).log_prob(value)),
        )
        yield "rsample", name, lambda make=make: make(loc, scale).rsample()


def run(device: torch.device, dims, batch: int, dtype: torch.dtype, warmup: int, repeats: int) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    threads = f", {torch.get_num_threads()} threads" if device.type == "cpu" else ""
    print(f"\n### {device.type}: {name}{threads}; torch {torch.__version__}; batch {batch:,}; {dtype}\n")
    print("| op | d | distribution | ms / call | events / s | x Normal |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    gen = torch.Generator(device="cpu").manual_seed(0)
    for d in dims:
        loc = (3 * torch.randn(batch, d, generator=gen)).to(device=device, dtype=dtype)
        scale = (0.5 + torch.rand(batch, d, generator=gen)).to(device=device, dtype=dtype)
        baseline = {}
        for op, dist_name, fn in cases(d, loc, scale):
            try:
                seconds = timed(fn, device, warmup, repeats)
            except RuntimeError as e:  # e.g. out of memory at d = 1024
                print(f"| {op} | {d} | {dist_name} | failed: {str(e).splitlines()[0][:60]} | | |")
                continue
            if dist_name.startswith("Normal"):
                baseline[op] = seconds
            ratio = seconds / baseline[op] if op in baseline else float("nan")
            ms, rate = 1e3 * seconds, batch / seconds
            print(f"| {op} | {d} | {dist_name} | {ms:.3f} | {rate:,.0f} | {ratio:.2f} |")
        del loc, scale
        if device.type == "cuda":
            torch.cuda.empty_cache()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        action="append",
        help="device(s) to time (default: cpu, plus cuda when available)",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"small CPU run: d in {QUICK_DIMS}, batch {QUICK_BATCH}"
    )
    parser.add_argument("--batch", type=int, default=None, help=f"events per call (default {BATCH:,})")
    parser.add_argument("--dims", default=None, help=f"comma-separated dimensions (default {DIMS})")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args(argv)

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    devices = args.device or ["cpu"]
    if args.device is None and not args.quick and torch.cuda.is_available():
        devices.append("cuda")
    dims = tuple(int(x) for x in args.dims.split(",")) if args.dims else (QUICK_DIMS if args.quick else DIMS)
    batch = args.batch or (QUICK_BATCH if args.quick else BATCH)
    dtype = getattr(torch, args.dtype)
    for device_name in devices:
        device = torch.device(device_name)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("\n(cuda requested but not available; skipped)")
            continue
        repeats = args.repeats or (25 if device.type == "cuda" else 7)
        run(device, dims, batch, dtype, warmup=3 if device.type == "cuda" else 2, repeats=repeats)


if __name__ == "__main__":
    main()
