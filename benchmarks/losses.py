"""Time and peak memory of forward + backward of InfoNCE and SupCon: naive against chunked.

    python benchmarks/losses.py                      # CUDA: 4,096 to 262,144 pairs (B pairs = 2B anchors)
    python benchmarks/losses.py --device cpu --quick # a small CPU run

Prints a markdown table. Methods: "naive" is the library's dense path (``chunk_size=0``), "chunked" the
memory-lean one (``chunk_size`` = the automatic row count for that size), and for InfoNCE also
"cross-entropy", NT-Xent written the usual way (dense logits, masked diagonal, ``F.cross_entropy``), which is
the kind of implementation the yardstick of ARCHITECTURE.md measures (H100, 32,768 pairs: 154 ms, 48.6 GiB).
Peak memory on CUDA is ``torch.cuda.max_memory_allocated`` during the step (inputs and gradients included);
on CPU it is the growth of the process's peak resident set (VmHWM, reset through /proc/self/clear_refs)
over the resident set before the step, an approximation. A method that runs out of memory prints "OOM" and
is skipped for the larger sizes.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vprob.losses import info_nce, supcon
from vprob.losses.chunked import AUTO_CHUNK_ELEMENTS

GIB = 2**30
CUDA_SIZES = [4096, 8192, 16384, 32768, 65536, 131072, 262144]
CPU_QUICK_SIZES = [1024, 2048, 4096]


def nt_xent_cross_entropy(z: torch.Tensor, tau: float) -> torch.Tensor:
    """NT-Xent as commonly written (SimCLR implementations): dense, for comparison only."""
    views, batch, dim = z.shape
    x = F.normalize(z.float(), dim=-1).reshape(views * batch, dim)
    logits = (x @ x.T / tau).fill_diagonal_(float("-inf"))
    target = (torch.arange(views * batch, device=z.device) + batch) % (views * batch)
    return F.cross_entropy(logits, target)


def methods(loss: str, pairs: int, chunk_elements: int):
    rows = max(1, chunk_elements // (2 * pairs))  # as vprob.losses.chunked.auto_chunk_rows
    if loss == "info_nce":
        yield "cross-entropy", None, lambda z, y, tau: nt_xent_cross_entropy(z, tau)
        yield "naive", None, lambda z, y, tau: info_nce(z, tau, chunk_size=0)
        yield "chunked", rows, lambda z, y, tau: info_nce(z, tau, chunk_size=rows)
    else:
        yield "naive", None, lambda z, y, tau: supcon(z, y, tau, chunk_size=0)
        yield "chunked", rows, lambda z, y, tau: supcon(z, y, tau, chunk_size=rows)


class PeakMemory:
    """Peak bytes of one step: CUDA allocator statistics, or the resident-set high-water mark on Linux."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.base = _rss_kib("VmRSS")
            try:
                Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            except OSError:
                self.base = None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = _rss_kib("VmHWM")
            self.peak = None if self.base is None or peak is None else max(0, peak - self.base) * 1024
        return False


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _step(fn, z, labels, tau, device):
    z.grad = None
    fn(z, labels, tau).backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, pairs: int, dim: int, tau: float, device: torch.device, repeats: int):
    """(median seconds, best seconds, peak bytes) of forward + backward, or None when out of memory."""
    generator = torch.Generator(device="cpu").manual_seed(0)
    z = torch.randn(2, pairs, dim, generator=generator).to(device).requires_grad_(True)
    labels = torch.randint(0, 100, (pairs,), generator=generator).to(device)  # 100 classes for SupCon
    try:
        _step(fn, z, labels, tau, device)  # warm-up (kernels, allocator)
        with PeakMemory(device) as memory:
            _step(fn, z, labels, tau, device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            _step(fn, z, labels, tau, device)
            times.append(time.perf_counter() - start)
        return statistics.median(times), min(times), memory.peak
    except torch.cuda.OutOfMemoryError:
        return None
    except RuntimeError as error:  # CPU allocation failures
        if "alloc" in str(error).lower() or "memory" in str(error).lower():
            return None
        raise
    finally:
        del z, labels
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"CPU {platform.processor() or platform.machine()}, {threads} thread{'s' if threads > 1 else ''}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU smoke run)")
    parser.add_argument("--sizes", type=int, nargs="+", help="numbers of pairs B (2B anchors)")
    parser.add_argument("--losses", nargs="+", default=["info_nce", "supcon"], choices=["info_nce", "supcon"])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--tau", type=float, default=0.07)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--chunk-elements",
        type=int,
        help=f"scores per chunk (default: the library's {AUTO_CHUNK_ELEMENTS:,}; 2^22 with --quick, so "
        "that the small CPU sizes are split into several chunks)",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sizes = args.sizes or (CPU_QUICK_SIZES if args.quick or device.type == "cpu" else CUDA_SIZES)
    chunk_elements = args.chunk_elements or (2**22 if args.quick else AUTO_CHUNK_ELEMENTS)

    print(f"# Contrastive losses, forward + backward ({device_name(device)})\n")
    print(
        f"torch {torch.__version__}, d = {args.dim}, tau = {args.tau}, float32, median of {args.repeats}, "
        f"{chunk_elements:,} scores per chunk."
    )
    memory_kind = "max_memory_allocated" if device.type == "cuda" else "peak RSS growth (approximate)"
    print(f"Peak memory: {memory_kind}.\n")
    columns = ["loss", "pairs B", "anchors 2B", "method", "chunk rows", "median (ms)", "best (ms)"]
    columns += ["peak (GiB)", "median / naive"]
    print("| " + " | ".join(columns) + " |")
    print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for loss in args.losses:
        out_of_memory: set[str] = set()
        for pairs in sizes:
            naive_time = None
            for name, rows, fn in methods(loss, pairs, chunk_elements):
                cells = [loss, f"{pairs:,}", f"{2 * pairs:,}", name, "" if rows is None else str(rows)]
                skip = name in out_of_memory
                result = None if skip else measure(fn, pairs, args.dim, args.tau, device, args.repeats)
                if result is None:
                    out_of_memory.add(name)
                    print("| " + " | ".join([*cells, "OOM", "OOM", "OOM", ""]) + " |", flush=True)
                    continue
                seconds, best, peak = result
                naive_time = seconds if name == "naive" else naive_time
                ratio = "" if name == "naive" or naive_time is None else f"{seconds / naive_time:.2f}"
                peak_text = "n/a" if peak is None else f"{peak / GIB:.3f}"
                times = [f"{seconds * 1e3:.1f}", f"{best * 1e3:.1f}"]
                print("| " + " | ".join([*cells, *times, peak_text, ratio]) + " |", flush=True)


if __name__ == "__main__":
    main()
