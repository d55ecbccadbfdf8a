"""The reproduction's headline figures from diagnosed run folders: collapse spectra, uncertainty vs severity.

    python benchmarks/headline_figures.py runs/reproduce/* --out docs/figures/cifar10 --title-suffix CIFAR-10
    python benchmarks/headline_figures.py runs/digits-headline/* --out docs/figures/digits \\
        --title-suffix "digits, CPU"

Each RUN_DIR is a folder written by ``vprob train`` (or ``benchmarks/reproduce_cifar10.py``) and diagnosed by
``vprob diagnose RUN_DIR``: the script reads ``RUN_DIR/report/report.json`` (a report folder holding
``report.json`` is accepted too) and ``RUN_DIR/config.json`` (for the seed and the options that tell recipes
of one method apart: ``kl``, ``projection``, ``num_views``), and writes into ``--out``:

- ``collapse_spectra.png``: the singular values of the centred point embeddings (``--representation
  backbone``: the backbone features) divided by the largest, s_i / s_1, against the index i, log y-axis: one
  line per run; the runs of one recipe (several seeds) share a colour and one legend entry, "recipe
  (effective rank mean ± std over seeds)". Deterministic methods dashed, variational solid. s_i / s_1 starts
  every spectrum at 1, so how fast it falls is what is compared (a collapsed direction falls by decades);
  values below 1e-8 (numerically zero) are drawn at 1e-8.
- ``uncertainty_vs_severity.png``: for each run with an uncertainty section (variational methods), the mean
  score (``--score``, default ``log_det``: log det Sigma; a report without it uses its first score) against
  corruption severity 0..5 (0 = clean), one line per corruption, one panel per recipe, seeds averaged.
  By default the clean value is subtracted (every curve starts at 0; ``--absolute`` plots the raw mean).
  The legend gives each corruption's Spearman (mean score vs severity), the title the pooled Spearman over
  every (corruption, severity) pair, both as the reports compute them, averaged over seeds.
- ``headline.json``: every number plotted, per run and per recipe.

The PNGs are 130 dpi with a 128-colour palette (small enough to commit).

Runs given twice are read once; arguments that are not folders (a stray file matched by ``*``) are skipped
with a note; a quoted glob (``"runs/x/*"``) is expanded here.
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vprob.plots import pyplot

SPECTRUM_FLOOR = 1e-8
DPI = 130
SEVERITIES = tuple(range(6))  # 0 = clean, 1..5 as in CIFAR-10-C
VARIATIONAL_OF = {"vsimclr": "simclr", "vsupcon": "supcon"}  # colour order puts each next to its baseline
SCORE_LABELS = {"log_det": "log det Σ", "log_det_scale_free": "scale-free log det Σ"}


@dataclass
class Run:
    """One diagnosed run: its folder, report, recipe label (runs of one recipe differ in seed only)."""

    run_dir: Path
    report: dict[str, Any]
    label: str
    seed: int | None

    @property
    def method(self) -> str:
        return str(self.report["method"])

    @property
    def variational(self) -> bool:
        section = self.report.get("uncertainty")
        return isinstance(section, dict) and "skipped" not in section and bool(section.get("mean_score"))


def _recipe_label(method: str, config: dict[str, Any]) -> str:
    """The method, plus the option that tells its recipes apart (as in reproduce_cifar10.py's RECIPES)."""
    config = config.get("options", config)  # runs saved before the registries kept options at the top
    if method in VARIATIONAL_OF and "kl" in config:
        return f"{method}-{config['kl']}"
    if method == "projnce" and "projection" in config:
        return f"projnce-{config['projection']}"
    if method == "cct" and "num_views" in config:
        return f"cct-{config['num_views']}views"
    return method


def expand(paths: Sequence[str]) -> list[Path]:
    """Folders named by ``paths`` (globs expanded), in order, each once; non-folders skipped with a note."""
    out: list[Path] = []
    for arg in paths:
        matches = sorted(glob.glob(arg)) if glob.has_magic(arg) else [arg]
        if not matches:
            raise SystemExit(f"no run folder matches {arg!r}")
        for match in matches:
            path = Path(match)
            if not path.exists():
                raise SystemExit(f"{path}: no such run folder")
            if not path.is_dir():
                print(f"skipping {path}: not a folder", file=sys.stderr)
                continue
            if path.resolve() not in {p.resolve() for p in out}:
                out.append(path)
    if not out:
        raise SystemExit("no run folders given")
    return out


def load_report(run_dir: Path) -> Run:
    """Read a run's report (``report/report.json``, or ``report.json`` if given the report folder itself)."""
    candidates = [run_dir / "report" / "report.json", run_dir / "report.json"]
    report_path = next((p for p in candidates if p.is_file()), None)
    if report_path is None:
        raise SystemExit(f"{run_dir}: no report/report.json; run `vprob diagnose {run_dir}` first")
    report = json.loads(report_path.read_text())
    config_dir = run_dir if (run_dir / "config.json").is_file() else report_path.parent.parent
    config_path = config_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    seed = config.get("seed")
    return Run(
        run_dir,
        report,
        _recipe_label(str(report["method"]), config),
        int(seed) if isinstance(seed, int) else None,
    )


def _finite(values: Sequence[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def _mean(values: Sequence[Any]) -> float | None:
    finite = _finite(values)
    return statistics.fmean(finite) if finite else None


def _std(values: Sequence[Any]) -> float | None:
    finite = _finite(values)
    return statistics.stdev(finite) if len(finite) > 1 else None


def _score_name(run: Run, requested: str | None) -> str:
    names = run.report["uncertainty"].get("score_names") or list(
        next(iter(run.report["uncertainty"]["mean_score"].values()))
    )
    if requested is None:
        return "log_det" if "log_det" in names else names[0]
    if requested not in names:
        raise SystemExit(f"{run.run_dir}: no uncertainty score {requested!r} (the report has {names})")
    return requested


def collect(
    runs: Sequence[Run],
    representation: str = "embedding",
    score: str | None = None,
    title_suffix: str | None = None,
) -> dict[str, Any]:
    """Every number the two figures plot: per run, and per recipe (seeds pooled)."""
    per_run: list[dict[str, Any]] = []
    recipes: dict[str, list[tuple[Run, dict[str, Any]]]] = {}
    for run in runs:
        collapse = run.report["collapse"][representation]
        values = [float(s) for s in collapse["singular_values"]]
        top = values[0] if values and values[0] > 0 else 1.0
        entry: dict[str, Any] = {
            "run_dir": str(run.run_dir),
            "label": run.label,
            "method": run.method,
            "seed": run.seed,
            "data": run.report.get("data"),
            "num_dims": collapse.get("num_dims"),
            "num_images": collapse.get("num_rows"),
            "effective_rank": collapse["effective_rank"],
            "normalized_spectrum": [s / top for s in values],
            "uncertainty": None,
        }
        if run.variational:
            name = _score_name(run, score)
            section = run.report["uncertainty"]
            curves = {
                corruption: [by_score[name][str(s)] for s in SEVERITIES]
                for corruption, by_score in section["mean_score"].items()
            }
            entry["uncertainty"] = {
                "score": name,
                "severities": list(SEVERITIES),
                "mean_score": curves,
                "spearman": {c: by_score.get(name) for c, by_score in section["spearman"].items()},
                "spearman_overall": section["spearman_overall"].get(name),
                "num_images": section.get("num_images"),
            }
        per_run.append(entry)
        recipes.setdefault(run.label, []).append((run, entry))

    collapse_summary: dict[str, Any] = {}
    uncertainty_summary: dict[str, Any] = {}
    for label, members in recipes.items():
        ranks = [entry["effective_rank"] for _, entry in members]
        collapse_summary[label] = {
            "method": members[0][0].method,
            "variational": members[0][0].variational,
            "seeds": [run.seed for run, _ in members],
            "effective_rank_mean": _mean(ranks),
            "effective_rank_std": _std(ranks),
        }
        with_scores = [entry["uncertainty"] for _, entry in members if entry["uncertainty"] is not None]
        if not with_scores:
            continue
        names = {u["score"] for u in with_scores}
        if len(names) > 1:
            raise SystemExit(f"the runs of {label} report different scores {sorted(names)}: pass --score")
        corruptions = list(with_scores[0]["mean_score"])
        mean_curves = {
            c: [_mean([u["mean_score"][c][i] for u in with_scores]) for i in range(len(SEVERITIES))]
            for c in corruptions
        }
        uncertainty_summary[label] = {
            "score": with_scores[0]["score"],
            "seeds": [run.seed for run, e in members if e["uncertainty"]],
            "severities": list(SEVERITIES),
            "mean_score": mean_curves,
            "change_from_clean": {
                c: [None if v is None or curve[0] is None else v - curve[0] for v in curve]
                for c, curve in mean_curves.items()
            },
            "spearman": {c: _mean([u["spearman"].get(c) for u in with_scores]) for c in corruptions},
            "spearman_overall": _mean([u["spearman_overall"] for u in with_scores]),
        }
    return {
        "title_suffix": title_suffix,
        "representation": representation,
        "spectrum_normalization": "s_i / s_1 (singular values of the centred matrix over the largest)",
        "spearman_note": "per corruption: the report's Spearman of mean score vs severity 0..5; overall: "
        "pooled over every (corruption, severity); per recipe: the mean over its seeds",
        "runs": per_run,
        "collapse": collapse_summary,
        "uncertainty": uncertainty_summary,
    }


def _save(fig: Any, out_path: Path) -> Path:
    """Write ``fig`` as a PNG with a 128-colour palette (a third of the RGBA file's size, the same look: the
    figures are flat colours and anti-aliased lines) and close it."""
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
    pyplot().close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        palette = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    palette.save(out_path, optimize=True)
    return out_path


def _title(text: str, suffix: str | None) -> str:
    return f"{text} ({suffix})" if suffix else text


def _recipe_order(headline: dict[str, Any]) -> list[str]:
    """Recipes with each variational method right after its deterministic baseline."""
    collapse = headline["collapse"]

    def key(label: str) -> tuple[str, bool, str]:
        method = collapse[label]["method"]
        return VARIATIONAL_OF.get(method, method), method in VARIATIONAL_OF, label

    return sorted(collapse, key=key)


def _format(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def plot_collapse(headline: dict[str, Any], out_path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    colours = plt.get_cmap("tab10")
    order = _recipe_order(headline)
    most_dims = 1
    for index, label in enumerate(order):
        summary = headline["collapse"][label]
        rank = _format(summary["effective_rank_mean"], ".1f")
        if summary["effective_rank_std"] is not None:
            rank += f" ± {summary['effective_rank_std']:.1f}, {len(summary['seeds'])} seeds"
        style = "-" if summary["variational"] else "--"
        first = True
        for entry in headline["runs"]:
            if entry["label"] != label:
                continue
            spectrum = [max(v, SPECTRUM_FLOOR) for v in entry["normalized_spectrum"]]
            most_dims = max(most_dims, len(spectrum))
            ax.plot(
                range(1, len(spectrum) + 1),
                spectrum,
                style,
                color=colours(index % 10),
                linewidth=1.6,
                alpha=0.9,
                label=f"{label} (effective rank {rank})" if first else None,
            )
            first = False
    ax.set_yscale("log")
    ax.set_xlim(1, most_dims)
    ax.set_xlabel("singular value index i")
    ax.set_ylabel("s_i / s_1 (log scale)")
    kind = "point embeddings" if headline["representation"] == "embedding" else "backbone features"
    ax.set_title(_title(f"Collapse: spectrum of the {kind}", headline["title_suffix"]), fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return _save(fig, out_path)


def plot_uncertainty(headline: dict[str, Any], out_path: Path, absolute: bool = False) -> Path:
    plt = pyplot()
    labels = [label for label in _recipe_order(headline) if label in headline["uncertainty"]]
    if not labels:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.text(
            0.5,
            0.5,
            "no run with an uncertainty score (no variational method among the runs)",
            ha="center",
            va="center",
            fontsize=9,
        )
        ax.axis("off")
        return _save(fig, out_path)
    columns = min(len(labels), 2)
    rows = math.ceil(len(labels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.6 * columns + 0.4, 3.8 * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, label in zip(axes.flat, labels, strict=False):
        summary = headline["uncertainty"][label]
        curves = summary["mean_score" if absolute else "change_from_clean"]
        for index, (corruption, curve) in enumerate(curves.items()):
            rho = _format(summary["spearman"][corruption])
            ax.plot(
                summary["severities"],
                [math.nan if v is None else v for v in curve],
                marker="o",
                markersize=3.5,
                linewidth=1.4,
                color=colours(index % 10),
                label=f"{corruption} (ρ {rho})",
            )
        if not absolute:
            ax.axhline(0.0, color="0.4", linewidth=0.8)
        seeds = summary["seeds"]
        seeds_note = f", mean of {len(seeds)} seeds" if len(seeds) > 1 else ""
        ax.set_title(
            f"{label}: pooled Spearman ρ = {_format(summary['spearman_overall'])}{seeds_note}", fontsize=10
        )
        score = SCORE_LABELS.get(summary["score"], summary["score"])
        ax.set_ylabel(f"mean {score}" if absolute else f"mean {score} − clean")
        ax.set_xlabel("corruption severity (0 = clean)")
        ax.set_xticks(summary["severities"])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(labels) :]:
        ax.axis("off")
    fig.suptitle(_title("Uncertainty vs corruption severity", headline["title_suffix"]), fontsize=11)
    fig.tight_layout()
    return _save(fig, out_path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="diagnosed run folders (globs ok)")
    parser.add_argument("--out", required=True, help="folder for the PNGs and headline.json")
    parser.add_argument("--title-suffix", default=None, help='e.g. "digits, CPU"; appended to the titles')
    parser.add_argument("--representation", choices=("embedding", "backbone"), default="embedding")
    parser.add_argument(
        "--score",
        default=None,
        help="uncertainty score in the reports (default log_det, or each report's first)",
    )
    parser.add_argument(
        "--absolute",
        action="store_true",
        help="plot the raw mean score instead of its change from the clean images",
    )
    args = parser.parse_args(argv)

    runs = [load_report(path) for path in expand(args.run_dirs)]
    data = sorted({str(run.report.get("data")) for run in runs})
    if len(data) > 1:
        print(f"warning: the runs are on different data sets {data}", file=sys.stderr)
    headline = collect(runs, args.representation, args.score, args.title_suffix)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "collapse_spectra": plot_collapse(headline, out / "collapse_spectra.png"),
        "uncertainty_vs_severity": plot_uncertainty(
            headline, out / "uncertainty_vs_severity.png", absolute=args.absolute
        ),
    }
    headline["figures"] = {name: path.name for name, path in figures.items()}
    headline["uncertainty_plotted"] = "mean_score" if args.absolute else "change_from_clean"
    (out / "headline.json").write_text(json.dumps(headline, indent=2) + "\n")
    for label, summary in headline["collapse"].items():
        line = f"{label:>20}: effective rank {_format(summary['effective_rank_mean'], '.2f')}"
        if label in headline["uncertainty"]:
            line += f", pooled Spearman {_format(headline['uncertainty'][label]['spearman_overall'], '.3f')}"
        print(line)
    print(f"wrote {', '.join(str(path) for path in figures.values())}, {out / 'headline.json'}")
    return headline


if __name__ == "__main__":
    main()
