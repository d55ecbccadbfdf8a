"""Diagnostics of learned representations (docs/maths.md, Diagnostics), one small module per job:

- :mod:`~vprob.diagnostics.collapse`: singular-value spectrum and effective rank (dimensional collapse);
- :mod:`~vprob.diagnostics.information`: classifier lower bound on I(Z; Y);
- :mod:`~vprob.diagnostics.corruptions`: the 15 CIFAR-10-C corruptions of uint8 image batches;
- :mod:`~vprob.diagnostics.uncertainty`: Spearman of the score with severity (per image and of the
  per-severity means), AUROC, the corruption sweep;
- :mod:`~vprob.diagnostics.posterior`: posterior samples via ``pyro.infer.Predictive`` to arviz (the only
  arviz user);
- :mod:`~vprob.diagnostics.geometry`: Fréchet mean and geodesic spread on the sphere via geomstats (the only
  geomstats user).

arviz and geomstats are imported inside the functions that need them, so importing this package is cheap.
``vprob.diagnose.diagnose_run`` puts them together for a run folder.
"""

from vprob.diagnostics.collapse import effective_rank, singular_value_spectrum, spectrum_report
from vprob.diagnostics.corruptions import (
    ALL_CORRUPTIONS,
    CIFAR10_C,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    SEVERITIES,
    corrupt,
    mean_over_corruptions,
)
from vprob.diagnostics.geometry import (
    extrinsic_mean,
    frechet_gradient_norm,
    frechet_mean,
    frechet_means,
    geodesic_distance,
    mean_geodesic_distance,
    on_manifold,
    posterior_geometry,
)
from vprob.diagnostics.information import label_entropy, mutual_information_lower_bound
from vprob.diagnostics.posterior import (
    class_centroids,
    posterior_samples,
    posterior_summary,
    read_netcdf,
    summary_statistics,
    to_inference_data,
    write_netcdf,
)
from vprob.diagnostics.uncertainty import (
    auroc,
    has_uncertainty,
    per_image_severity_correlation,
    per_image_severity_summary,
    score_images,
    severity_correlation,
    uncertainty_scores,
    uncertainty_vs_corruption,
)

__all__ = [
    "ALL_CORRUPTIONS",
    "CIFAR10_C",
    "CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "SEVERITIES",
    "auroc",
    "class_centroids",
    "corrupt",
    "effective_rank",
    "extrinsic_mean",
    "frechet_gradient_norm",
    "frechet_mean",
    "frechet_means",
    "geodesic_distance",
    "has_uncertainty",
    "label_entropy",
    "mean_geodesic_distance",
    "mean_over_corruptions",
    "mutual_information_lower_bound",
    "on_manifold",
    "per_image_severity_correlation",
    "per_image_severity_summary",
    "posterior_geometry",
    "posterior_samples",
    "posterior_summary",
    "read_netcdf",
    "score_images",
    "severity_correlation",
    "singular_value_spectrum",
    "spectrum_report",
    "summary_statistics",
    "to_inference_data",
    "uncertainty_scores",
    "uncertainty_vs_corruption",
    "write_netcdf",
]
