"""Figures (matplotlib, PNG). matplotlib is imported inside each function, with the Agg backend.

Every function writes one PNG and returns its Path (parent folders are created).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend, imported on first use (figures are files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(metrics_path: str | Path, out_path: str | Path) -> Path:
    """Loss (and its parts, when logged) against the step, from a run's ``metrics.jsonl``; the online kNN
    accuracy (``online_knn_*`` keys, ``--eval-every``), when logged, on a second axis at the right."""
    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in ("loss", "contrastive", "kl_term"):
        points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
        if points and len(points) == len(records):
            ax.plot(*zip(*points, strict=True), label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("per-batch objective")
    lines, labels = ax.get_legend_handles_labels()
    online = sorted({key for r in records for key in r if key.startswith("online_knn")})
    if online:
        right = ax.twinx()
        for key in online:
            points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
            right.plot(
                *zip(*points, strict=True),
                "o-",
                color="black",
                markersize=3,
                label=key.removeprefix("online_").replace("_", " "),
            )
        right.set_ylabel("online kNN accuracy")
        right.set_ylim(0, 1)
        more_lines, more_labels = right.get_legend_handles_labels()
        lines, labels = lines + more_lines, labels + more_labels
    if lines:
        ax.legend(lines, labels, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def _save(fig, out_path: str | Path) -> Path:
    plt = pyplot()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def _numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def plot_spectrum(
    spectra: Mapping[str, torch.Tensor | Sequence[float]],
    out_path: str | Path,
    normalize: bool = True,
    title: str | None = None,
    floor: float = 1e-8,
) -> Path:
    """Singular-value spectra (descending) of several representations overlaid, log-log axes.

    Args:
        spectra: ``{label: singular values (k,)}``, e.g. from
            :func:`vprob.diagnostics.singular_value_spectrum`; the legend adds each effective rank.
        normalize: divide each spectrum by its largest value (compares shapes across representations of
            different scales, e.g. backbone features and unit embeddings).
        floor: values below ``floor`` x the largest (numerically zero directions, e.g. dead ReLU units)
            are drawn at that level, so that they do not squash the rest of the plot.

    The index axis is logarithmic too, so that a d = 8 embedding and 512 backbone features share it.
    """
    from vprob.diagnostics.collapse import effective_rank

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, values in spectra.items():
        s = _numpy(values)
        erank = effective_rank(torch.as_tensor(s))
        if normalize and s.size and s[0] > 0:
            s = s / s[0]
        lowest = (s[0] if s.size else 1.0) * floor
        ax.plot(np.arange(1, s.size + 1), np.maximum(s, lowest), label=f"{label} (erank {erank:.1f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("singular value index")
    ax.set_ylabel("singular value / largest" if normalize else "singular value")
    ax.set_title(title or "spectrum of the centred embeddings")
    ax.grid(alpha=0.3, which="both")
    if spectra:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_path)


def plot_uncertainty_vs_severity(
    mean_scores: Mapping[str, Mapping[int, float]],
    out_path: str | Path,
    score_name: str = "score",
    spearman: Mapping[str, float] | None = None,
) -> Path:
    """Mean uncertainty score against corruption severity (0 = clean), one line per corruption.

    Args:
        mean_scores: ``{corruption: {severity: mean score}}`` (``uncertainty_vs_corruption(...)["mean"]``
            for one score name).
        spearman: optional ``{corruption: rho}`` shown in the legend.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, by_severity in mean_scores.items():
        severities = sorted(by_severity)
        label = name if spearman is None or name not in spearman else f"{name} (ρ={spearman[name]:.2f})"
        ax.plot(severities, [by_severity[s] for s in severities], marker="o", label=label)
    ax.set_xlabel("corruption severity (0 = clean)")
    ax.set_ylabel(f"mean {score_name}")
    ax.set_title(f"{score_name} vs corruption severity")
    ax.grid(alpha=0.3)
    if mean_scores:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_path)


