"""``vprob diagnose RUN_DIR``: every diagnostic of docs/maths.md, Diagnostics for one training run.

:func:`diagnose_run` loads a run's checkpoint (:func:`vprob.runs.load_run`) and writes a report
folder (default ``RUN_DIR/report``):

- ``report.json``: every number (effective ranks and spectra, MI lower bounds, Spearman correlations,
  AUROCs, posterior summary statistics, geometry), sections that do not apply replaced by
  ``{"skipped": reason}`` and listed under the top-level ``"skipped"`` (non-finite numbers as null);
- figures (PNG): ``spectrum.png``, ``training_curves.png``, and where they apply
  ``uncertainty_vs_severity_<score>.png``, ``score_histograms_<score>.png``, ``posterior_sphere.png``
  (d = 3), ``cct_weights.png`` (CCT);
- ``posterior.nc`` (arviz InferenceData, netCDF-4) and ``posterior_summary.csv`` (az.summary per image).

What is computed, and on which images (subsampled at random with ``seed``, so that a digits run takes
well under a minute on a CPU; the sizes used are recorded in the report):

- every method: spectrum + effective rank of the backbone features and of the point embeddings of up to
  ``max_images`` test images; the MI lower bound H(Y) - CE of both, classifier fitted on up to
  ``max_images`` training images, evaluated on the test images (the same estimator for every method);
- methods with a per-image uncertainty score (``model.uncertainty``; VCL's log det Sigma and its scale-free
  variant): the score on ``max_uncertainty_images`` test images, clean and under every corruption at
  severities 1..5 (Spearman per corruption and overall), and OOD AUROCs against
  (a) ``uniform_noise``: images with i.i.d. uniform 0..255 pixels, the same shape (far OOD, always
  available); (b) the data set's far-OOD companion (its registry record's ``far_ood``; for CIFAR-10 the
  bundled digits, box-upsampled to 32x32 and repeated over the RGB channels), when it has one (a digits
  run has no second data set offline, which the report says); (c) ``<corruption>_s5``: the same images
  at severity 5 (near OOD);
- VCL (a spherical latent "z"): posterior draws (``num_chains`` x ``num_samples``) of a random subset of
  ``max_posterior_images`` of those images through ``pyro.infer.Predictive``, their spectrum, arviz
  InferenceData with the cosine to the class centroid and the geodesic distance to the image's Fréchet
  mean per draw, az.summary (ESS, HDI, R-hat), geomstats Fréchet means and geodesic spreads.

Deterministic methods skip the uncertainty, OOD, posterior and geometry sections, saying why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vprob.data import SimCLRAugment, get_dataset, load_dataset
from vprob.diagnostics import (
    auroc,
    class_centroids,
    has_uncertainty,
    mean_over_corruptions,
    mutual_information_lower_bound,
    per_image_severity_summary,
    posterior_geometry,
    posterior_samples,
    posterior_summary,
    spectrum_report,
    summary_statistics,
    to_inference_data,
    uncertainty_vs_corruption,
    write_netcdf,
)
from vprob.diagnostics.corruptions import box_resample_matrix
from vprob.diagnostics.uncertainty import score_images
from vprob.evaluate import map_batches
from vprob.jsonio import json_safe, write_json_atomic
from vprob.methods import get_method
from vprob.runs import load_run

REPORT_NAME = "report.json"
SUBSAMPLE_NOTE = (
    "random subsets (seeded) of the train and test splits; the uncertainty images are a random "
    "subset of those test images, the posterior images a random subset of them"
)
NETCDF_NAME = "posterior.nc"


def _deterministic_reason(method: str) -> str:
    return (
        f"method {method!r} is deterministic: it has no posterior over embeddings and no per-image "
        "uncertainty score"
    )


def _no_posterior_reason(requested: bool, model: nn.Module, method: str) -> str:
    if not requested:
        return "posterior sections not requested (posterior=False / --no-posterior)"
    if not has_uncertainty(model):
        return _deterministic_reason(method)
    return f"posterior sampling is implemented for a spherical latent 'z' (VCL) only, not {method!r}"


def _map_batches(fn, images: Tensor, normalize, batch_size: int) -> Tensor:
    return map_batches(fn, images, normalize, batch_size).flatten(1)


def _rows(image_set, index: Tensor) -> tuple[Tensor, Tensor]:
    """(images, labels) of the rows ``index`` (on CPU) of an ImageSet on any device."""
    index = index.to(image_set.images.device)
    return image_set.images[index], image_set.labels[index]


def _subsample(n: int, limit: int | None, generator: torch.Generator) -> Tensor:
    """Sorted random indices of min(n, limit) of n items (all of them when limit is None or >= n)."""
    if limit is None or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=generator)[:limit].sort().values


def _far_ood_images(name: str, num: int, like: Tensor, generator: torch.Generator) -> Tensor:
    """Up to ``num`` test images of data set ``name`` in the shape of ``like`` (N, C, H, W): box-resampled
    to H x W and, if grey, repeated over the channels; uint8 on ``like``'s device."""
    _, other = load_dataset(name)
    images = other.images[_subsample(len(other), num, generator)].float()
    size_in, (channels, size_out) = images.shape[-1], (like.shape[1], like.shape[-1])
    resize = box_resample_matrix(size_in, size_out)
    images = torch.einsum("oh,nchw,pw->ncop", resize, images, resize).round().clamp(0, 255).to(torch.uint8)
    if images.shape[1] != channels:
        images = images.repeat(1, channels // images.shape[1], 1, 1)
    return images.to(like.device)


@dataclass
class _Context:
    """What every section of a diagnosis needs, and where it records figures, skips and timings."""

    config: Any
    model: nn.Module
    augment: SimCLRAugment
    out_dir: Path
    device: torch.device
    seed: int
    batch_size: int
    generator: torch.Generator  # CPU: subsampling
    figures: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)

    def skip(self, key: str, reason: str) -> dict[str, str]:
        self.skipped[key] = reason
        return {"skipped": reason}


