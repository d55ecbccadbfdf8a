"""Per-image uncertainty scores: do they rise with corruption severity, and do they separate OOD inputs?

Scores follow one convention: **higher = more uncertain / more anomalous**. For VCL the scores are those
of ``VCL.uncertainty(x)``: ``log_det`` = sum_k log sigma_k^2 and its scale-free variant.

Hook for other probabilistic models (VJE comes later): any model with a method
``uncertainty(x) -> dict[str, Tensor (N,)]`` is scored by :func:`uncertainty_scores` and therefore by
``vprob.diagnose`` with no change here; VJE should return its posterior score (log det of the posterior
covariance) and its representation-space negative log-likelihood (docs/maths.md, VJE) under names of its
choice, higher = more uncertain. A model without ``uncertainty`` has no score and is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from vprob.diagnostics.corruptions import ALL_CORRUPTIONS, CORRUPTIONS, corrupt, mean_over_corruptions

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
    items = (
        scores_by_severity.items()
        if isinstance(scores_by_severity, Mapping)
        else enumerate(scores_by_severity)
    )
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


def _row_ranks(values: Tensor) -> Tensor:
    """1-based ranks along the last axis with ties given their average rank (scipy.stats.rankdata per
    row): rank_j = #{k: v_k < v_j} + (#{k: v_k = v_j} + 1) / 2."""
    less = (values[..., None, :] < values[..., :, None]).sum(-1)
    equal = (values[..., None, :] == values[..., :, None]).sum(-1)
    return less.to(torch.float64) + (equal.to(torch.float64) + 1) / 2


