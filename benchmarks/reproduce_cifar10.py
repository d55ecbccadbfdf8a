"""Every method side by side at one budget: one (method, seed) per invocation, resumable, JSON results.

    python benchmarks/reproduce_cifar10.py --method simclr --seed 0 --data-dir ../shared/data/cifar10
    python benchmarks/reproduce_cifar10.py --method vsimclr-exact --seed 1 --time-budget 540 ...
    python benchmarks/reproduce_cifar10.py --method vje --one-class --time-budget 540 ...
    python benchmarks/reproduce_cifar10.py --table                       # markdown table of what is done

Each invocation trains (or resumes, if its run folder holds a checkpoint) ResNet-18 on CIFAR-10 at batch 512
for ``--epochs`` (100), then records kNN (k = 10 majority, k = 200 weighted) and linear top-1, the effective
rank of backbone features and point embeddings, the MI lower bound, the uncertainty-severity Spearman for the
variational methods (all three from ``vprob diagnose``, without its posterior-sampling section), images/s
(median over the run's log), the wall time summed over the invocations that made the run, and the device,
into ``RESULTS/<method>-seed<seed>.json``.

``--time-budget SECONDS`` makes an invocation fit a wall-clock limit (a batch job, a lent GPU's 10-minute
calls): training stops at the last epoch checkpoint that leaves ``--reserve`` seconds for the evaluation
and the diagnostics, and the script exits with status 75 ("run the same command again"); the next
invocation resumes exactly where it stopped (same learning-rate schedule, same random streams).

``--one-class`` runs the one-class anomaly protocol instead (:mod:`vprob.anomaly`: one model per normal
class, trained on its 5,000 images, AUROC of every score on the whole test set; epochs and batch size from
the data set's one-class defaults (``vprob.data.registry``) unless given) for the methods with an anomaly
score (simclr,
vsimclr-bound, vje, vje-gaussian), resumable class by class, into
``RESULTS/<method>-oneclass-seed<seed>.json``; ``--table`` puts its mean AUROCs beside the method's row.

A record that exists is not redone (``--force`` evaluates and diagnoses again).

``--data digits --no-compile --device cpu`` runs the same protocol on the bundled digits (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from vprob.anomaly import anomaly_methods, run_anomaly
from vprob.checkpoint import CHECKPOINT_NAME
from vprob.cli import EXIT_PAUSED
from vprob.config import TrainConfig, make_config
from vprob.devices import resolve_device
from vprob.diagnose import diagnose_run
from vprob.jsonio import write_json_atomic
from vprob.train import TrainingPaused, train

# Each entry: the engine options that define the method (everything else: the data set's defaults).
RECIPES: dict[str, dict[str, Any]] = {
    "simclr": dict(method="simclr"),
    "vsimclr-bound": dict(method="vsimclr", kl="bound"),
    "vsimclr-exact": dict(method="vsimclr", kl="exact"),
    # The KL weight in the paper's units: beta relative to the contrastive term at tau = 0.07.
    "vsimclr-paper-kl": dict(method="vsimclr", kl="bound", kl_reference_tau=0.07),
    # The other posterior families (exact analytic KL to the uniform prior).
    "vsimclr-vmf": dict(method="vsimclr", posterior="vmf"),
    "vsimclr-power-spherical": dict(method="vsimclr", posterior="power_spherical"),
    "supcon": dict(method="supcon"),
    "vsupcon": dict(method="vsupcon"),
    "projnce-centroid": dict(method="projnce", projection="centroid"),
    "projnce-median": dict(method="projnce", projection="median"),
    "projnce-orthogonal": dict(method="projnce", projection="orthogonal"),
    "projnce-mlp": dict(method="projnce", projection="mlp"),
    "cct-2views": dict(method="cct", num_views=2),
    "cct-5views": dict(method="cct", num_views=5),
    "vje": dict(method="vje"),
    # The Gaussian limit of VJE's polar Student-t (df -> infinity): the heavy-tail ablation.
    "vje-gaussian": dict(method="vje", df=1e6),
    # VJE's first reading: the posterior variance itself as the directional t's tangent scale.
    "vje-variance-scale": dict(method="vje", directional_scale="posterior_variance"),
}
ONE_CLASS_RECIPES = tuple(
    name
    for name, recipe in RECIPES.items()
    if recipe["method"] in anomaly_methods() and recipe.get("kl", "bound") == "bound"
)
WALL_NAME = "wall.json"  # seconds spent on the run, summed over invocations


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Train or resume one (method, seed), diagnose it, and write its JSON record."""
    run_dir, out = _paths(args, f"{args.method}-seed{args.seed}")
    if out.is_file() and not args.force:
        print(f"{out} exists: nothing to do (--force runs the evaluation and diagnostics again)")
        return json.loads(out.read_text())
    config = _config(args, run_dir, epochs=args.epochs or 100)
    start = time.perf_counter()
    try:
        results = train(
            config,
            resume=(run_dir / CHECKPOINT_NAME).is_file(),
            progress=False,
            stop_after_s=_training_budget(args),
        )
    finally:
        wall = _add_wall_time(run_dir, "train_and_evaluate_s", time.perf_counter() - start)
    start = time.perf_counter()
    report = diagnose_run(
        run_dir,
        device=args.device,
        data_dir=args.data_dir,
        max_images=args.max_images,
        posterior=args.posterior,
    )
    wall = _add_wall_time(run_dir, "diagnose_s", time.perf_counter() - start)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rates = [json.loads(line)["images_per_s"] for line in lines]
    saved = json.loads((run_dir / "config.json").read_text())
    record = {
        "method": args.method,
        "seed": args.seed,
        "data": args.data,
        "recipe": {
            **{
                key: saved[key]
                for key in ("method", "epochs", "batch_size", "optimizer", "lr", "weight_decay", "compile")
            },
            **saved["options"],
        },
        "steps": results["steps"],
        **{k: v for k, v in results.items() if k.startswith(("knn", "linear"))},
        "effective_rank_backbone": report["collapse"]["backbone"]["effective_rank"],
        "effective_rank_embedding": report["collapse"]["embedding"]["effective_rank"],
        "mi_lower_bound_nats": report["mutual_information"]["embedding"]["mi_lower_bound_nats"],
        "uncertainty_spearman": _overall_spearman(report),
        "uncertainty_spearman_per_image": _per_image_spearman(report),
        "images_per_s_median": statistics.median(rates) if rates else None,
        "wall_s": wall,
    }
    return _write_record(out, record, args)


