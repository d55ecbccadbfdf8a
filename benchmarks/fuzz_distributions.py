"""Vectorized stress test of the sphere distributions: count NaN/inf in log_prob, samples and gradients.

    nice -n 10 python benchmarks/fuzz_distributions.py                  # 1e6 parameter sets per distribution
    python benchmarks/fuzz_distributions.py --n 20000 --only ProjectedNormal   # a quick look

Not a CI test (it takes minutes): a sweep that a change to the numerics should leave at zero. For every
distribution, ``--n`` parameter sets (default 1,000,000; half in float32, half in float64) are drawn in
chunks, one dimension ``d`` per chunk, from buckets of ``d`` that cover 2..4096 (most sets at small ``d``,
where the cost is low and the closed forms switch branches; see ``BUCKETS``):

* mean directions uniform on the sphere; ``|loc|`` log-uniform in [1e-4, 1e4] (one set in 16 exactly 0);
* scales log-uniform in [1e-4, 1e5], isotropic or diagonal (half each); concentrations log-uniform in
  [1e-4, 1e5] (one in 16 exactly 0); PolarStudentT: ``df`` log-uniform in [1, 100], directional scales
  in [1e-4, 1e5], radial scale (of the t on ``log r``) in [1e-4, 1] and radial location standard normal
  (with a radial scale of 100 the radius ``exp(100 T)`` overflows any dtype: not a numerical fault).

Each parameter set is evaluated at a draw from the distribution itself (``rsample``), at a uniform random
point (for PolarStudentT a point of random direction and log-uniform radius in [1e-6, 1e6]), and at the
antipode of the mean direction (not for PowerSpherical, whose density is zero there), and a gradient is
taken of the log densities plus a random linear function of the draw (so the sampler's reparameterized
gradient is checked too) with respect to every parameter. A parameter set counts once per kind of
failure if any value (or any coordinate of a sample or gradient) is NaN or infinite. ``VonMisesFisher``
(``distributions/von_mises_fisher.py``) and ``PowerSpherical`` (``distributions/power_spherical.py``) are
included when they can be imported.
"""

from __future__ import annotations

import argparse
import importlib
import math
import time

import torch

from distributions.hyperspherical_uniform import HypersphericalUniform
from distributions.polar_student_t import PolarStudentT
from distributions.projected_normal import ProjectedNormal

# (low, high, share of the parameter sets): d is drawn log-uniformly in [low, high] per chunk.
BUCKETS = ((2, 4, 0.40), (5, 16, 0.30), (17, 128, 0.20), (129, 1024, 0.08), (1025, 4096, 0.02))
ELEMENTS_PER_CHUNK = 1 << 19  # events x d per chunk: bounds the memory (and keeps the vectors long)


def log_uniform(shape, low: float, high: float, dtype, gen) -> torch.Tensor:
    u = torch.rand(shape, generator=gen, dtype=torch.float64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low))).to(dtype)


def unit_vectors(n: int, d: int, dtype, gen) -> torch.Tensor:
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return (x / x.norm(dim=-1, keepdim=True)).to(dtype)


def with_zeros(x: torch.Tensor, gen) -> torch.Tensor:
    """Set one entry in 16 (along the first dimension) to exactly zero."""
    zero = torch.rand(x.shape[0], generator=gen) < 1 / 16
    return torch.where(zero.reshape((-1,) + (1,) * (x.dim() - 1)).to(x.device), torch.zeros_like(x), x)


def scale_like(n: int, d: int, dtype, gen) -> torch.Tensor:
    """Scales in [1e-4, 1e5]: isotropic (shape (n, 1)) or diagonal (n, d) for alternating halves."""
    scale = log_uniform((n, d), 1e-4, 1e5, dtype, gen)
    iso = (torch.arange(n) % 2 == 0).unsqueeze(-1)
    return torch.where(iso, scale[:, :1], scale)


# Each maker returns (distribution, parameters to differentiate, mean direction or None, sphere support?);
# the log density is also evaluated at the antipode of the mean direction unless it is None.
def make_projected_normal(n, d, dtype, gen):
    direction = unit_vectors(n, d, dtype, gen)
    norm = with_zeros(log_uniform((n, 1), 1e-4, 1e4, dtype, gen), gen)
    loc = (norm * direction).requires_grad_()
    scale = scale_like(n, d, dtype, gen).requires_grad_()
    return ProjectedNormal(loc, scale, validate_args=False), (loc, scale), direction, True


def make_uniform(n, d, dtype, gen):
    return HypersphericalUniform(d, batch_shape=(n,), dtype=dtype, validate_args=False), (), None, True


def make_polar_student_t(n, d, dtype, gen):
    direction = unit_vectors(n, d, dtype, gen).requires_grad_()
    df = log_uniform((n,), 1.0, 100.0, dtype, gen).requires_grad_()
    scale = scale_like(n, d, dtype, gen).requires_grad_()
    radial_loc = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    # a t on log r: a radial scale s puts radii at exp(+-s T), so s is kept <= 1 (beyond, draws overflow)
    radial_scale = log_uniform((n,), 1e-4, 1.0, dtype, gen).requires_grad_()
    dist = PolarStudentT(direction, df, scale, radial_loc, radial_scale, validate_args=False)
    return dist, (direction, df, scale, radial_loc, radial_scale), direction.detach(), False


