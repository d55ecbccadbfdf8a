"""Per-image uncertainty scores: do they rise with corruption severity, and do they separate OOD inputs?

Scores follow one convention: **higher = more uncertain / more anomalous**. For VCL the scores are those
of ``VCL.uncertainty(x)``: ``log_det`` = sum_k log sigma_k^2 and its scale-free variant.

Hook for other probabilistic models (VJE comes later): any model with a method
``uncertainty(x) -> dict[str, Tensor (N,)]`` is scored by :func:`uncertainty_scores` and therefore by
``vprob.diagnose`` with no change here; VJE should return its posterior score (log det of the posterior
covariance) and its representation-space negative log-likelihood (METHODS.md 3.2) under names of its
choice, higher = more uncertain. A model without ``uncertainty`` has no score and is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from vprob.diagnostics.corruptions import CORRUPTIONS, corrupt

ScoreFn = Callable[[nn.Module, Tensor], "dict[str, Tensor] | Tensor"]
ScoresBySeverity = Mapping[int, Tensor | float] | Sequence[Tensor | float]


def has_uncertainty(model: nn.Module) -> bool:
    """Whether ``model`` exposes per-image uncertainty scores (``model.uncertainty(x)``)."""
    return callable(getattr(model, "uncertainty", None))


@torch.no_grad()
def uncertainty_scores(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """The model's per-image scores of normalized inputs x (N, C, H, W): ``{name: (N,) float32}``."""
    if not has_uncertainty(model):
        raise TypeError(f"{type(model).__name__} has no uncertainty(x) method: no per-image score")
    scores = model.uncertainty(x)
    if isinstance(scores, Tensor):
        scores = {"score": scores}
    return {name: value.detach().float() for name, value in scores.items()}


def _mean_scores(scores_by_severity: ScoresBySeverity) -> tuple[list[int], list[float]]:
    items = scores_by_severity.items() if isinstance(scores_by_severity, Mapping) else enumerate(
        scores_by_severity)
    severities, means = [], []
    for severity, scores in items:
        severities.append(int(severity))
        means.append(float(torch.as_tensor(scores, dtype=torch.float64).mean()))
    return severities, means


def severity_correlation(scores_by_severity: ScoresBySeverity) -> float:
    """Spearman's rho between severity and the mean score at that severity.

    Args:
        scores_by_severity: ``{severity: scores (N,)}`` (e.g. 0 = clean, 1..5 = corrupted), or a sequence
            whose index is the severity. Scalars are accepted as already-averaged scores.

    Returns:
        rho in [-1, 1]; NaN when the mean score (or the severity) is constant, where rho is undefined.
    """
    from scipy.stats import spearmanr

    severities, means = _mean_scores(scores_by_severity)
    if len(severities) < 2:
        raise ValueError("need scores at two or more severities")
    if len(set(means)) < 2 or len(set(severities)) < 2:
        return float("nan")
    return float(spearmanr(severities, means).statistic)


def _average_ranks(values: Tensor) -> Tensor:
    """1-based ranks of a 1-D tensor with ties given their average rank (as scipy.stats.rankdata)."""
    unique, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    last = torch.cumsum(counts, 0).to(torch.float64)  # rank of the last element of each tie group
    return (last - (counts.to(torch.float64) - 1) / 2)[inverse]


def auroc(scores_in: Tensor, scores_out: Tensor) -> float:
    """Area under the ROC curve for telling ``scores_out`` (positive: OOD / anomalous) from ``scores_in``
    with "higher score = more anomalous".

    The rank (Mann-Whitney U) form, with ties counted one half:
    AUROC = P(s_out > s_in) + P(s_out = s_in) / 2 = (R_out - n_out (n_out + 1) / 2) / (n_in n_out),
    R_out the sum of the out-scores' average ranks in the pooled sample. 0.5 = chance.
    """
    scores_in = torch.as_tensor(scores_in).detach().flatten().to(torch.float64).cpu()
    scores_out = torch.as_tensor(scores_out).detach().flatten().to(torch.float64).cpu()
    n_in, n_out = scores_in.numel(), scores_out.numel()
    if n_in == 0 or n_out == 0:
        raise ValueError("auroc needs at least one in- and one out-of-distribution score")
    if not (torch.isfinite(scores_in).all() and torch.isfinite(scores_out).all()):
        raise ValueError("auroc needs finite scores")
    ranks = _average_ranks(torch.cat([scores_in, scores_out]))
    rank_sum_out = ranks[n_in:].sum()
    return float((rank_sum_out - n_out * (n_out + 1) / 2) / (n_in * n_out))


