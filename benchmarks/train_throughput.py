"""Images/s of one full training step, per method, beside the plain-PyTorch step measured in the same run.

    python benchmarks/train_throughput.py --data-dir ../shared/data/cifar10            # CUDA when present
    python benchmarks/train_throughput.py --data digits --device cpu --steps 5 --quick # small CPU run

Rows:
- ``plain``: the yardstick. ResNet-18 + MLP head, InfoNCE on a fixed, already normalized batch of two views
  (no augmentation), the optimizer step; bf16 autocast and channels_last on CUDA; ``plain compiled`` adds
  ``torch.compile`` of the encoder.
- ``plain vsimclr maths``: the VSimCLR objective written as a plain loss (projected-normal rsample,
  InfoNCE on the samples, Gaussian KL bound / d), no Pyro, no augmentation: the cost of the maths alone.
- ``vsimclr maths as a plain loss, full step``: the same maths with the engine's augmentation, no Pyro;
  the Pyro overhead is the difference between this row and ``vsimclr full step (kl=bound)``.
- ``simclr``, ``vsimclr (kl=bound)``, ``vsimclr (kl=exact)``: the engine's full step (on-device
  augmentation of both views + forward + loss + backward + optimizer), exactly what ``vprob train`` runs;
  VSimCLR goes through Pyro (``ELBO.differentiable_loss`` of the model/guide pair).
Each row: warm-up steps, then the median of ``--repeats`` timed windows of ``--steps`` steps.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F

# The repository root first: a script's own folder comes first on sys.path, and benchmarks/distributions.py
# would shadow the `distributions` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distributions import ProjectedNormal, gaussian_kl_bound  # noqa: E402
from vprob.losses import info_nce, value_checks  # noqa: E402
from vprob.train import TrainConfig, Trainer  # noqa: E402


def timed(step: Callable[[], None], steps: int, repeats: int, warmup: int, device: torch.device) -> float:
    """Median seconds per step over ``repeats`` windows of ``steps`` steps."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    sync()
    windows = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        windows.append((time.perf_counter() - start) / steps)
    return statistics.median(windows)


def make_trainer(args: argparse.Namespace, method: str, kl: str = "bound", compile: bool = False) -> Trainer:
    config = TrainConfig(method=method, data=args.data, data_dir=args.data_dir, device=args.device,
                         batch_size=args.batch_size, kl=kl, compile=compile,
                         run_dir=tempfile.mkdtemp(prefix=f"vprob-bench-{method}-"))
    return Trainer(config, progress=False)


def engine_step(trainer: Trainer) -> Callable[[], None]:
    images, labels = trainer.train_set.images, trainer.train_set.labels
    batch = trainer.config.batch_size

    def step() -> None:
        index = torch.randint(len(images), (batch,), device=trainer.device, generator=trainer.generator)
        trainer.training_step(images[index], labels[index])

    return step


def plain_step(trainer: Trainer, variational: bool, augment: bool = False) -> Callable[[], None]:
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="cifar10", choices=("cifar10", "digits"))
    parser.add_argument("--data-dir", default="../shared/data/cifar10")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="skip the compiled rows")
    parser.add_argument("--compiled-only", action="store_true", help="only the compiled rows")
    args = parser.parse_args()

    rows: list[tuple[str, float]] = []

    def measure(name: str, step: Callable[[], None], trainer: Trainer) -> None:
        seconds = timed(step, args.steps, args.repeats, args.warmup, trainer.device)
        rows.append((name, trainer.config.batch_size / seconds))
        print(f"  {name}: {trainer.config.batch_size / seconds:,.0f} images/s", flush=True)

    simclr = make_trainer(args, "simclr")
    device = simclr.device
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}, batch {args.batch_size} images (2 views each), "
          f"data {args.data}, amp={simclr.amp}, channels_last={simclr.channels_last}", flush=True)
    if not args.compiled_only:
        measure("plain (no augmentation)", plain_step(simclr, variational=False), simclr)
        vsimclr = make_trainer(args, "vsimclr", kl="bound")
        measure("plain vsimclr maths (no augmentation, no Pyro)", plain_step(vsimclr, variational=True),
                vsimclr)
        measure("simclr full step", engine_step(simclr), simclr)
        measure("vsimclr maths as a plain loss, full step", plain_step(vsimclr, True, augment=True), vsimclr)
        measure("vsimclr full step (kl=bound)", engine_step(vsimclr), vsimclr)
        exact = make_trainer(args, "vsimclr", kl="exact")
        measure("vsimclr full step (kl=exact)", engine_step(exact), exact)
    if not args.quick:
        compiled = make_trainer(args, "simclr", compile=True)
        measure("plain compiled (no augmentation)", plain_step(compiled, variational=False), compiled)
        vcompiled = make_trainer(args, "vsimclr", kl="bound", compile=True)
        measure("plain vsimclr maths compiled", plain_step(vcompiled, variational=True), vcompiled)
        measure("simclr full step compiled", engine_step(compiled), compiled)
        measure("vsimclr maths as a plain loss, full step compiled",
                plain_step(vcompiled, True, augment=True), vcompiled)
        measure("vsimclr full step compiled (kl=bound)", engine_step(vcompiled), vcompiled)

    print(f"\n| step ({name}, batch {args.batch_size}) | images/s |\n| --- | ---: |")
    for row, rate in rows:
        print(f"| {row} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