def diagnose_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    max_images: int | None = 5000,
    max_uncertainty_images: int = 256,
    max_posterior_images: int = 64,
    num_samples: int = 50,
    num_chains: int = 4,
    seed: int = 0,
    batch_size: int = 512,
    posterior: bool = True,
) -> dict[str, Any]:
    """Run every diagnostic that applies to the run in ``run_dir`` and write the report folder.

    Args:
        run_dir: a training run folder (``checkpoint.pt``, ``metrics.jsonl``).
        out_dir: where the report goes; default ``run_dir / "report"``.
        device: "auto", "cpu", "cuda", ...; data_dir: overrides the run's data folder (CIFAR-10).
        max_images: cap on the training images (MI classifier) and on the test images (spectra, MI
            evaluation); ``None`` = all.
        max_uncertainty_images: test images scored under the corruptions and against the OOD sets.
        max_posterior_images: a random subset of those whose posteriors are sampled (Predictive, arviz,
            geomstats), ``num_chains`` x ``num_samples`` draws each.
        seed: subsampling, corruption noise and OOD noise.
        posterior: ``False`` skips the posterior and geometry sections (posterior sampling, arviz,
            geomstats), for environments without those packages or when only the numbers of the other
            sections are wanted.

    Returns:
        The report (also written to ``out_dir / "report.json"``, with NaN written as null).
    """
    started = time.perf_counter()
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "report"
    run = load_run(run_dir, device, data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config, model, augment = run.config, run.model, run.augment
    train_set, test_set = run.train_set, run.test_set
    torch_device, step = run.device, run.step
    spherical_posterior = get_method(config.method).capabilities.spherical_posterior
    ctx = _Context(
        config, model, augment, out_dir, torch_device, seed, batch_size, torch.Generator().manual_seed(seed)
    )

    train_index = _subsample(len(train_set), max_images, ctx.generator)
    test_index = _subsample(len(test_set), max_images, ctx.generator)
    train, test = _rows(train_set, train_index), _rows(test_set, test_index)
    uncertainty_index = _subsample(len(test_index), max_uncertainty_images, ctx.generator)
    unc_images = test[0][uncertainty_index.to(torch_device)]
    # A random subset (not the first few: a data set stored sorted by class would give one class).
    post_index = uncertainty_index[_subsample(len(uncertainty_index), max_posterior_images, ctx.generator)]

    num_classes = train_set.num_classes
    collapse, information, train_embeddings = _collapse_and_information(ctx, train, test, num_classes)
    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "out_dir": str(out_dir),
        "method": config.method,
        "data": config.data,
        "dim": model.dim,
        "steps": step,
        "device": str(torch_device),
        "seed": seed,
        "collapse": collapse,
        "mutual_information": information,
    }
    if has_uncertainty(model):
        report["uncertainty"], report["ood"] = _uncertainty_and_ood(ctx, unc_images)
    else:
        reason = _deterministic_reason(config.method)
        report["uncertainty"], report["ood"] = ctx.skip("uncertainty", reason), ctx.skip("ood", reason)
    if posterior and spherical_posterior:
        centroids = class_centroids(train_embeddings, train[1], num_classes)
        summary, geometry, spectrum = _posterior_and_geometry(
            ctx,
            test[0][post_index.to(torch_device)],
            test[1][post_index.to(torch_device)],
            test_index[post_index],
            centroids,
            num_samples,
            num_chains,
        )
        report["posterior"], report["geometry"], collapse["posterior_samples"] = summary, geometry, spectrum
    else:
        reason = _no_posterior_reason(posterior, model, config.method)
        report["posterior"], report["geometry"] = ctx.skip("posterior", reason), ctx.skip("geometry", reason)
        collapse["posterior_samples"] = {"skipped": reason}
    _common_figures(ctx, run_dir, collapse, unc_images)

    ctx.timing["total"] = time.perf_counter() - started
    counts = (
        len(train_index),
        len(test_index),
        len(uncertainty_index),
        len(post_index) if posterior and spherical_posterior else 0,
    )
    report.update(
        {
            "subsample": dict(
                zip(
                    ("train_images", "test_images", "uncertainty_images", "posterior_images"),
                    counts,
                    strict=True,
                ),
                note=SUBSAMPLE_NOTE,
            ),
            "figures": ctx.figures,
            "skipped": ctx.skipped,
            "timing_s": ctx.timing,
        }
    )
    write_json_atomic(out_dir / REPORT_NAME, report)
    return json_safe(report)


