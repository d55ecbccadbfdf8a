"""Geometry of posterior samples on the sphere S^{d-1}, through geomstats' ``Hypersphere``.

The only module of vprob that imports geomstats, and only inside functions (:func:`geomstats_backend`).

- The intrinsic (Fréchet) mean of samples x_1..x_S on the sphere minimizes sum_s arccos(<m, x_s>)^2; it is
  computed by geomstats' Riemannian gradient descent (``FrechetMean``), started at the extrinsic mean
  normalize(mean_s x_s), which is already close for a concentrated posterior.
- The geodesic spread of a posterior is the mean great-circle distance (angle, radians) of its samples
  to that mean.

geomstats' backend is chosen once per process, by ``GEOMSTATS_BACKEND``, before its first import. This
module asks for ``numpy`` when nothing is set (as the project's tests do), which leaves torch untouched.
If the process already uses the ``pytorch`` backend, that works too: importing it switches torch's default
dtype to float64, so the default dtype is put back right after the import, and computations run in
float64 inside a context that restores it again. All computations are in float64; results come back as
torch tensors in the samples' dtype and device.

Note: geomstats' ``Hypersphere(dim)`` counts the manifold dimension: points of S^{d-1} in R^d are
``Hypersphere(d - 1)``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Riemannian gradient descent: stop when |mean of log maps|^2 <= tolerance (float64 leaves room). A broad
# posterior (near-uniform samples) has an ill-conditioned or non-unique Fréchet mean and may hit max_iter:
# posterior_geometry reports the remaining gradient norm for that reason.
FRECHET_MAX_ITER = 256
FRECHET_TOLERANCE = 1e-14


def geomstats_backend() -> Any:
    """Import geomstats (numpy backend unless ``GEOMSTATS_BACKEND`` says otherwise) and return
    ``geomstats.backend``, leaving ``torch.get_default_dtype()`` as it was before the import."""
    os.environ.setdefault("GEOMSTATS_BACKEND", "numpy")
    torch_dtype = torch.get_default_dtype()
    with warnings.catch_warnings():
        # Python 3.11 warns about geomstats' backend importer (exec_module not found); harmless.
        warnings.simplefilter("ignore", ImportWarning)
        import geomstats.backend as gs
    if _backend_name() == "pytorch" and torch.get_default_dtype() != torch_dtype:
        gs.set_default_dtype(str(torch_dtype).removeprefix("torch."))
    if torch.get_default_dtype() != torch_dtype:  # belt and braces: never leak a float64 default
        torch.set_default_dtype(torch_dtype)
    return gs


def _backend_name() -> str:
    from geomstats._backend import get_backend_name

    return get_backend_name()


@contextlib.contextmanager
def _float64() -> Iterator[None]:
    """Run geomstats in float64; with the pytorch backend this flips torch's default dtype, restored after."""
    gs = geomstats_backend()
    if _backend_name() != "pytorch":
        yield
        return
    torch_dtype = torch.get_default_dtype()
    gs.set_default_dtype("float64")
    try:
        yield
    finally:
        gs.set_default_dtype(str(torch_dtype).removeprefix("torch."))
        torch.set_default_dtype(torch_dtype)


def _to_backend(x: Tensor) -> Any:
    x = x.detach().to(device="cpu", dtype=torch.float64)
    return x if _backend_name() == "pytorch" else x.numpy()


def _to_torch(value: Any, like: Tensor) -> Tensor:
    array = value if isinstance(value, Tensor) else torch.from_numpy(np.asarray(value, dtype=np.float64))
    return array.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float64)


def hypersphere(dim: int) -> Any:
    """geomstats ``Hypersphere`` for unit vectors in R^dim (manifold dimension dim - 1)."""
    if dim < 2:
        raise ValueError(f"points on a sphere need an ambient dimension >= 2, got {dim}")
    geomstats_backend()
    from geomstats.geometry.hypersphere import Hypersphere

    return Hypersphere(dim - 1)


def _check_samples(samples: Tensor, ndim: int, what: str) -> None:
    if samples.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimensions, got shape {tuple(samples.shape)}")
    if samples.shape[-2] < 1:
        raise ValueError("need at least one sample")


def extrinsic_mean(samples: Tensor) -> Tensor:
    """normalize(mean of samples) over the sample axis -2: (..., S, d) -> (..., d)."""
    return F.normalize(samples.mean(dim=-2), dim=-1)


def frechet_mean(samples: Tensor) -> Tensor:
    """Fréchet (intrinsic) mean on S^{d-1} of samples (S, d) -> (d,) (geomstats ``FrechetMean``)."""
    _check_samples(samples, 2, "samples")
    space = hypersphere(samples.shape[-1])
    from geomstats.learning.frechet_mean import FrechetMean

    with _float64():
        points = _to_backend(samples)
        estimator = FrechetMean(space)
        if samples.shape[-1] > 2:  # the circle (d = 2) gets geomstats' closed-form CircleMean instead
            estimator.set(
                init_point=_to_backend(extrinsic_mean(samples.double())),
                max_iter=FRECHET_MAX_ITER,
                epsilon=FRECHET_TOLERANCE,
            )
        mean = estimator.fit(points).estimate_
        return _to_torch(mean, samples)


