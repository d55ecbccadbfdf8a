"""Posterior samples of a VCL model through ``pyro.infer.Predictive``, as arviz ``InferenceData``.

The only module of vprob that imports arviz, and only inside functions (arviz 0.23 here; arviz 1.x changes
``from_dict`` and the summary's defaults, so moving to it is this file's change alone).

Sampling, two equivalent ways through ``pyro.infer.Predictive``:

- ``parallel=False``: ``Predictive(vcl.model, guide=vcl.guide)``, the posterior predictive of the pair: each
  draw runs the guide (the amortized posterior q(z | x) = PN(mu(x), diag sigma(x)^2) of every image) and
  replays its ``z`` through the model. One encoder pass per draw.
- ``parallel=True`` (default): ``Predictive(vcl.guide, parallel=True)``, the guide alone with its draws
  vectorized in an outer plate: one encoder pass per chain, all draws at once. The model's ``z`` is the
  guide's replayed draw, so both give draws of the same q(z | x) (the tests check it); the pair's model
  cannot be vectorized this way (its contrastive factor takes one (2, B, d) sample).

The returned ``z`` site has shape (draws, 2, B, d) for the pair's "views" and "images" plates (any
singleton plate dimensions Predictive keeps are squeezed). The pair takes two views: pass two augmented
views, or (the default, ``x2=None``) the same images twice, in which case both view slices are independent
draws of the same posterior q(z | x). The model's contrastive factor does not change the returned draws, so
VSupCon gets placeholder labels when none are given.

Chains. A "chain" is a separate ``Predictive`` call: independent guide draws. They are not MCMC chains;
R-hat near 1 and ESS near the number of draws are what exact independent sampling gives, and the check
that they are (a guide that depends on hidden state, e.g. BatchNorm in training mode, would fail it).

Per-image quantities stored in the posterior group, each (chain, draw, image):
``cos_to_centroid`` = <z, c_y>, c_y the normalized centroid of the image's class among the point
embeddings mu/|mu| of a reference set; ``geodesic_distance_to_mean`` = the angle (radians) between z and
the image's posterior mean direction (extrinsic mean of all its draws, or the Fréchet means of
:mod:`vprob.diagnostics.geometry` when given), whose posterior mean is the image's geodesic spread.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SUMMARY_VARIABLES = ("cos_to_centroid", "geodesic_distance_to_mean")


def _arviz() -> Any:
    # arviz 0.23 logs at INFO which of its 1.x preview packages are missing, at every first import.
    logging.getLogger("arviz.preview").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # ... and announces its 1.x refactor with a FutureWarning.
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


@torch.no_grad()
def posterior_samples(
    vcl: nn.Module,
    x: Tensor,
    num_samples: int = 100,
    num_chains: int = 4,
    x2: Tensor | None = None,
    labels: Tensor | None = None,
    batch_size: int = 256,
    view: int | None = 0,
    parallel: bool = True,
) -> Tensor:
    """Posterior draws of the embeddings of normalized images x (N, C, H, W) from a VCL model/guide pair.

    Args:
        vcl: a model with Pyro ``model(x1, x2, labels)`` / ``guide(x1, x2, labels)`` methods and a latent
            site "z" of shape (2, B, d) in plates "views" (dim -2) x "images" (dim -1). It is put in eval
            mode for the call (BatchNorm must use its running statistics) and restored afterwards.
        num_samples: draws per chain; num_chains: independent ``Predictive`` calls.
        x2: the second view; ``None`` = ``x`` again (both view slices are then draws of q(z | x)).
        labels: (N,) for supervised pairs; placeholders are used when ``None`` (they do not change z).
        batch_size: images per ``Predictive`` call (the model's contrastive factor is B x B).
        view: return only this view's draws (default 0, the posterior of ``x``); ``None`` returns both.
        parallel: vectorized draws from the guide (fast) or the pair's sequential posterior predictive
            (see the module docstring); the same distribution.

    Returns:
        (num_chains, num_samples, N, d) float32 on x's device, or (num_chains, num_samples, 2, N, d) when
        ``view is None``.
    """
    from pyro.infer import Predictive

    if num_samples < 1 or num_chains < 1:
        raise ValueError(f"num_samples and num_chains must be >= 1, got {num_samples}, {num_chains}")
    x2 = x if x2 is None else x2
    if x2.shape != x.shape:
        raise ValueError(
            f"the two views must have the same shape, got {tuple(x.shape)} and {tuple(x2.shape)}"
        )
    n = x.shape[0]
    if labels is None and getattr(vcl, "supervised", False):
        labels = torch.zeros(n, dtype=torch.long, device=x.device)
    was_training = vcl.training
    vcl.eval()
    try:
        chains = []
        for _ in range(num_chains):
            parts = []
            for start in range(0, n, batch_size):
                stop = min(start + batch_size, n)
                batch_labels = None if labels is None else labels[start:stop]
                if parallel:
                    predictive = Predictive(
                        vcl.guide, num_samples=num_samples, return_sites=("z",), parallel=True
                    )
                else:
                    predictive = Predictive(
                        vcl.model, guide=vcl.guide, num_samples=num_samples, return_sites=("z",)
                    )
                z = predictive(x[start:stop], x2[start:stop], batch_labels)["z"]
                parts.append(_squeeze_plates(z, num_samples, stop - start))
            chains.append(torch.cat(parts, dim=2))
    finally:
        vcl.train(was_training)
    samples = torch.stack(chains).float()  # (chains, draws, 2, N, d)
    return samples if view is None else samples[:, :, view]


def _squeeze_plates(z: Tensor, num_samples: int, batch: int) -> Tensor:
    """Predictive's "z" -> (draws, 2, B, d): drop the singleton dimensions it keeps for plates."""
    d = z.shape[-1]
    if z.numel() != num_samples * 2 * batch * d:
        raise ValueError(
            f"unexpected shape {tuple(z.shape)} for site 'z' of {num_samples} draws of (2, {batch}, d)"
        )
    return z.reshape(num_samples, 2, batch, d)


def class_centroids(embeddings: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
    """Unit class centroids (K, d): normalize(mean of the unit-normalized embeddings (M, d) of each class);
    a class without members gets the zero vector (cosine 0 to everything)."""
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    unit = F.normalize(embeddings.detach().double(), dim=-1)
    sums = torch.zeros(num_classes, unit.shape[1], dtype=unit.dtype, device=unit.device)
    sums.index_add_(0, labels.long().to(unit.device), unit)
    return F.normalize(sums, dim=-1).to(embeddings.dtype)


def angle_between(a: Tensor, b: Tensor) -> Tensor:
    """Great-circle angle (radians) between unit vectors (..., d), in float64: 2 asin(|a - b| / 2), which
    (unlike arccos of the inner product) keeps its precision for nearby points."""
    a, b = a.double(), b.double()
    return 2 * torch.asin(((a - b).norm(dim=-1) / 2).clamp(max=1.0))


def posterior_quantities(
    samples: Tensor, labels: Tensor, centroids: Tensor, means: Tensor | None = None
) -> dict[str, Tensor]:
    """The per-image quantities of the module docstring, each (chains, draws, N) float64.

    Args:
        samples: (chains, draws, N, d) unit vectors; labels: (N,); centroids: (K, d) unit class centroids;
        means: (N, d) per-image posterior mean directions; default: the extrinsic mean of all draws.
    """
    if samples.ndim != 4:
        raise ValueError(f"samples must be (chains, draws, N, d), got {tuple(samples.shape)}")
    z = F.normalize(samples.double(), dim=-1)  # undo float32 rounding off the sphere before any angle
    if means is None:
        means = F.normalize(z.mean(dim=(0, 1)), dim=-1)
    centroid = centroids.double().to(z.device)[labels.long().to(z.device)]  # (N, d)
    return {
        "cos_to_centroid": (z * centroid).sum(-1),
        "geodesic_distance_to_mean": angle_between(z, means.double().to(z.device)),
    }


def to_inference_data(
    samples: Tensor,
    labels: Tensor,
    centroids: Tensor,
    means: Tensor | None = None,
    image_index: Sequence[int] | Tensor | None = None,
    include_samples: bool = False,
    attrs: dict[str, Any] | None = None,
) -> Any:
    """arviz ``InferenceData`` of posterior draws (chains, draws, N, d) with per-image quantities.

    Posterior group: ``cos_to_centroid`` and ``geodesic_distance_to_mean`` with dims (chain, draw, image)
    (see :func:`posterior_quantities`), plus ``z`` (chain, draw, image, dim) when ``include_samples``.
    Constant-data group: ``label`` (image). ``image_index`` names the images (e.g. their index in the
    test set; default 0..N-1). ``attrs`` are stored as the posterior's attributes (numbers and strings).
    """
    az = _arviz()
    quantities = posterior_quantities(samples, labels, centroids, means)
    posterior = {name: value.cpu().numpy() for name, value in quantities.items()}
    dims: dict[str, list[str]] = {name: ["image"] for name in posterior}
    n, d = samples.shape[2], samples.shape[3]
    image = torch.arange(n) if image_index is None else torch.as_tensor(image_index)
    coords: dict[str, Any] = {"image": image.cpu().numpy()}
    if include_samples:
        posterior["z"] = samples.detach().float().cpu().numpy()
        dims["z"] = ["image", "dim"]
        coords["dim"] = list(range(d))
    return az.from_dict(
        posterior=posterior,
        constant_data={"label": labels.detach().cpu().numpy()},
        coords=coords,
        dims={**dims, "label": ["image"]},
        posterior_attrs=dict(attrs or {}),
    )


def posterior_summary(
    idata: Any, var_names: Sequence[str] | None = SUMMARY_VARIABLES, hdi_prob: float = 0.94
) -> Any:
    """``az.summary`` of the per-image quantities: a pandas DataFrame, one row per (variable, image), with
    mean, sd, the HDI bounds (``hdi_3%``, ``hdi_97%`` for 0.94), MCSE, ``ess_bulk``, ``ess_tail``,
    ``r_hat`` (unrounded)."""
    az = _arviz()
    names = None if var_names is None else [v for v in var_names if v in idata.posterior]
    return az.summary(idata, var_names=names, hdi_prob=hdi_prob, round_to="none")


def summary_statistics(summary: Any) -> dict[str, dict[str, float]]:
    """Per variable, the mean over images of the summary's columns (mean, sd, HDI width, ESS, R-hat) and
    the worst R-hat and smallest ESS: the numbers a report keeps from the per-image table."""
    stats: dict[str, dict[str, float]] = {}
    hdi_columns = [c for c in summary.columns if c.startswith("hdi_")]
    for variable in dict.fromkeys(index.split("[")[0] for index in summary.index):
        rows = summary[[index.split("[")[0] == variable for index in summary.index]]
        entry = {
            "num_images": int(len(rows)),
            "mean": float(rows["mean"].mean()),
            "sd": float(rows["sd"].mean()),
            "ess_bulk_mean": float(rows["ess_bulk"].mean()),
            "ess_bulk_min": float(rows["ess_bulk"].min()),
            "ess_tail_mean": float(rows["ess_tail"].mean()),
            "r_hat_mean": float(rows["r_hat"].mean()),
            "r_hat_max": float(rows["r_hat"].max()),
        }
        if len(hdi_columns) == 2:
            entry["hdi_width_mean"] = float((rows[hdi_columns[1]] - rows[hdi_columns[0]]).mean())
        stats[variable] = entry
    return stats


def write_netcdf(idata: Any, path: str | Path) -> Path:
    """Write ``idata`` to a netCDF-4 file through the h5netcdf engine (arviz 0.23 depends on h5netcdf;
    the netCDF4 package is not needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    idata.to_netcdf(str(path), engine="h5netcdf")
    return path


def read_netcdf(path: str | Path) -> Any:
    """Read an ``InferenceData`` written by :func:`write_netcdf`."""
    return _arviz().from_netcdf(str(path), engine="h5netcdf")
