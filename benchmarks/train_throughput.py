"""Images/s of one full training step, per method, beside the plain-PyTorch step measured in the same run.

    python benchmarks/train_throughput.py --data-dir ../shared/data/cifar10            # CUDA when present
    python benchmarks/train_throughput.py --data digits --device cpu --steps 5 --quick # small CPU run
    python benchmarks/train_throughput.py --rows "vsimclr full step" --profile           # diagnose some rows

Rows (``--list-rows`` prints them; ``--rows SUBSTRING ...`` keeps those whose name contains one of the
substrings, ``--quick`` drops the compiled rows, ``--compiled-only`` keeps only them):
- ``plain``: the yardstick. ResNet-18 + MLP head, InfoNCE on a fixed, already normalized batch of two views
  (no augmentation), the optimizer step; bf16 autocast and channels_last on CUDA; ``plain compiled`` adds
  ``torch.compile`` of the encoder.
- ``plain vsimclr maths``: the VSimCLR objective written as a plain loss (projected-normal rsample,
  InfoNCE on the samples, Gaussian KL bound / d), no Pyro, no augmentation: the cost of the maths alone.
- ``vsimclr maths as a plain loss, full step``: the same maths with the engine's augmentation, no Pyro;
  the Pyro overhead is the difference between this row and ``vsimclr full step (kl=bound)``.
- ``simclr``, ``vsimclr (kl=bound)``, ``vsimclr (kl=exact)``: the engine's full step (on-device
  augmentation of both views + forward + loss + backward + optimizer), exactly what ``vprob train`` runs;
  VSimCLR goes through Pyro's model/guide traces and ``vprob.models.elbo.differentiable_loss`` (sync-free).
- ``vsimclr full step with pyro's ELBO (kl=bound)``: the same engine step with the loss from Pyro's own
  ``ELBO.differentiable_loss`` (NaN checks and ``torch_item``): the sync fix before/after in one run.

Each row: a warm-up of at least ``--warmup`` steps and ``--warmup-s`` seconds (15 s on CUDA, torch.compile
included), continued in windows of ``--steps`` steps until two consecutive windows agree within 5% (at most
``--warmup-windows`` more); then the median of ``--repeats`` timed windows of ``--steps`` steps.

``host syncs/step``: the points in one step (after timing) where the host waits for the device, counted
with ``torch.profiler``. On CUDA: the runtime's blocking calls (``cudaStreamSynchronize``,
``cudaDeviceSynchronize``, ``cudaEventSynchronize``, ``cudaMemcpy``). On CPU, which has no device to wait
for, the ops that would sync on one: ``aten::_local_scalar_dense``, what ``.item()``, ``bool(t)``,
``float(t)`` and ``.tolist()`` run, less the reads of torch.optim's step counters, which it keeps on the
host (no sync on a GPU either). A step that keeps the GPU busy has 0.

``--profile``: after timing, ``torch.profiler`` over ``--profile-steps`` steps per row: the top-15 table
(self CUDA time on CUDA, self CPU time on CPU), host time per step against device busy time per step, and a
Chrome trace per row in ``--profile-dir`` (open in https://ui.perfetto.dev or chrome://tracing).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

# Kineto logs every profiler start/stop (and, on a machine without a GPU, a CUDA error) to stderr; the sync
# count profiles every row, so without this the table drowns. Must be set before torch is imported.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

import pyro  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from pyro.infer import ELBO  # noqa: E402
from torch.autograd import DeviceType  # noqa: E402
from torch.profiler import ProfilerActivity, profile, record_function  # noqa: E402

from distributions import ProjectedNormal, gaussian_kl_bound  # noqa: E402
from vprob.config import make_config  # noqa: E402
from vprob.engine.step import TrainStep  # noqa: E402
from vprob.losses import info_nce, value_checks  # noqa: E402
from vprob.methods import get_method  # noqa: E402
from vprob.train import Trainer  # noqa: E402

Step = Callable[[], None]
STEP_LABEL = "vprob::step"
SCALAR_READ = "aten::_local_scalar_dense"
# The CUDA runtime calls that block the host until the device catches up (cudaMemcpy without Async blocks).
BLOCKING_CUDA_CALLS = frozenset(
    {"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"}
)
SETTLE_TOLERANCE = 0.05


# ------------------------------------------------------------------------------------------------------
# The steps


def engine_step(trainer: Trainer, train_step: TrainStep | None = None) -> Step:
    """The engine's full step (views, then ``trainer.train_step`` or the given one) on a fresh random
    batch."""
    images, labels = trainer.train_set.images, trainer.train_set.labels
    batch = trainer.config.batch_size
    train_step = train_step or trainer.train_step

    def step() -> None:
        index = torch.randint(len(images), (batch,), device=trainer.device, generator=trainer.generator)
        train_step(trainer.views(images[index]), labels[index])

    return step


class PyroELBO(ELBO):
    """``elbo`` evaluated by Pyro's own ``differentiable_loss``, NaN checks and ``torch_item`` included.

    ``vprob.models.elbo.differentiable_loss`` hands ELBO classes it does not know to their own
    ``differentiable_loss``; this wrapper is one, so a model's ``training_loss`` given it runs Pyro's code.
    """

    def __init__(self, elbo: ELBO) -> None:
        super().__init__(
            num_particles=elbo.num_particles,
            max_plate_nesting=elbo.max_plate_nesting,
            vectorize_particles=elbo.vectorize_particles,
        )
        self.elbo = elbo

    def _get_trace(self, model: Any, guide: Any, args: Any, kwargs: Any) -> Any:
        return self.elbo._get_trace(model, guide, args, kwargs)

    def differentiable_loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.elbo.differentiable_loss(model, guide, *args, **kwargs)


def pyro_elbo_step(trainer: Trainer) -> Step:
    """``engine_step`` with the loss from Pyro's ``ELBO.differentiable_loss`` instead of vprob's: the same
    model, optimizer and schedule (and compiled encoder, shared with the other rows) given another
    objective."""
    model = trainer.model
    if not get_method(trainer.config.method).capabilities.variational:
        raise ValueError(f"{trainer.config.method} has no ELBO")
    objective = model.objective(PyroELBO(model.elbo()))
    step = TrainStep(model, objective, trainer.optimizer, trainer.scheduler, trainer.amp)
    return engine_step(trainer, step)


def plain_step(trainer: Trainer, variational: bool, augment: bool = False) -> Step:
    """The same maths as a plain PyTorch loss, with the model and optimizer of ``trainer``: on a fixed
    pre-augmented batch (the yardstick), or on freshly augmented views (``augment=True``)."""
    model, optimizer, device = trainer.model, trainer.optimizer, trainer.device
    images, batch = trainer.train_set.images, trainer.config.batch_size
    fixed = trainer.views(images[:batch]).flatten(0, 1)

    def step() -> None:
        with value_checks(False), pyro.validation_enabled(False):
            plain_update(x=fixed)

    def plain_update(x: torch.Tensor) -> None:
        if augment:
            index = torch.randint(len(images), (batch,), device=device, generator=trainer.generator)
            x = trainer.views(images[index]).flatten(0, 1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=trainer.amp):
            if variational:
                loc, scale = model.posterior(x)
                posterior = ProjectedNormal(loc, scale)
                z = posterior.rsample().view(2, batch, -1)
                kl = gaussian_kl_bound(posterior).mean() / model.dim
                loss = info_nce(z, tau=model.tau) + model.beta * kl
            else:
                z = F.normalize(model.head(model.encoder(x)).float(), dim=-1).view(2, batch, -1)
                loss = info_nce(z, tau=model.tau)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


# ------------------------------------------------------------------------------------------------------
# The rows


@dataclass(frozen=True)
class Row:
    """One table row: the step ``make_step`` builds on the trainer of (method, kl, compiled)."""

    name: str
    method: str
    make_step: Callable[[Trainer], Step]
    kl: str = "bound"
    compiled: bool = False


_plain = partial(plain_step, variational=False)
_vmaths = partial(plain_step, variational=True)
_vmaths_augmented = partial(plain_step, variational=True, augment=True)

ROWS: list[Row] = [
    Row("plain (no augmentation)", "simclr", _plain),
    Row("plain vsimclr maths (no augmentation, no Pyro)", "vsimclr", _vmaths),
    Row("simclr full step", "simclr", engine_step),
    Row("vsimclr maths as a plain loss, full step", "vsimclr", _vmaths_augmented),
    Row("vsimclr full step (kl=bound)", "vsimclr", engine_step),
    Row("vsimclr full step with pyro's ELBO (kl=bound)", "vsimclr", pyro_elbo_step),
    Row("vsimclr full step (kl=exact)", "vsimclr", engine_step, kl="exact"),
    Row("plain compiled (no augmentation)", "simclr", _plain, compiled=True),
    Row("plain vsimclr maths compiled", "vsimclr", _vmaths, compiled=True),
    Row("simclr full step compiled", "simclr", engine_step, compiled=True),
    Row("vsimclr maths as a plain loss, full step compiled", "vsimclr", _vmaths_augmented, compiled=True),
    Row("vsimclr full step compiled (kl=bound)", "vsimclr", engine_step, compiled=True),
    Row("vsimclr full step compiled with pyro's ELBO (kl=bound)", "vsimclr", pyro_elbo_step, compiled=True),
]

# (what, faster row, slower row, goal): printed under the table when both rows ran.
GOALS: list[tuple[str, str, str, str]] = [
    (
        "VSimCLR full step vs the plain compiled step",
        "plain compiled (no augmentation)",
        "vsimclr full step compiled (kl=bound)",
        ">= 85% of plain compiled",
    ),
    (
        "variational objective vs the same maths as a plain loss",
        "vsimclr maths as a plain loss, full step compiled",
        "vsimclr full step compiled (kl=bound)",
        "<= 5% more time",
    ),
    (
        "variational objective vs plain loss, not compiled",
        "vsimclr maths as a plain loss, full step",
        "vsimclr full step (kl=bound)",
        "<= 5% more time",
    ),
    (
        "Pyro's ELBO vs vprob's (sync-free)",
        "vsimclr full step (kl=bound)",
        "vsimclr full step with pyro's ELBO (kl=bound)",
        "",
    ),
    (
        "Pyro's ELBO vs vprob's (sync-free), compiled",
        "vsimclr full step compiled (kl=bound)",
        "vsimclr full step compiled with pyro's ELBO (kl=bound)",
        "",
    ),
]


def select_rows(
    rows: Sequence[Row], patterns: Sequence[str] | None, quick: bool, compiled_only: bool
) -> list[Row]:
    """The rows whose name contains one of ``patterns`` (all if None), less the compiled ones (``quick``)
    or only them (``compiled_only``)."""
    return [
        row
        for row in rows
        if (patterns is None or any(pattern in row.name for pattern in patterns))
        and not (quick and row.compiled)
        and not (compiled_only and not row.compiled)
    ]


class Trainers:
    """One trainer per (method, kl, compiled), built when a row first needs it and shared by the rows."""

    def __init__(self, args: argparse.Namespace, run_root: str) -> None:
        self.args, self.run_root = args, run_root
        self._made: dict[tuple[str, str, bool], Trainer] = {}

    def get(self, method: str, kl: str = "bound", compiled: bool = False) -> Trainer:
        key = (method, kl, compiled)
        if key not in self._made:
            args = self.args
            kl_option = {"kl": kl} if "kl" in get_method(method).option_names() else {}
            config = make_config(
                method=method,
                data=args.data,
                data_dir=args.data_dir,
                device=args.device,
                batch_size=args.batch_size,
                compile=compiled,
                **kl_option,
                run_dir=tempfile.mkdtemp(prefix=f"{method}-", dir=self.run_root),
            )
            self._made[key] = Trainer(config, progress=False)
        return self._made[key]


# ------------------------------------------------------------------------------------------------------
# Measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_window(step: Step, steps: int, device: torch.device) -> float:
    """Seconds per step over ``steps`` steps, the device's work included."""
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