def _collapse_and_information(
    ctx: _Context, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], num_classes: int
) -> tuple[dict, dict, Tensor]:
    """Spectra of the test representations and MI bounds (classifier fitted on train, evaluated on test),
    for the backbone features and the point embeddings; also returns the train point embeddings."""
    tic = time.perf_counter()
    model, normalize = ctx.model, ctx.augment.normalize
    representations = {
        name: (
            _map_batches(fn, train[0], normalize, ctx.batch_size),
            _map_batches(fn, test[0], normalize, ctx.batch_size),
        )
        for name, fn in (("backbone", model.encoder), ("embedding", model.embed))
    }
    collapse = {name: spectrum_report(test_z) for name, (_, test_z) in representations.items()}
    information = {
        name: mutual_information_lower_bound(
            train_z, train[1], test_z, test[1], num_classes=num_classes, seed=ctx.seed
        )
        for name, (train_z, test_z) in representations.items()
    }
    ctx.timing["collapse_and_information"] = time.perf_counter() - tic
    return collapse, information, representations["embedding"][0]


def _uncertainty_and_ood(ctx: _Context, images: Tensor) -> tuple[dict, dict]:
    """The corruption sweep (Spearman per image and of the per-severity means) and the OOD AUROCs."""
    tic = time.perf_counter()
    generator = torch.Generator(ctx.device).manual_seed(ctx.seed)
    sweep = uncertainty_vs_corruption(
        ctx.model, images, ctx.augment.normalize, generator=generator, batch_size=ctx.batch_size
    )
    uncertainty = _uncertainty_report(ctx, sweep, int(images.shape[0]))
    ctx.timing["uncertainty"] = time.perf_counter() - tic
    tic = time.perf_counter()
    ood = _ood_report(ctx, sweep, images, generator)
    ctx.timing["ood"] = time.perf_counter() - tic
    return uncertainty, ood


def _uncertainty_report(ctx: _Context, sweep: dict, num_images: int) -> dict:
    from vprob.plots import plot_uncertainty_vs_severity

    score_names = list(next(iter(sweep["scores"].values())).keys())
    per_image = per_image_severity_summary(sweep["scores"])
    report = {
        "num_images": num_images,
        "score_names": score_names,
        "corruptions": list(sweep["scores"]),
        "corruption_set": {key: per_image[key] for key in ("corruptions", "missing", "complete")},
        # The headline: each image's Spearman of its score against severity 0..5, averaged over images,
        # then over the corruption set (the literature's "mean over CIFAR-10-C").
        "per_image_spearman_mean_over_set": per_image["mean_over_set"],
        "per_image_spearman": per_image["per_corruption"],
        # Secondary: the Spearman of the six per-severity means, per corruption and pooled.
        "spearman_of_means_mean_over_set": {
            score: mean_over_corruptions({c: rho[score] for c, rho in sweep["spearman"].items()})["mean"]
            for score in score_names
        },
        "mean_score": sweep["mean"],
        "spearman": sweep["spearman"],
        "spearman_overall": sweep["spearman_overall"],
    }
    for score in score_names:
        path = plot_uncertainty_vs_severity(
            {name: by_score[score] for name, by_score in sweep["mean"].items()},
            ctx.out_dir / f"uncertainty_vs_severity_{score}.png",
            score_name=score,
            spearman={name: rho[score] for name, rho in sweep["spearman"].items()},
        )
        ctx.figures[f"uncertainty_vs_severity_{score}"] = path.name
    return report