@torch.no_grad()
def score_images(
    model: nn.Module,
    images: Tensor,
    normalize_fn: Callable[[Tensor], Tensor],
    score_fn: ScoreFn = uncertainty_scores,
    batch_size: int = 512,
) -> dict[str, Tensor]:
    """Scores of uint8 images (N, C, H, W), in batches: ``{name: (N,) float32 on the images' device}``."""
    parts: dict[str, list[Tensor]] = {}
    for start in range(0, images.shape[0], batch_size):
        scores = score_fn(model, normalize_fn(images[start:start + batch_size]))
        if isinstance(scores, Tensor):
            scores = {"score": scores}
        for name, value in scores.items():
            parts.setdefault(name, []).append(value.detach().float())
    return {name: torch.cat(values) for name, values in parts.items()}


@torch.no_grad()
def uncertainty_vs_corruption(
    model: nn.Module,
    images: Tensor,
    normalize_fn: Callable[[Tensor], Tensor],
    corruptions: Sequence[str] = tuple(CORRUPTIONS),
    severities: Sequence[int] = (0, 1, 2, 3, 4, 5),
    score_fn: ScoreFn = uncertainty_scores,
    generator: torch.Generator | None = None,
    batch_size: int = 512,
) -> dict[str, object]:
    """Score clean and corrupted copies of ``images`` and correlate the mean score with severity.

    Args:
        model: in eval mode; scored by ``score_fn(model, x) -> {name: (N,)}`` (or one (N,) tensor).
        images: uint8 (N, C, H, W) clean images; ``normalize_fn`` maps them to the model's input.
        corruptions: names from ``CORRUPTIONS``; severities: 0 (the clean images) and/or 1..5.
        generator: drives the random corruptions (noise); on the images' device.

    Returns:
        ``scores``: ``{corruption: {score_name: {severity: (N,) tensor}}}`` (severity 0 shared);
        ``mean``: the same with the mean score (float) per severity;
        ``spearman``: ``{corruption: {score_name: rho}}`` of mean score vs severity
        (:func:`severity_correlation`);
        ``spearman_overall``: ``{score_name: rho}`` over every (corruption, severity) pair pooled, i.e.
        all the per-corruption mean-score curves ranked together against their severities.
    """
    for name in corruptions:
        if name not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {name!r}; valid names: {', '.join(CORRUPTIONS)}")
    severities = [int(s) for s in severities]
    clean = score_images(model, images, normalize_fn, score_fn, batch_size) if 0 in severities else None
    scores: dict[str, dict[str, dict[int, Tensor]]] = {}
    for name in corruptions:
        per_severity: dict[int, dict[str, Tensor]] = {}
        for severity in severities:
            if severity == 0:
                per_severity[0] = clean
            else:
                corrupted = corrupt(images, name, severity, generator=generator)
                per_severity[severity] = score_images(model, corrupted, normalize_fn, score_fn, batch_size)
        score_names = next(iter(per_severity.values())).keys()
        scores[name] = {s: {sev: per_severity[sev][s] for sev in severities} for s in score_names}
    mean = {name: {s: {sev: float(v.double().mean()) for sev, v in by_sev.items()}
                   for s, by_sev in by_score.items()}
            for name, by_score in scores.items()}
    spearman = {name: {s: severity_correlation(by_sev) for s, by_sev in by_score.items()}
                for name, by_score in mean.items()}
    overall: dict[str, float] = {}
    if mean:
        from scipy.stats import spearmanr

        for s in next(iter(mean.values())):
            xs = [sev for name in mean for sev in mean[name][s]]
            ys = [mean[name][s][sev] for name in mean for sev in mean[name][s]]
            constant = len(set(ys)) < 2 or len(set(xs)) < 2
            overall[s] = float("nan") if constant else float(spearmanr(xs, ys).statistic)
    return {"scores": scores, "mean": mean, "spearman": spearman, "spearman_overall": overall}