def run_one_class(args: argparse.Namespace) -> dict[str, Any]:
    """The one-class protocol for one (method, seed), resumable class by class; writes its JSON record."""
    if args.method not in ONE_CLASS_RECIPES:
        raise SystemExit(f"--one-class supports {', '.join(ONE_CLASS_RECIPES)}, not {args.method}")
    run_dir, out = _paths(args, f"{args.method}-oneclass-seed{args.seed}")
    if out.is_file() and not args.force:
        print(f"{out} exists: nothing to do")
        return json.loads(out.read_text())
    config = _config(args, run_dir, epochs=args.epochs)  # None: the one-class defaults
    start = time.perf_counter()
    try:
        summary = run_anomaly(config, resume=True, progress=False, stop_after_s=_training_budget(args))
    finally:
        wall = _add_wall_time(run_dir, "train_and_score_s", time.perf_counter() - start)
    record = {
        "method": args.method,
        "seed": args.seed,
        "data": args.data,
        "protocol": "one-class",
        "epochs": summary["epochs"],
        "batch_size": summary["batch_size"],
        "mean_auroc": summary["mean_auroc"],
        "auroc_per_class": {entry["class_name"]: entry["auroc"] for entry in summary["classes"]},
        "wall_s": wall,
    }
    return _write_record(out, record, args)