def concentration_family(module: str, name: str, antipode: bool = True):
    """A maker for ``cls(loc, concentration)`` if ``distributions.<module>.<name>`` can be imported.

    ``antipode=False`` where the density vanishes at ``-loc`` (the power spherical's ``(1 + loc.x)^kappa``),
    so that ``log_prob = -inf`` there is the right answer and not a fault.
    """
    try:
        cls = getattr(importlib.import_module(f"distributions.{module}"), name)
    except (ImportError, AttributeError):
        return None

    def make(n, d, dtype, gen):
        loc = unit_vectors(n, d, dtype, gen).requires_grad_()
        concentration = with_zeros(log_uniform((n,), 1e-4, 1e5, dtype, gen), gen).requires_grad_()
        # loc enters through normalize() so that the gradient flows along the sphere's tangent space, as it
        # would from a network head; it also keeps loc exactly on the sphere for the validation-free call.
        direction = loc / loc.norm(dim=-1, keepdim=True)
        mean = loc.detach() if antipode else None
        return cls(direction, concentration, validate_args=False), (loc, concentration), mean, True

    return make


def makers() -> dict:
    out = {
        "ProjectedNormal": make_projected_normal,
        "HypersphericalUniform": make_uniform,
        "PolarStudentT": make_polar_student_t,
    }
    for module, name, antipode in (
        ("von_mises_fisher", "VonMisesFisher", True),
        ("power_spherical", "PowerSpherical", False),
    ):
        make = concentration_family(module, name, antipode)
        if make is not None:
            out[name] = make
    return out


def not_finite_rows(x: torch.Tensor | None, n: int) -> torch.Tensor:
    """Boolean (n,): whether row i of x (events first) has a NaN or infinite entry."""
    if x is None:
        return torch.zeros(n, dtype=torch.bool)
    return ~torch.isfinite(x.detach().reshape(n, -1)).all(-1)


def fuzz_chunk(make, n: int, d: int, dtype, gen) -> dict:
    dist, params, direction, on_sphere = make(n, d, dtype, gen)
    sample = dist.rsample() if dist.has_rsample else dist.sample()
    if on_sphere:
        other = unit_vectors(n, d, dtype, gen)
    else:
        other = unit_vectors(n, d, dtype, gen) * log_uniform((n, 1), 1e-6, 1e6, dtype, gen)
    points = [sample.detach(), other]
    if direction is not None:
        points.append(-direction)
    log_probs = [dist.log_prob(p) for p in points]
    bad_log_prob = torch.zeros(n, dtype=torch.bool)
    for lp in log_probs:
        bad_log_prob |= not_finite_rows(lp, n)
    bad_grad = torch.zeros(n, dtype=torch.bool)
    if params:
        # Only finite terms enter the objective, so that one failure is not counted again as a gradient one.
        total = sum(torch.where(torch.isfinite(lp), lp, torch.zeros_like(lp)).sum() for lp in log_probs)
        if sample.requires_grad:
            weights = torch.randn(sample.shape, generator=gen, dtype=torch.float64).to(dtype)
            finite = torch.where(torch.isfinite(sample), sample, torch.zeros_like(sample))
            total = total + (finite * weights).sum()
        grads = torch.autograd.grad(total, params, allow_unused=True)
        for g in grads:
            bad_grad |= not_finite_rows(g, n) if g is not None else torch.zeros(n, dtype=torch.bool)
    return {
        "log_prob": int(bad_log_prob.sum()),
        "sample": int(not_finite_rows(sample, n).sum()),
        "grad": int(bad_grad.sum()),
    }


def run(n_total: int, only: str | None, seed: int) -> None:
    torch.set_num_threads(1)
    selected = {k: v for k, v in makers().items() if only is None or k == only}
    print(
        f"parameter sets per distribution: {n_total:,} (half float32, half float64); seed {seed}; "
        f"torch {torch.__version__}, 1 thread"
    )
    print(
        "\n| distribution | dtype | parameter sets | NaN/inf log_prob | NaN/inf samples "
        "| NaN/inf gradients | seconds |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, make in selected.items():
        for dtype in (torch.float32, torch.float64):
            gen = torch.Generator().manual_seed(seed)
            counts = {"log_prob": 0, "sample": 0, "grad": 0}
            done = 0
            start = time.perf_counter()
            for low, high, share in BUCKETS:
                target = math.ceil(share * n_total / 2)
                drawn = 0
                while drawn < target:
                    u = torch.rand((), generator=gen, dtype=torch.float64).item()
                    d = int(round(math.exp(math.log(low) + u * (math.log(high) - math.log(low)))))
                    n = min(target - drawn, max(1, ELEMENTS_PER_CHUNK // d))
                    for key, value in fuzz_chunk(make, n, d, dtype, gen).items():
                        counts[key] += value
                    drawn += n
                done += drawn
            seconds = time.perf_counter() - start
            print(
                f"| {name} | {str(dtype).replace('torch.', '')} | {done:,} | {counts['log_prob']:,} | "
                f"{counts['sample']:,} | {counts['grad']:,} | {seconds:.0f} |",
                flush=True,
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="parameter sets per distribution")
    parser.add_argument("--only", default=None, help="one distribution by class name")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    run(args.n, args.only, args.seed)


if __name__ == "__main__":
    main()
