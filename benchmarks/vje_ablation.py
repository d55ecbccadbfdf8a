"""VJE's readings side by side on digits: the directional t's tangent scale and the anomaly score's z.

    python benchmarks/vje_ablation.py --seeds 0 1 2 --out benchmarks/results/vje-ablation-digits.json

For each seed and each ``directional_scale`` ("angular": nu / |mu|^2; "posterior_variance": nu itself) it
trains VJE on the bundled digits with the data set's defaults (kNN and linear probe on the test split) and
runs the one-class protocol on every digit with the one-class defaults, scoring the same trained model with
the posterior mean plugged in (``score_samples=0``) and with the likelihood averaged over ``--samples``
posterior draws. It prints a table (mean +- std over seeds) and writes every number to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from vprob.anomaly import anomaly_scores, one_class_aurocs
from vprob.config import make_config, with_anomaly_defaults
from vprob.jsonio import write_json_atomic
from vprob.train import Trainer

SCALES = ("angular", "posterior_variance")


def representation(scale: str, seed: int, root: Path) -> dict[str, float]:
    config = make_config(
        method="vje",
        data="digits",
        device="cpu",
        seed=seed,
        directional_scale=scale,
        run_dir=str(root / f"repr-{scale}-{seed}"),
    )
    results = Trainer(config, progress=False).fit()
    return {key: results[key] for key in ("knn_top1_k10_majority", "knn_top1_k200_weighted", "linear_top1")}


def one_class(scale: str, seed: int, root: Path, samples: int, classes: range) -> dict[str, list[float]]:
    """AUROC per class of the likelihood score, plug-in and Monte Carlo, and of log det and kNN."""
    aurocs: dict[str, list[float]] = {}
    for k in classes:
        config = with_anomaly_defaults(
            make_config(
                method="vje",
                data="digits",
                device="cpu",
                seed=seed,
                directional_scale=scale,
                normal_class=k,
                run_dir=str(root / f"oneclass-{scale}-{seed}-{k}"),
            )
        )
        trainer = Trainer(config, progress=False)
        trainer.fit()
        model, test = trainer.model, trainer.test_set
        for name, draws in (("plug_in", 0), (f"mc{samples}", samples)):
            model.score_samples = draws
            generator = torch.Generator().manual_seed(seed + 1)  # the same views for both scorings
            scores = anomaly_scores(
                model, trainer.train_set.images, test.images, trainer.augment, generator=generator
            )
            result = one_class_aurocs(scores, test.labels, k)
            aurocs.setdefault(f"likelihood_{name}", []).append(result["likelihood"])
            if draws == 0:
                aurocs.setdefault("log_det", []).append(result["log_det"])
                aurocs.setdefault("knn", []).append(result["knn"])
    return aurocs


def summary(values: list[float]) -> str:
    mean = statistics.mean(values)
    if len(values) < 2:
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * statistics.stdev(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=8, help="posterior draws of the Monte Carlo score")
    parser.add_argument("--classes", type=int, default=10, help="one-class runs for digits 0..N-1")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/vje-ablation-digits.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    records: dict[str, Any] = {
        "command": "python benchmarks/vje_ablation.py "
        + " ".join(
            f"--{k} {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in vars(args).items()
        ),
        "runs": {},
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for scale in SCALES:
            for seed in args.seeds:
                run = representation(scale, seed, Path(tmp))
                aurocs = one_class(scale, seed, Path(tmp), args.samples, range(args.classes))
                run.update({f"mean_auroc_{name}": statistics.mean(v) for name, v in aurocs.items()})
                run["auroc_per_class"] = aurocs
                records["runs"][f"{scale}-seed{seed}"] = run
                numbers = {k: round(v, 4) for k, v in run.items() if isinstance(v, float)}
                print(scale, seed, numbers, flush=True)
    records["wall_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, records)
    keys = [k for k, v in next(iter(records["runs"].values())).items() if isinstance(v, float)]
    print("| directional_scale | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for scale in SCALES:
        runs = [records["runs"][f"{scale}-seed{s}"] for s in args.seeds]
        print(f"| {scale} | " + " | ".join(summary([r[k] for r in runs]) for k in keys) + " |")


if __name__ == "__main__":
    main()