def _paths(args: argparse.Namespace, name: str) -> tuple[Path, Path]:
    """The run folder and the JSON record of the run called ``name``."""
    return Path(args.runs) / name, Path(args.results) / f"{name}.json"


def _config(args: argparse.Namespace, run_dir: Path, epochs: int | None) -> TrainConfig:
    """The options of ``args.method``'s recipe with the command line's."""
    return make_config(
        **RECIPES[args.method],
        data=args.data,
        data_dir=args.data_dir,
        epochs=epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        compile=args.compile,
        device=args.device,
        max_steps=args.max_steps,
        run_dir=str(run_dir),
    )


def _training_budget(args: argparse.Namespace) -> float | None:
    """Seconds this invocation may train: the time budget less what evaluation and diagnostics need."""
    if args.time_budget is None:
        return None
    budget = args.time_budget - args.reserve - (time.perf_counter() - args.started)
    if budget <= 0:
        raise SystemExit(
            f"--time-budget {args.time_budget:g} leaves nothing to train after --reserve "
            f"{args.reserve:g} s and {time.perf_counter() - args.started:.0f} s of start-up"
        )
    return budget


def _add_wall_time(run_dir: Path, part: str, seconds: float) -> dict[str, float]:
    """Add ``seconds`` to ``part`` (a name ending in ``_s``) in the run's wall-time file; returns the
    totals so far."""
    path = run_dir / WALL_NAME
    wall = json.loads(path.read_text()) if path.is_file() else {}
    wall[part] = wall.get(part, 0.0) + seconds
    if run_dir.is_dir():
        write_json_atomic(path, wall)
    return wall