def _far_ood_sets(ctx: _Context, images: Tensor, generator: torch.Generator) -> tuple[dict, dict]:
    """Uniform noise and, if the data set names one, its far-OOD companion; with their descriptions."""
    sets = {
        "uniform_noise": torch.randint(
            0, 256, tuple(images.shape), generator=generator, device=ctx.device, dtype=torch.uint8
        )
    }
    descriptions = {"uniform_noise": "i.i.d. uniform 0..255 pixels, the test images' shape (far OOD)"}
    companion = get_dataset(ctx.config.data).far_ood
    if companion is not None:
        sets[companion] = _far_ood_images(companion, images.shape[0], images, ctx.generator)
        descriptions[companion] = (
            f"{companion} test images, box-resampled to the run's image size, grey repeated over the channels"
        )
    else:
        ctx.skip(
            "ood.other_dataset",
            f"a {ctx.config.data} run has no second data set available offline "
            "(its registry record names no far-OOD companion); far OOD uses "
            "uniform noise only",
        )
    return sets, descriptions


def _ood_report(ctx: _Context, sweep: dict, images: Tensor, generator: torch.Generator) -> dict:
    from vprob.plots import plot_score_histograms

    score_names = list(next(iter(sweep["scores"].values())).keys())
    # Severity 0 (the clean images) is shared by every corruption's entry.
    clean = {score: next(iter(sweep["scores"].values()))[score][0] for score in score_names}
    far_sets, descriptions = _far_ood_sets(ctx, images, generator)
    far_scores = {
        name: score_images(ctx.model, x, ctx.augment.normalize, batch_size=ctx.batch_size)
        for name, x in far_sets.items()
    }
    for name in sweep["scores"]:
        descriptions[f"{name}_s5"] = f"the same test images under {name} at severity 5 (near OOD)"
    aurocs: dict[str, dict[str, float]] = {}
    for score in score_names:
        aurocs[score] = {name: auroc(clean[score], s[score]) for name, s in far_scores.items()}
        near = {
            name: auroc(clean[score], by_score[score][5])
            for name, by_score in sweep["scores"].items()
            if 5 in by_score[score]
        }
        aurocs[score].update({f"{name}_s5": value for name, value in near.items()})
        if near:
            aurocs[score]["corruptions_s5_mean_over_set"] = mean_over_corruptions(near)["mean"]
        path = plot_score_histograms(
            clean[score],
            {name: s[score] for name, s in far_scores.items()},
            ctx.out_dir / f"score_histograms_{score}.png",
            score_name=score,
            in_label=f"{ctx.config.data} test",
        )
        ctx.figures[f"score_histograms_{score}"] = path.name
    return {
        "num_images": int(images.shape[0]),
        "sets": descriptions,
        "auroc": aurocs,
        "convention": "AUROC of telling the set from the clean test images, higher score = more OOD; "
        "0.5 = chance",
    }