def plot_score_histograms(
    scores_in: torch.Tensor | Sequence[float],
    scores_out: Mapping[str, torch.Tensor | Sequence[float]],
    out_path: str | Path,
    score_name: str = "score",
    in_label: str = "in-distribution",
    bins: int = 40,
) -> Path:
    """Histograms of a score on the in-distribution set and on each OOD set, AUROC (in vs that set,
    higher score = OOD) in the legend."""
    from vprob.diagnostics.uncertainty import auroc

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    values_in = _numpy(scores_in).ravel()
    all_values = np.concatenate([values_in] + [_numpy(v).ravel() for v in scores_out.values()])
    edges = np.histogram_bin_edges(all_values, bins=bins)
    ax.hist(values_in, bins=edges, alpha=0.5, density=True, label=in_label)
    for name, values in scores_out.items():
        area = auroc(torch.as_tensor(values_in), torch.as_tensor(_numpy(values)))
        ax.hist(
            _numpy(values).ravel(), bins=edges, alpha=0.5, density=True, label=f"{name} (AUROC {area:.3f})"
        )
    ax.set_xlabel(score_name)
    ax.set_ylabel("density")
    ax.set_title(f"{score_name}: in-distribution vs OOD")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_path)


def plot_sphere_samples(
    samples: torch.Tensor,
    out_path: str | Path,
    means: torch.Tensor | None = None,
    labels: Sequence[str] | None = None,
    max_images: int = 8,
) -> Path:
    """Posterior samples of a 3-d model on the unit sphere: a 3-D scatter per image over a wireframe sphere.

    Args:
        samples: (N, S, 3) draws per image (or (S, 3) for one image); the first ``max_images`` are drawn,
            one colour each.
        means: optional (N, 3) mean directions, drawn as black crosses.
        labels: optional legend entry per image.
    """
    samples = samples.detach().cpu().double()
    if samples.ndim == 2:
        samples = samples.unsqueeze(0)
    if samples.ndim != 3 or samples.shape[-1] != 3:
        raise ValueError(f"expected samples (N, S, 3) of a 3-d model, got {tuple(samples.shape)}")
    plt = pyplot()
    fig = plt.figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot(projection="3d")
    u, v = np.meshgrid(np.linspace(0, 2 * np.pi, 25), np.linspace(0, np.pi, 13))
    ax.plot_wireframe(np.cos(u) * np.sin(v), np.sin(u) * np.sin(v), np.cos(v), color="0.8", linewidth=0.5)
    colours = plt.get_cmap("tab10")
    for i, cloud in enumerate(samples[:max_images].numpy()):
        label = labels[i] if labels is not None and i < len(labels) else f"image {i}"
        ax.scatter(cloud[:, 0], cloud[:, 1], cloud[:, 2], s=6, alpha=0.6, color=colours(i % 10), label=label)
    if means is not None:
        m = means.detach().cpu().double()[:max_images].numpy()
        ax.scatter(m[:, 0], m[:, 1], m[:, 2], marker="x", s=40, color="black", label="mean")
    ax.set_box_aspect((1, 1, 1))
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1)
    ax.set_zlim(-1, 1)
    ax.set_title("posterior samples on S²")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _save(fig, out_path)