def _write_record(path: Path, record: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Write ``record`` with the device and the date, atomically: a record that exists is never redone, so
    a half-written one must never exist."""
    record = {**record, "device": device_name(args.device), "date": time.strftime("%Y-%m-%d")}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, record)
    print(json.dumps(record, indent=2))
    return record


def device_name(device: str) -> str:
    """The device in words: the GPU's name on CUDA ("NVIDIA H100 80GB HBM3"), else "CPU"."""
    torch_device = resolve_device(device)
    return torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else "CPU"


def _per_image_spearman(report: dict[str, Any]) -> float | None:
    """Each image's Spearman of log det against severity 0..5, averaged over images and over the corruption
    set (the diagnostics' headline; variational methods only)."""
    over_set = report.get("uncertainty", {}).get("per_image_spearman_mean_over_set")
    value = over_set.get("log_det", {}).get("mean") if isinstance(over_set, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def _overall_spearman(report: dict[str, Any]) -> float | None:
    """Spearman of log det Sigma against severity, pooled over corruptions (variational methods only)."""
    overall = report.get("uncertainty", {}).get("spearman_overall")
    value = overall.get("log_det") if isinstance(overall, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


# (record key, column header, scale, decimals): accuracies are printed in percent.
COLUMNS = (
    ("knn_top1_k10_majority", "kNN k=10 %", 100.0, 1),
    ("knn_top1_k200_weighted", "kNN k=200 %", 100.0, 1),
    ("linear_top1", "linear %", 100.0, 1),
    ("effective_rank_embedding", "eff. rank z", 1.0, 1),
    ("effective_rank_backbone", "eff. rank h", 1.0, 1),
    ("mi_lower_bound_nats", "MI bound (nats)", 1.0, 3),
    ("uncertainty_spearman_per_image", "Spearman(log det, severity) per image", 1.0, 2),
    ("uncertainty_spearman", "Spearman pooled means", 1.0, 2),
    ("one_class_likelihood", "one-class AUROC likelihood", 1.0, 3),
    ("one_class_log_det", "one-class AUROC log det", 1.0, 3),
    ("one_class_knn", "one-class AUROC kNN", 1.0, 3),
    ("images_per_s_median", "images/s", 1.0, 0),
    ("wall_min", "wall min", 1.0, 1),
)


def _cell(values: list[float], scale: float, decimals: int) -> str:
    """One value, or mean ± standard deviation over seeds."""
    values = [v * scale for v in values]
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:,.{decimals}f}"
    return f"{statistics.mean(values):,.{decimals}f} ± {statistics.stdev(values):,.{decimals}f}"


def table(results_dir: Path) -> str:
    """Markdown table of every record in ``results_dir``: mean ± std over seeds per method, with the
    one-class records' mean AUROCs in the method's row."""
    rows: dict[str, list[dict[str, Any]]] = {}
    one_class: dict[str, list[dict[str, Any]]] = {}
    devices: set[str] = set()
    for path in sorted(results_dir.glob("*.json")):
        record = json.loads(path.read_text())
        devices.add(record.get("device", "?"))
        if record.get("protocol") == "one-class":
            one_class.setdefault(record["method"], []).append(record)
        else:
            wall = record.get("wall_s", {})
            record["wall_min"] = sum(v for k, v in wall.items() if k.endswith("_s")) / 60 if wall else None
            rows.setdefault(record["method"], []).append(record)
    for method, records in one_class.items():
        row = rows.setdefault(method, [{"method": method}])[0]
        for score in ("likelihood", "log_det", "knn"):
            values = [r["mean_auroc"][score] for r in records if score in r["mean_auroc"]]
            if values:
                row[f"one_class_{score}"] = statistics.mean(values)
    order = [name for name in RECIPES if name in rows]
    lines = [
        f"Device: {', '.join(sorted(devices))}.",
        "",
        "| method | seeds | " + " | ".join(column[1] for column in COLUMNS) + " |",
        "| --- | ---: |" + " ---: |" * len(COLUMNS),
    ]
    for method in order:
        group = rows[method]
        seeds = sum(1 for r in group if "seed" in r)
        cells = [
            _cell([r[key] for r in group if isinstance(r.get(key), (int, float))], scale, decimals)
            for key, _, scale, decimals in COLUMNS
        ]
        lines.append(f"| {method} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", choices=list(RECIPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=("cifar10", "digits"), default="cifar10")
    parser.add_argument("--data-dir", default="../shared/data/cifar10")
    parser.add_argument(
        "--epochs", type=int, default=None, help="default: 100 (one-class: the data set's one-class defaults)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="default: the data set's (512 on CIFAR-10; one-class 256)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--max-steps", type=int, default=None, help="stop training early (smoke tests)")
    parser.add_argument("--max-images", type=int, default=5000, help="images for spectra and the MI bound")
    parser.add_argument(
        "--posterior",
        action="store_true",
        help="also run the diagnostics' posterior section (needs arviz and geomstats)",
    )
    parser.add_argument("--one-class", action="store_true", help="the one-class anomaly protocol instead")
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"wall-clock budget of this invocation; exit {EXIT_PAUSED} if the run is not "
        "finished within it (run the same command again to continue)",
    )
    parser.add_argument(
        "--reserve",
        type=float,
        default=90.0,
        metavar="SECONDS",
        help="part of --time-budget kept for evaluation and diagnostics",
    )
    parser.add_argument("--runs", default="runs/reproduce", help="folder of the run folders")
    parser.add_argument(
        "--results", default="benchmarks/results/reproduce", help="folder of the JSON records"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="evaluate and diagnose again even if the record exists (training resumes)",
    )
    parser.add_argument("--table", action="store_true", help="print the table of the records and exit")
    args = parser.parse_args(argv)
    args.started = time.perf_counter()
    if args.table:
        print(table(Path(args.results)))
        return 0
    if args.method is None:
        parser.error("--method is required (or --table)")
    if args.data == "digits":
        args.data_dir = None
    try:
        (run_one_class if args.one_class else run_one)(args)
    except TrainingPaused as exc:
        print(f"{args.method} seed {args.seed}: {exc}; run the same command again to continue", flush=True)
        return EXIT_PAUSED
    return 0


if __name__ == "__main__":
    sys.exit(main())