def _posterior_and_geometry(
    ctx: _Context,
    images: Tensor,
    labels: Tensor,
    image_index: Tensor,
    centroids: Tensor,
    num_samples: int,
    num_chains: int,
) -> tuple[dict, dict, dict]:
    """Posterior draws (Predictive) to arviz (summary, netCDF) and geomstats geometry, per image."""
    from vprob.plots import plot_sphere_samples

    tic = time.perf_counter()
    config, out_dir, x = ctx.config, ctx.out_dir, ctx.augment.normalize(images)
    samples = posterior_samples(
        ctx.model, x, num_samples=num_samples, num_chains=num_chains, batch_size=ctx.batch_size
    )  # (C, S, N, d)
    chains, draws, n, d = samples.shape
    per_image = samples.permute(2, 0, 1, 3).reshape(n, chains * draws, d)
    geometry = posterior_geometry(per_image)
    idata = to_inference_data(
        samples,
        labels,
        centroids,
        means=geometry["frechet_mean"],
        image_index=image_index,
        include_samples=d <= 3,
        attrs={
            "method": config.method,
            "data": config.data,
            "dim": d,
            "chains": "independent guide draws (pyro.infer.Predictive)",
        },
    )
    summary = posterior_summary(idata)
    summary.to_csv(out_dir / "posterior_summary.csv")
    netcdf = write_netcdf(idata, out_dir / NETCDF_NAME)
    posterior = {
        "num_images": n,
        "num_chains": chains,
        "num_draws": draws,
        "views": "the clean test image passed as both views; view 0's draws",
        "quantities": summary_statistics(summary),
        "netcdf": netcdf.name,
        "summary_csv": "posterior_summary.csv",
    }
    spread = geometry["geodesic_spread"]
    geometry_report = {
        "num_images": n,
        "on_manifold": geometry["on_manifold"],
        "geodesic_spread_mean": float(spread.mean()),
        "geodesic_spread_median": float(spread.median()),
        "geodesic_spread_max": float(spread.max()),
        "frechet_extrinsic_angle_max": float(geometry["frechet_extrinsic_angle"].max()),
        "frechet_gradient_norm_max": float(geometry["frechet_gradient_norm"].max()),
        "spread_vs_log_det_spearman": _spread_vs_score(ctx.model, x, spread),
    }
    if d == 3:
        names = [f"test {int(i)} (y={int(y)})" for i, y in zip(image_index, labels.cpu(), strict=True)]
        path = plot_sphere_samples(
            per_image, out_dir / "posterior_sphere.png", means=geometry["frechet_mean"], labels=names
        )
        ctx.figures["posterior_sphere"] = path.name
    ctx.timing["posterior_and_geometry"] = time.perf_counter() - tic
    return posterior, geometry_report, spectrum_report(samples.reshape(-1, d))


def _common_figures(ctx: _Context, run_dir: Path, collapse: dict, images: Tensor) -> None:
    """The spectrum, the training curves (when logged) and, for CCT, its weights."""
    from vprob.plots import plot_spectrum, plot_training_curves

    config = ctx.config
    spectra = {
        name: torch.tensor(entry["singular_values"])
        for name, entry in collapse.items()
        if "singular_values" in entry
    }
    ctx.figures["spectrum"] = plot_spectrum(
        spectra, ctx.out_dir / "spectrum.png", title=f"{config.method} on {config.data}: centred spectra"
    ).name
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file() and metrics.read_text().strip():
        path = plot_training_curves(metrics, ctx.out_dir / "training_curves.png")
        ctx.figures["training_curves"] = path.name
    else:
        ctx.skip("figures.training_curves", f"no metrics in {metrics}")
    if callable(getattr(ctx.model, "weights", None)):  # a method with contrastive weights (CCT)
        path = _plot_contrastive_weights(ctx.model, images, ctx.augment, ctx.out_dir, ctx.seed)
        ctx.figures["cct_weights"] = path.name
    else:
        ctx.skip("figures.cct_weights", f"method {config.method!r} has no contrastive weights to draw")


@torch.no_grad()
def _spread_vs_score(model: nn.Module, x: Tensor, spread: Tensor) -> float:
    """Spearman between each image's geodesic spread and its log det Sigma (do they agree on which inputs
    are uncertain?)."""
    from scipy.stats import spearmanr

    log_det = model.uncertainty(x)["log_det"].cpu().double().numpy()
    values = spread.cpu().double().numpy()
    if len(set(log_det.tolist())) < 2 or len(set(values.tolist())) < 2:
        return float("nan")
    return float(spearmanr(values, log_det).statistic)


@torch.no_grad()
def _plot_contrastive_weights(
    model: nn.Module, images: Tensor, augment: SimCLRAugment, out_dir: Path, seed: int, batch: int = 32
) -> Path:
    """The method's contrastive weights (``model.weights``) on its V augmented views of a few test images."""
    from vprob.plots import plot_cct_weights

    images = images[:batch]
    generator = torch.Generator(images.device).manual_seed(seed)
    views = torch.stack([augment(images, generator) for _ in range(model.num_views)])
    z = F.normalize(model(views.flatten(0, 1)), dim=-1).view(model.num_views, images.shape[0], -1)
    return plot_cct_weights(images, model.weights(z), out_dir / "cct_weights.png")