def _pearson_rows(a: Tensor, b: Tensor) -> Tensor:
    """Pearson correlation along the last axis; NaN where either row is constant."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    denominator = (a.pow(2).sum(-1) * b.pow(2).sum(-1)).sqrt()
    numerator = (a * b).sum(-1)
    return torch.where(
        denominator > 0, numerator / denominator.clamp(min=1e-300), torch.full_like(numerator, float("nan"))
    )


def per_image_severity_correlation(scores_by_severity: ScoresBySeverity) -> dict[str, object]:
    """Spearman's rho between severity and the score **of each image**, and its summaries.

    For image i the scores s_i(0), ..., s_i(5) (one per severity, the same image clean and corrupted) are
    ranked against the severities: rho_i is Spearman over those 6 points (ties averaged, as
    ``scipy.stats.spearmanr``). Unlike :func:`severity_correlation` (Spearman of the six per-severity
    *means*, which takes few distinct values), this asks whether each image's own score rises.

    Args:
        scores_by_severity: ``{severity: scores (N,)}`` (e.g. 0 = clean, 1..5 = corrupted; image i at
            position i under every severity), or a sequence whose index is the severity; two or more
            severities, finite scores.

    Returns:
        ``per_image``: (N,) float64 rho_i (NaN where an image's scores are all equal: rho undefined);
        ``mean``, ``median``: over the images with a defined rho (the mean is the headline);
        ``fraction_positive``: the fraction of those with rho_i > 0; ``n_images``, ``n_defined``;
        ``pooled``: Spearman over all N x S (severity, score) pairs pooled (between-image differences
        included, so it is lower than the per-image figures when images differ more than severities do).
    """
    items = (
        scores_by_severity.items()
        if isinstance(scores_by_severity, Mapping)
        else enumerate(scores_by_severity)
    )
    severities, columns = [], []
    for severity, scores in items:
        severities.append(int(severity))
        columns.append(torch.as_tensor(scores).detach().to(torch.float64).cpu().flatten())
    if len(severities) < 2:
        raise ValueError("scores_by_severity: need scores at two or more severities")
    if len({c.numel() for c in columns}) != 1 or columns[0].numel() == 0:
        raise ValueError(
            "scores_by_severity: every severity needs scores for the same, non-empty, images; "
            f"got sizes {[c.numel() for c in columns]}"
        )
    scores = torch.stack(columns, dim=1)  # (N, S)
    if not torch.isfinite(scores).all():
        raise ValueError("scores_by_severity: scores must be finite")
    severity = torch.tensor(severities, dtype=torch.float64)
    rho = _pearson_rows(_row_ranks(scores), _row_ranks(severity).expand_as(scores))
    defined = rho[~rho.isnan()]
    n_images = scores.shape[0]
    pooled_x = severity.expand_as(scores).flatten()
    pooled = _pearson_rows(_average_ranks(pooled_x), _average_ranks(scores.flatten()))
    return {
        "per_image": rho,
        "mean": float(defined.mean()) if defined.numel() else float("nan"),
        "median": float(defined.quantile(0.5)) if defined.numel() else float("nan"),
        "fraction_positive": float((defined > 0).double().mean()) if defined.numel() else float("nan"),
        "n_images": n_images,
        "n_defined": int(defined.numel()),
        "pooled": float(pooled),
    }


_SUMMARY_KEYS = ("mean", "median", "fraction_positive", "pooled")


def per_image_severity_summary(
    scores: Mapping[str, Mapping[str, ScoresBySeverity]],
    corruptions: Sequence[str] | None = None,
) -> dict[str, object]:
    """:func:`per_image_severity_correlation` for every (corruption, score) of a sweep, and each summary
    averaged over the corruption set (:func:`~vprob.diagnostics.corruptions.mean_over_corruptions`).

    Args:
        scores: ``{corruption: {score_name: {severity: (N,)}}}``, e.g. ``uncertainty_vs_corruption(...)
            ["scores"]``; every corruption with the same score names.
        corruptions: the set to average over (default: the standard 15 present in ``scores``).

    Returns:
        ``per_corruption``: ``{corruption: {score_name: {mean, median, fraction_positive, pooled,
        n_defined}}}`` (the per-image rho's themselves are left out: N numbers each);
        ``mean_over_set``: ``{score_name: {mean, median, fraction_positive, pooled}}``, each the mean over
        the set of the per-corruption value (``mean_over_set[score]["mean"]`` is the headline: the mean
        over corruptions of the mean per-image Spearman); ``corruptions``, ``missing``, ``complete`` as in
        ``mean_over_corruptions``.
    """
    per_corruption: dict[str, dict[str, dict[str, float]]] = {}
    for name, by_score in scores.items():
        per_corruption[name] = {}
        for score_name, by_severity in by_score.items():
            result = per_image_severity_correlation(by_severity)
            per_corruption[name][score_name] = {key: result[key] for key in _SUMMARY_KEYS + ("n_defined",)}
    score_names = {tuple(by_score) for by_score in per_corruption.values()}
    if len(score_names) > 1:
        raise ValueError(f"scores: the corruptions have different score names: {sorted(score_names)}")
    over_set: dict[str, dict[str, float]] = {}
    used: dict[str, object] = {}
    for score_name in next(iter(score_names), ()):
        over_set[score_name] = {}
        for key in _SUMMARY_KEYS:
            used = mean_over_corruptions(
                {name: per_corruption[name][score_name][key] for name in per_corruption}, corruptions
            )
            over_set[score_name][key] = used["mean"]
    return {
        "per_corruption": per_corruption,
        "mean_over_set": over_set,
        "corruptions": used.get("corruptions", []),
        "missing": used.get("missing", []),
        "complete": used.get("complete", False),
    }


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
        scores = score_fn(model, normalize_fn(images[start : start + batch_size]))
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
        corruptions: names from ``ALL_CORRUPTIONS`` (default: the standard 15, ``CORRUPTIONS``);
            severities: 0 (the clean images) and/or 1..5.
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
        if name not in ALL_CORRUPTIONS:
            raise ValueError(f"unknown corruption {name!r}; valid names: {', '.join(ALL_CORRUPTIONS)}")
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
    mean = {
        name: {
            s: {sev: float(v.double().mean()) for sev, v in by_sev.items()} for s, by_sev in by_score.items()
        }
        for name, by_score in scores.items()
    }
    spearman = {
        name: {s: severity_correlation(by_sev) for s, by_sev in by_score.items()}
        for name, by_score in mean.items()
    }
    overall: dict[str, float] = {}
    if mean:
        from scipy.stats import spearmanr

        for s in next(iter(mean.values())):
            xs = [sev for name in mean for sev in mean[name][s]]
            ys = [mean[name][s][sev] for name in mean for sev in mean[name][s]]
            constant = len(set(ys)) < 2 or len(set(xs)) < 2
            overall[s] = float("nan") if constant else float(spearmanr(xs, ys).statistic)
    return {"scores": scores, "mean": mean, "spearman": spearman, "spearman_overall": overall}
