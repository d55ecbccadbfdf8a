"""Speed of ProjectedNormal.log_prob (forward, backward), .rsample against a diagonal Normal and Pyro's class.

    python benchmarks/distribution_speed.py                    # CPU, one thread, the issue #14 dimensions
    python benchmarks/distribution_speed.py --nuts             # ... plus NUTS on d = 3, ours vs Pyro's
    python benchmarks/distribution_speed.py --device cuda      # one CUDA device
    python benchmarks/distribution_speed.py --quick            # a small run

Run with the package installed (``pip install -e .``); the script's name no longer shadows ``distributions``.

For each d and a batch of 65,536 events (float32 by default), each row times one call, construction
included and validation off:

* ``ours (c)``: ``ProjectedNormal(c)`` (isotropic unit scale), compared with Pyro's
  ``pyro.distributions.ProjectedNormal(c)`` at d = 2, 3, 4 (the only dimensions where Pyro has a log_prob);
* ``ours (diag)``: ``ProjectedNormal(loc, scale)`` with a diagonal scale, compared with
  ``Normal(loc, scale).log_prob(x).sum(-1)``.

"backward" is ``log_prob(...).sum().backward()`` to the parameters (and includes the forward pass). The
callables of one dimension are timed *interleaved*: every repeat calls each of them once in turn, so a
background load spreads over all of them alike, and the median over repeats is reported (CPU: thread
CPU time, see ``timed_interleaved``), with the ratio to
its yardstick (``x Pyro`` and ``x Normal``). The issue #14 goals (CPU, one thread): ``x Pyro <= 2`` for
forward and backward at d <= 4; ``x Normal <= 3`` forward and ``<= 5`` backward for d <= 16; ``x Normal <= 3``
backward for d >= 128.

``--nuts`` runs NUTS (200 warm-up + 200 samples, seeds 1, 2, 3) on a model with a latent
``loc ~ Normal(0, 3 I_3)`` and 300 observed directions ``~ ProjectedNormal(loc)``, with our class and with
Pyro's, and prints the CPU times in total and per ``log_prob`` call (the log densities agree only to
rounding, so the trajectories part and the two chains need different numbers of steps).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import pyro
import pyro.distributions as dist
import torch

from distributions.projected_normal import ProjectedNormal

DIMS = (2, 3, 4, 8, 16, 128, 1024)
BATCH = 65_536
QUICK_DIMS = (3, 16, 128)
QUICK_BATCH = 8_192


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_interleaved(fns: dict, device: torch.device, warmup: int, repeats: int) -> dict:
    """Median seconds per call of each ``fns[name]()``, the calls interleaved round-robin.

    On the CPU the clock is the thread's CPU time (``time.thread_time``): with one thread it is the cost of
    the call, and unlike wall time it does not count the time the thread waited for a core on a shared
    machine (which inflates long calls more than short ones). On CUDA it is wall time between syncs.
    """
    clock = time.perf_counter if device.type == "cuda" else time.thread_time
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = clock()
            fn()
            _sync(device)
            times[name].append(clock() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def cases(d: int, batch: int, dtype: torch.dtype, device: torch.device, gen: torch.Generator):
    """``{(op, distribution): callable}`` for one dimension."""
    loc = (3 * torch.randn(batch, d, generator=gen)).to(device=device, dtype=dtype)
    scale = (0.5 + torch.rand(batch, d, generator=gen)).to(device=device, dtype=dtype)
    u_iso = ProjectedNormal(loc, validate_args=False).sample()
    u_diag = ProjectedNormal(loc, scale, validate_args=False).sample()
    x = dist.Normal(loc, scale, validate_args=False).sample()
    loc_g, scale_g = loc.clone().requires_grad_(), scale.clone().requires_grad_()

    def normal(lo, sc, value):
        return dist.Normal(lo, sc, validate_args=False).log_prob(value).sum(-1)

    makers = {
        "Normal (diag)": (lambda lo, sc: normal(lo, sc, x), True),
        "ours (diag)": (lambda lo, sc: ProjectedNormal(lo, sc, validate_args=False).log_prob(u_diag), True),
        "ours (c)": (lambda lo, sc: ProjectedNormal(lo, validate_args=False).log_prob(u_iso), False),
    }
    if d <= 4:
        makers["Pyro (c)"] = (
            lambda lo, sc: dist.ProjectedNormal(lo, validate_args=False).log_prob(u_iso),
            False,
        )

    def backward(make, with_scale):
        loc_g.grad = scale_g.grad = None
        make(loc_g, scale_g).sum().backward()

    fns = {}
    for name, (make, with_scale) in makers.items():
        fns["log_prob", name] = lambda make=make: _no_grad(make, loc, scale)
        fns["backward", name] = lambda make=make, w=with_scale: backward(make, w)
    fns["rsample", "Normal (diag)"] = lambda: dist.Normal(loc, scale, validate_args=False).rsample()
    fns["rsample", "ours (diag)"] = lambda: ProjectedNormal(loc, scale, validate_args=False).rsample()
    if d <= 4:
        fns["rsample", "Pyro (c)"] = lambda: dist.ProjectedNormal(loc, validate_args=False).rsample()
    return fns


def _no_grad(make, loc, scale):
    with torch.no_grad():
        return make(loc, scale)


def run(device: torch.device, dims, batch: int, dtype: torch.dtype, warmup: int, repeats: int) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    threads = f", {torch.get_num_threads()} thread(s)" if device.type == "cpu" else ""
    print(
        f"\n### {device.type}: {name}{threads}; torch {torch.__version__}; pyro {pyro.__version__}; "
        f"batch {batch:,}; {dtype}; median of {repeats} interleaved repeats\n"
    )
    print("| op | d | distribution | ms / call | x Normal | x Pyro |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    gen = torch.Generator(device="cpu").manual_seed(0)
    for d in dims:
        try:
            seconds = timed_interleaved(cases(d, batch, dtype, device, gen), device, warmup, repeats)
        except RuntimeError as e:  # e.g. out of memory at d = 1024 on a small device
            print(f"| | {d} | failed: {str(e).splitlines()[0][:80]} | | | |")
            continue
        for (op, dist_name), s in seconds.items():
            normal = s / seconds[op, "Normal (diag)"]
            pyro_ratio = s / seconds[op, "Pyro (c)"] if (op, "Pyro (c)") in seconds else None
            shown_pyro = f"{pyro_ratio:.2f}" if pyro_ratio is not None and dist_name == "ours (c)" else ""
            shown_normal = f"{normal:.2f}" if dist_name != "Normal (diag)" else ""
            print(f"| {op} | {d} | {dist_name} | {1e3 * s:.3f} | {shown_normal} | {shown_pyro} |")
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _counting(cls):
    """``cls`` with a count of its ``log_prob`` calls (NUTS takes a different number of steps with each class:
    the log densities agree only to rounding, so the trajectories part after a while)."""

    class Counted(cls):
        calls = 0

        def log_prob(self, value):
            type(self).calls += 1
            return super().log_prob(value)

    return Counted


def run_nuts(warmup: int = 200, samples: int = 200, n_obs: int = 300, seeds=(1, 2, 3)) -> None:
    """CPU time of NUTS on the d = 3 model with our class and with Pyro's (same data and seeds), in total
    and per evaluation of the log density."""
    from pyro.infer import MCMC, NUTS

    torch.manual_seed(0)
    data = ProjectedNormal(torch.tensor([2.0, -1.0, 0.5])).sample((n_obs,))

    def model(cls):
        def fn():
            loc = pyro.sample("loc", dist.Normal(torch.zeros(3), 3.0).to_event(1))
            with pyro.plate("data", n_obs):
                pyro.sample("obs", cls(loc), obs=data)

        return fn

    print(
        f"\n### NUTS, d = 3, {n_obs} observations, {warmup} warm-up + {samples} samples, seeds {seeds}, "
        f"{torch.get_num_threads()} thread(s)\n"
    )
    print("| distribution | seed | CPU seconds | log_prob calls | ms per call | posterior mean of loc |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    totals = {}
    for seed in seeds:
        for name, base in (("Pyro's ProjectedNormal", dist.ProjectedNormal), ("ours", ProjectedNormal)):
            cls = _counting(base)
            pyro.set_rng_seed(seed)
            mcmc = MCMC(NUTS(model(cls)), num_samples=samples, warmup_steps=warmup, disable_progbar=True)
            start = time.process_time()  # CPU seconds: robust to waiting for a core on a shared machine
            mcmc.run()
            seconds = time.process_time() - start
            total = totals.setdefault(name, [0.0, 0])
            total[0] += seconds
            total[1] += cls.calls
            mean = [round(v, 3) for v in mcmc.get_samples()["loc"].mean(0).tolist()]
            per_call = 1e3 * seconds / cls.calls
            print(f"| {name} | {seed} | {seconds:.2f} | {cls.calls} | {per_call:.3f} | {mean} |")
    (ours_s, ours_n), (pyro_s, pyro_n) = totals["ours"], totals["Pyro's ProjectedNormal"]
    print(
        f"\nours / Pyro's, all seeds: CPU time {ours_s / pyro_s:.2f}, time per log_prob call "
        f"{(ours_s / ours_n) / (pyro_s / pyro_n):.2f} ({ours_n} and {pyro_n} calls)"
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--quick", action="store_true", help=f"d in {QUICK_DIMS}, batch {QUICK_BATCH}")
    parser.add_argument("--batch", type=int, default=None, help=f"events per call (default {BATCH:,})")
    parser.add_argument("--dims", default=None, help=f"comma-separated dimensions (default {DIMS})")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1, as in #14)")
    parser.add_argument("--nuts", action="store_true", help="also time NUTS on a d = 3 model, ours vs Pyro's")
    parser.add_argument("--nuts-only", action="store_true", help="only the NUTS comparison")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("cuda requested but not available")
    if not args.nuts_only:
        default_dims = QUICK_DIMS if args.quick else DIMS
        dims = tuple(int(x) for x in args.dims.split(",")) if args.dims else default_dims
        batch = args.batch or (QUICK_BATCH if args.quick else BATCH)
        repeats = args.repeats or (25 if device.type == "cuda" else 9)
        run(device, dims, batch, getattr(torch, args.dtype), warmup=2, repeats=repeats)
    if args.nuts or args.nuts_only:
        run_nuts()


if __name__ == "__main__":
    main()
