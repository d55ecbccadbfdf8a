"""Every method side by side at one budget: one (method, seed) per invocation, resumable, JSON results.

    python benchmarks/reproduce_cifar10.py --method simclr --seed 0 --data-dir ../shared/data/cifar10
    python benchmarks/reproduce_cifar10.py --method vsimclr-exact --seed 1 --data-dir ...
    python benchmarks/reproduce_cifar10.py --table                       # markdown table of what is done

Each invocation trains (or resumes, if its run folder holds a checkpoint) ResNet-18 on CIFAR-10 at batch 512
for ``--epochs`` (100), then records kNN (k = 10 majority, k = 200 weighted) and linear top-1, the effective
rank of backbone features and point embeddings, the MI lower bound, the uncertainty-severity Spearman for the
variational methods (all three from ``vprob diagnose``), images/s (median over the run's log) and wall time,
into ``RESULTS/<method>-seed<seed>.json``. ``--data digits --no-compile --device cpu`` runs the same
protocol on the bundled digits (a smoke test on CPU). One-class AUROC is the separate command
``vprob anomaly --all-classes``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# The repository root first: benchmarks/distributions.py would shadow the `distributions` package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vprob.checkpoint import CHECKPOINT_NAME  # noqa: E402
from vprob.diagnose import diagnose_run  # noqa: E402
from vprob.train import TrainConfig, train  # noqa: E402

# Each entry: the engine options that define the method.
RECIPES: dict[str, dict[str, Any]] = {
    "simclr": dict(method="simclr"),
    "vsimclr-bound": dict(method="vsimclr", kl="bound"),
    "vsimclr-exact": dict(method="vsimclr", kl="exact"),
    "supcon": dict(method="supcon"),
    "vsupcon": dict(method="vsupcon"),
    "projnce-centroid": dict(method="projnce", projection="centroid"),
    "projnce-median": dict(method="projnce", projection="median"),
    "projnce-orthogonal": dict(method="projnce", projection="orthogonal"),
    "projnce-mlp": dict(method="projnce", projection="mlp"),
    "cct-2views": dict(method="cct", num_views=2),
    "cct-5views": dict(method="cct", num_views=5),
    "vje": dict(method="vje"),
}


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """Train or resume one (method, seed), diagnose it, and write its JSON record."""
    name = f"{args.method}-seed{args.seed}"
    run_dir = Path(args.runs) / name
    config = TrainConfig(**RECIPES[args.method], data=args.data, data_dir=args.data_dir, epochs=args.epochs,
                         batch_size=args.batch_size, seed=args.seed, compile=args.compile, device=args.device,
                         run_dir=str(run_dir))
    start = time.perf_counter()
    results = train(config, resume=(run_dir / CHECKPOINT_NAME).is_file(), progress=False)
    wall = time.perf_counter() - start
    report = diagnose_run(run_dir, device=args.device, data_dir=args.data_dir, max_images=args.max_images)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rates = [json.loads(line)["images_per_s"] for line in lines]
    record = {
        "method": args.method, "seed": args.seed, "data": args.data, "epochs": args.epochs,
        **{k: v for k, v in results.items() if k.startswith(("knn", "linear"))},
        "effective_rank_backbone": report["collapse"]["backbone"]["effective_rank"],
        "effective_rank_embedding": report["collapse"]["embedding"]["effective_rank"],
        "mi_lower_bound_nats": report["mutual_information"]["embedding"]["mi_lower_bound_nats"],
        "uncertainty_spearman": _overall_spearman(report),
        "images_per_s_median": statistics.median(rates) if rates else None,
        "wall_s_this_invocation": wall,
        "device": report.get("device", args.device),
    }
    out = Path(args.results) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return record


def _overall_spearman(report: dict[str, Any]) -> float | None:
    """Spearman of log det Sigma against severity, pooled over corruptions (variational methods only)."""
    overall = report.get("uncertainty", {}).get("spearman_overall")
    value = overall.get("log_det") if isinstance(overall, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def table(results_dir: Path) -> str:
    """Markdown table of every record in ``results_dir``: mean ± std over seeds per method."""
    records: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(results_dir.glob("*.json")):
        record = json.loads(path.read_text())
        records.setdefault(record["method"], []).append(record)
    columns = ["knn_top1_k10_majority", "knn_top1_k200_weighted", "linear_top1", "effective_rank_embedding",
               "mi_lower_bound_nats", "uncertainty_spearman", "images_per_s_median"]
    lines = ["| method | seeds | " + " | ".join(columns) + " |", "| --- | ---: |" + " ---: |" * len(columns)]
    for method, group in records.items():
        cells = []
        for column in columns:
            values = [r[column] for r in group if isinstance(r.get(column), (int, float))]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:.4g}")
            else:
                cells.append(f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}")
        lines.append(f"| {method} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", choices=sorted(RECIPES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", choices=("cifar10", "digits"), default="cifar10")
    parser.add_argument("--data-dir", default="../shared/data/cifar10")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: the data set's (512 on CIFAR-10)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--max-images", type=int, default=5000, help="images for spectra and the MI bound")
    parser.add_argument("--runs", default="runs/reproduce", help="folder of the run folders")
    parser.add_argument("--results", default="benchmarks/results/reproduce",
                        help="folder of the JSON records")
    parser.add_argument("--table", action="store_true", help="print the table of the records and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(table(Path(args.results)))
        return
    if args.method is None:
        parser.error("--method is required (or --table)")
    if args.data == "digits":
        args.data_dir = None
    run_one(args)


if __name__ == "__main__":
    main()