@dataclass
class WarmUp:
    steps: int
    seconds: float
    settled: bool | None  # None: not checked (--warmup-windows 0)
    last_windows: tuple[float, float]

    def describe(self) -> str:
        a, b = (1e3 * seconds for seconds in self.last_windows)
        state = {
            True: "settled",
            False: f"NOT settled within {SETTLE_TOLERANCE:.0%}",
            None: "settling not checked",
        }[self.settled]
        return (
            f"warm-up: {self.steps} steps in {self.seconds:.1f} s, {state} "
            f"(last windows {a:.2f} / {b:.2f} ms/step)"
        )


def warm_up(
    step: Step, device: torch.device, min_steps: int, min_seconds: float, window: int, max_windows: int
) -> WarmUp:
    """At least ``min_steps`` steps and ``min_seconds`` seconds, in windows of ``window`` steps; then more
    windows (at most ``max_windows``) until two consecutive ones agree within 5% per step, the last window of
    the minimum counting as the first of them."""
    synchronize(device)
    start, done, previous = time.perf_counter(), 0, float("inf")
    while done < min_steps or time.perf_counter() - start < min_seconds:
        previous = run_window(step, window, device)
        done += window
    settled, last = (False if max_windows else None), (previous, previous)
    for _ in range(max_windows):
        current = run_window(step, window, device)
        done += window
        last = (previous, current)
        if abs(current - previous) <= SETTLE_TOLERANCE * min(current, previous):
            settled = True
            break
        previous = current
    return WarmUp(done, time.perf_counter() - start, settled, last)