def frechet_means(samples: Tensor) -> Tensor:
    """Fréchet mean of each row's samples: (N, S, d) -> (N, d), by geomstats' batched gradient descent
    (``FrechetMean(method="batch")``; one loop per image for d = 2, where geomstats uses CircleMean)."""
    _check_samples(samples, 3, "samples")
    n, _, d = samples.shape
    if n == 0:
        return samples.new_zeros(0, d)
    if d == 2:
        return torch.stack([frechet_mean(row) for row in samples])
    space = hypersphere(d)
    from geomstats.learning.frechet_mean import FrechetMean

    with _float64():
        estimator = FrechetMean(space, method="batch")
        # The batch optimizer stops on the sum over the batch of |tangent mean|^2.
        estimator.set(
            init_point=_to_backend(extrinsic_mean(samples.double())),
            max_iter=FRECHET_MAX_ITER,
            epsilon=FRECHET_TOLERANCE * n,
        )
        means = estimator.fit(_to_backend(samples.transpose(0, 1))).estimate_  # (S, N, d) layout
        return _to_torch(means, samples)


def geodesic_distance(points: Tensor, base: Tensor) -> Tensor:
    """Great-circle distance (radians) between points (..., d) and base (..., d), broadcast, by geomstats'
    ``metric.dist``."""
    space = hypersphere(points.shape[-1])
    points, base = torch.broadcast_tensors(points, base)
    with _float64():
        flat = _to_backend(points.reshape(-1, points.shape[-1]))
        flat_base = _to_backend(base.reshape(-1, base.shape[-1]))
        dist = space.metric.dist(flat, flat_base)
        return _to_torch(dist, points).reshape(points.shape[:-1])


def frechet_gradient_norm(samples: Tensor, mean: Tensor) -> Tensor:
    """|mean_s log_m(x_s)|, the norm of the Fréchet function's Riemannian gradient (up to a factor -2) at
    ``mean``: zero at a Fréchet mean. (S, d), (d,) -> () or (N, S, d), (N, d) -> (N,); geomstats' log map."""
    if samples.ndim not in (2, 3) or mean.ndim != samples.ndim - 1:
        raise ValueError(
            f"expected samples (S, d) with mean (d,) or (N, S, d) with (N, d), got "
            f"{tuple(samples.shape)} and {tuple(mean.shape)}"
        )
    space = hypersphere(samples.shape[-1])
    points, base = torch.broadcast_tensors(samples, mean.unsqueeze(-2))
    with _float64():
        flat = _to_backend(points.reshape(-1, points.shape[-1]))
        flat_base = _to_backend(base.reshape(-1, base.shape[-1]))
        logs = _to_torch(space.metric.log(flat, flat_base), points.double()).reshape(points.shape)
    return logs.mean(dim=-2).norm(dim=-1).to(samples.dtype)


def mean_geodesic_distance(samples: Tensor, mean: Tensor) -> Tensor:
    """Mean great-circle distance of samples to their mean:
    (S, d), (d,) -> () or (N, S, d), (N, d) -> (N,)."""
    if samples.ndim not in (2, 3) or mean.ndim != samples.ndim - 1:
        raise ValueError(
            f"expected samples (S, d) with mean (d,) or (N, S, d) with (N, d), got "
            f"{tuple(samples.shape)} and {tuple(mean.shape)}"
        )
    return geodesic_distance(samples, mean.unsqueeze(-2)).mean(dim=-1)


def on_manifold(samples: Tensor, atol: float = 1e-5) -> bool:
    """Whether every point (..., d) lies on S^{d-1} (geomstats ``belongs``: | |x|^2 - 1 | <= atol)."""
    space = hypersphere(samples.shape[-1])
    with _float64():
        belongs = space.belongs(_to_backend(samples.reshape(-1, samples.shape[-1])), atol=atol)
        return bool(np.all(np.asarray(belongs.cpu() if isinstance(belongs, Tensor) else belongs)))


def posterior_geometry(samples: Tensor, atol: float = 1e-5) -> dict[str, Tensor | bool]:
    """Per-image geometry of posterior samples (N, S, d) on the sphere.

    Returns:
        ``frechet_mean`` (N, d), ``extrinsic_mean`` (N, d), ``geodesic_spread`` (N,) = mean distance of the
        samples to their Fréchet mean (radians), ``frechet_extrinsic_angle`` (N,) = angle between the two
        means, ``frechet_gradient_norm`` (N,) (near 0 where the descent converged; a broad posterior has
        an ill-conditioned mean), ``on_manifold`` (bool, every sample within ``atol`` of the sphere).
    """
    _check_samples(samples, 3, "samples")
    means = frechet_means(samples)
    extrinsic = extrinsic_mean(samples)
    return {
        "frechet_mean": means,
        "extrinsic_mean": extrinsic,
        "geodesic_spread": mean_geodesic_distance(samples, means),
        "frechet_extrinsic_angle": geodesic_distance(means, extrinsic),
        "frechet_gradient_norm": frechet_gradient_norm(samples, means),
        "on_manifold": on_manifold(samples, atol=atol),
    }