def _display_image(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) uint8 or float -> (H, W) or (H, W, 3) in [0, 1] for imshow (floats min-max scaled)."""
    x = image.detach().cpu().double()
    if image.dtype == torch.uint8:
        x = x / 255.0
    else:
        x = (x - x.min()) / (x.max() - x.min()).clamp(min=1e-12)
    x = x.numpy()
    return x[0] if x.shape[0] == 1 else np.transpose(x, (1, 2, 0))


def plot_cct_weights(
    images: torch.Tensor,
    weights,
    out_path: str | Path,
    queries: Sequence[int] = (0, 1, 2),
    top_k: int = 5,
    query_view: int = 0,
) -> Path:
    """CCT's attraction and repulsion weights for a few query images, next to the images.

    Args:
        images: (B, C, H, W) the batch's images (uint8, or floats shown min-max scaled).
        weights: a :class:`vprob.losses.CCTWeights` (``cct(z, ..., return_weights=True)``) or a pair
            ``(attraction (V, B, V-1), repulsion (P, B, B-1))`` with CCT's layout: the V-1 other views
            u != v in increasing order, and the B-1 images j != i in increasing order.
        queries: image indices i shown, one row each.
        top_k: the negatives with the largest repulsion weight (averaged over the P view pairs) shown.
        query_view: the view v whose attraction weights are shown.

    Each row: the query image; its attraction weights w+ over the other views (bars); its repulsion
    weights w- over all negatives, sorted (the 1 / (B-1) uniform level dashed); the top-k negatives with
    their weights.
    """
    attraction, repulsion = (
        (weights.attraction, weights.repulsion) if hasattr(weights, "attraction") else weights
    )
    views, batch = attraction.shape[:2]
    if repulsion.shape[1:] != (batch, batch - 1) or images.shape[0] != batch:
        raise ValueError(
            f"shapes disagree: images {tuple(images.shape)}, attraction "
            f"{tuple(attraction.shape)}, repulsion {tuple(repulsion.shape)}"
        )
    queries = [q for q in queries if 0 <= q < batch]
    if not queries:
        raise ValueError(f"no valid query index among {queries} for a batch of {batch}")
    top_k = min(top_k, batch - 1)
    plt = pyplot()
    columns = 3 + top_k
    fig, axes = plt.subplots(
        len(queries),
        columns,
        figsize=(1.6 * columns + 2.5, 1.9 * len(queries)),
        squeeze=False,
        gridspec_kw={"width_ratios": [1, 1.6, 1.6] + [1] * top_k},
    )
    cmap = "gray" if images.shape[1] == 1 else None
    for row, i in enumerate(queries):
        ax_query, ax_pos, ax_neg, *ax_top = axes[row]
        ax_query.imshow(_display_image(images[i]), cmap=cmap, interpolation="nearest")
        ax_query.set_title(f"query {i}", fontsize=8)
        ax_query.axis("off")
        w_pos = _numpy(attraction[query_view, i])
        others = [u for u in range(views) if u != query_view]
        ax_pos.bar(range(len(others)), w_pos, color="tab:green")
        ax_pos.set_xticks(range(len(others)), [str(u) for u in others])
        ax_pos.set_ylim(0, 1)
        ax_pos.set_title(f"w⁺ of view {query_view} over views", fontsize=8)
        ax_pos.tick_params(labelsize=7)
        w_neg = _numpy(repulsion[:, i]).mean(axis=0)  # (B-1,), averaged over view pairs
        order = np.argsort(-w_neg)
        ax_neg.plot(np.arange(1, batch), w_neg[order], color="tab:red")
        ax_neg.axhline(1.0 / (batch - 1), color="0.5", linestyle="--", linewidth=0.8)
        if w_neg.max() > 10 * max(w_neg.min(), 1e-300):  # log scale only where the weights span decades
            ax_neg.set_yscale("log")
        ax_neg.set_title("w⁻ over negatives (sorted)", fontsize=8)
        ax_neg.tick_params(which="both", labelsize=6)
        for ax, k in zip(ax_top, order[:top_k], strict=True):
            j = int(k) + (1 if k >= i else 0)  # entry k of the B-1 negatives is image j != i
            ax.imshow(_display_image(images[j]), cmap=cmap, interpolation="nearest")
            ax.set_title(f"{j}: w⁻={w_neg[k]:.3f}", fontsize=7)
            ax.axis("off")
    fig.suptitle("CCT attraction (w⁺) and repulsion (w⁻) weights", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_path)