@dataclass
class Timing:
    seconds_per_step: float
    windows: list[float]

    def describe(self, batch: int) -> str:
        low, high = min(self.windows), max(self.windows)
        median = self.seconds_per_step
        return (
            f"timed: {batch / median:,.0f} images/s, {1e3 * median:.2f} ms/step (median of "
            f"{len(self.windows)} windows; spread {100 * (low / median - 1):+.1f}% / "
            f"{100 * (high / median - 1):+.1f}%)"
        )


def timed(step: Step, device: torch.device, steps: int, repeats: int) -> Timing:
    """Median seconds per step over ``repeats`` windows of ``steps`` steps."""
    windows = [run_window(step, steps, device) for _ in range(repeats)]
    return Timing(statistics.median(windows), windows)


def profiled(step: Step, device: torch.device, steps: int) -> tuple[profile, float]:
    """``torch.profiler`` over ``steps`` steps, each under the ``vprob::step`` label (CPU activity, and CUDA's
    on CUDA); with the wall seconds per step (device work included)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    synchronize(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            with record_function(STEP_LABEL):
                step()
        synchronize(device)
        wall = (time.perf_counter() - start) / steps
    return prof, wall


def host_events_in_steps(prof: profile) -> tuple[list[Any], list[Any]]:
    """The ``vprob::step`` ranges and the host-side events that start inside one (any thread: on CUDA the
    backward pass runs on autograd's device thread)."""
    events = [event for event in prof.events() if event.device_type == DeviceType.CPU]
    spans = [event for event in events if event.name == STEP_LABEL]
    inside = [
        event
        for event in events
        if event.name != STEP_LABEL
        and any(span.time_range.start <= event.time_range.start <= span.time_range.end for span in spans)
    ]
    return spans, inside


def counters_on_host(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` reads step counters that live on the host: torch.optim's Adam family keeps
    ``state["step"]`` as a CPU tensor unless ``capturable`` or ``fused``, and ``.item()``s it every step."""
    if not type(optimizer).__module__.startswith("torch.optim"):
        return False
    return not any(group.get("capturable") or group.get("fused") for group in optimizer.param_groups)


def in_optimizer_step(event: Any) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer.step#"):
            return True
        parent = parent.cpu_parent
    return False


@dataclass
class SyncCount:
    """Host-device synchronizations in ``steps`` profiled steps."""

    steps: int
    scalar_reads: int  # aten::_local_scalar_dense
    counter_reads: int  # of those, torch.optim's host-side step counters
    blocking_calls: int | None  # CUDA runtime calls that block; None where no CUDA runtime activity was seen

    @property
    def per_step(self) -> float:
        if self.blocking_calls is not None:
            return self.blocking_calls / self.steps
        return (self.scalar_reads - self.counter_reads) / self.steps

    def describe(self) -> str:
        text = f"host syncs/step: {self.per_step:g} ({SCALAR_READ}: {self.scalar_reads / self.steps:g}"
        if self.counter_reads:
            text += f", of which {self.counter_reads / self.steps:g} read the optimizer's host-side counters"
        if self.blocking_calls is not None:
            text += f"; blocking CUDA runtime calls: {self.blocking_calls / self.steps:g}"
        return text + ")"


def count_host_syncs(step: Step, trainer: Trainer, steps: int = 1) -> SyncCount:
    """The host-device synchronizations of ``steps`` steps (see the module docstring for what counts)."""
    prof, _ = profiled(step, trainer.device, steps)
    _, inside = host_events_in_steps(prof)
    reads = [event for event in inside if event.name == SCALAR_READ]
    counters = sum(in_optimizer_step(event) for event in reads) if counters_on_host(trainer.optimizer) else 0
    blocking = None
    if any(event.name.startswith("cuda") for event in inside):
        blocking = sum(event.name in BLOCKING_CUDA_CALLS for event in inside)
    return SyncCount(steps, len(reads), counters, blocking)


def print_profile(name: str, step: Step, device: torch.device, steps: int, out_dir: Path) -> Path:
    """Profile ``steps`` steps of one row: print the top-15 table and host vs device time per step, write the
    Chrome trace; returns its path."""
    prof, wall = profiled(step, device, steps)
    cuda = device.type == "cuda"
    print(f"\n===== profile: {name} ({steps} steps) =====", flush=True)
    print(
        prof.key_averages().table(
            sort_by="self_device_time_total" if cuda else "self_cpu_time_total", row_limit=15
        ),
        flush=True,
    )
    spans, _ = host_events_in_steps(prof)
    host = statistics.mean(span.time_range.elapsed_us() for span in spans) / 1e3 if spans else float("nan")
    line = f"host (CPU wall) per step {host:.2f} ms, wall per step {1e3 * wall:.2f} ms"
    if cuda:
        # Kernels, copies and memsets on the device, as the table's "Self CUDA time total" sums them: the
        # record_function ranges also appear on the device as user annotations and would count twice.
        busy = (
            sum(
                event.self_device_time_total
                for event in prof.events()
                if event.device_type == DeviceType.CUDA and not getattr(event, "is_user_annotation", False)
            )
            / 1e3
            / steps
        )
        if busy > 0:
            idle = max(0.0, 1 - busy / (1e3 * wall))
            line += f", device busy per step {busy:.2f} ms (idle {100 * idle:.0f}% of wall)"
        else:
            line += ", device time: n/a (no CUDA activity recorded)"
    print(line + " (under the profiler)", flush=True)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    trace = out_dir / f"{slug}.json"
    prof.export_chrome_trace(str(trace))
    print(f"chrome trace: {trace}", flush=True)
    print(f"===== end of profile: {name} =====\n", flush=True)
    return trace


@dataclass
class Result:
    name: str
    images_per_s: float
    warm_up: WarmUp
    timing: Timing
    syncs: SyncCount


# ------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="cifar10", choices=("cifar10", "digits"))
    parser.add_argument("--data-dir", default="../shared/data/cifar10")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20, help="steps per timed (and warm-up) window")
    parser.add_argument("--repeats", type=int, default=5, help="timed windows per row (the median is kept)")
    parser.add_argument("--warmup", type=int, default=30, help="minimum warm-up steps per row")
    parser.add_argument(
        "--warmup-s",
        type=float,
        default=None,
        help="minimum warm-up seconds per row (default 15 on CUDA, 0 on CPU)",
    )
    parser.add_argument(
        "--warmup-windows",
        type=int,
        default=10,
        help="at most this many more warm-up windows while the time per step still moves",
    )
    parser.add_argument(
        "--rows", nargs="+", metavar="SUBSTRING", help="only the rows whose name contains one of these"
    )
    parser.add_argument("--list-rows", action="store_true", help="print the row names and exit")
    parser.add_argument("--quick", action="store_true", help="skip the compiled rows")
    parser.add_argument("--compiled-only", action="store_true", help="only the compiled rows")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after timing, torch.profiler per row: table, host vs device time, Chrome trace",
    )
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument(
        "--profile-dir", default=None, help="where the Chrome traces go (default: a temp folder)"
    )
    args = parser.parse_args(argv)
    if min(args.steps, args.repeats, args.profile_steps) < 1 or min(args.warmup, args.warmup_windows) < 0:
        parser.error("--steps, --repeats and --profile-steps must be >= 1, --warmup(-windows) >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> list[Result]:
    """Measure the selected rows, print the table; returns the rows' results."""
    args = parse_args(argv)
    if args.list_rows:
        print("\n".join(f"{row.name}{'  [compiled]' if row.compiled else ''}" for row in ROWS))
        return []
    rows = select_rows(ROWS, args.rows, args.quick, args.compiled_only)
    if not rows:
        sys.exit("no row matches --rows/--quick/--compiled-only; --list-rows prints the names")
    profile_dir = None
    if args.profile:
        profile_dir = Path(args.profile_dir or tempfile.mkdtemp(prefix="vprob-profile-"))
        profile_dir.mkdir(parents=True, exist_ok=True)
        print(f"profile traces go to {profile_dir}", flush=True)

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="vprob-bench-") as run_root:
        trainers = Trainers(args, run_root)
        device_name = None
        for number, row in enumerate(rows, 1):
            trainer = trainers.get(row.method, row.kl, row.compiled)
            device = trainer.device
            if device_name is None:
                device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
                print(
                    f"device: {device_name}, torch {torch.__version__}, pyro {pyro.__version__}, batch "
                    f"{args.batch_size} images (2 views each), data {args.data}, amp={trainer.amp}, "
                    f"channels_last={trainer.channels_last}",
                    flush=True,
                )
            warmup_s = args.warmup_s
            if warmup_s is None:
                warmup_s = 15.0 if device.type == "cuda" else 0.0
            print(f"[{number}/{len(rows)}] {row.name}", flush=True)
            step = row.make_step(trainer)
            warm = warm_up(step, device, args.warmup, warmup_s, args.steps, args.warmup_windows)
            print(f"  {warm.describe()}", flush=True)
            if warm.settled is False:
                print(
                    f"  warning: the time per step still moved by more than {SETTLE_TOLERANCE:.0%} after "
                    f"{args.warmup_windows} extra windows; treat this row's figure with care",
                    flush=True,
                )
            timing = timed(step, device, args.steps, args.repeats)
            print(f"  {timing.describe(args.batch_size)}", flush=True)
            syncs = count_host_syncs(step, trainer)
            print(f"  {syncs.describe()}", flush=True)
            if profile_dir is not None:
                print_profile(row.name, step, device, args.profile_steps, profile_dir)
            results.append(Result(row.name, args.batch_size / timing.seconds_per_step, warm, timing, syncs))

    print(f"\n| step ({device_name}, batch {args.batch_size}) | images/s | host syncs/step |")
    print("| --- | ---: | ---: |")
    for result in results:
        print(f"| {result.name} | {result.images_per_s:,.0f} | {result.syncs.per_step:g} |")
    rates = {result.name: result.images_per_s for result in results}
    lines = []
    for what, fast, slow, goal in GOALS:
        if fast in rates and slow in rates:
            ratio = rates[slow] / rates[fast]
            lines.append(
                f"- {what}: {100 * ratio:.0f}% of the rate, {100 * (1 / ratio - 1):+.0f}% time"
                + (f" (goal: {goal})" if goal else "")
            )
    if lines:
        print("\n" + "\n".join(lines))
    if profile_dir is not None:
        print(f"\nChrome traces: {profile_dir}")
    return results


if __name__ == "__main__":
    main()
