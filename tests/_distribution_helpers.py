"""Independent references and small helpers for the distribution tests (no vprob code is used here).

The references are built from the definition with ``mpmath`` (30 significant digits): the radial integral
by adaptive quadrature, and the projected-normal log density from A, b, c computed in arbitrary precision
from the exact binary values of the test's float inputs.
"""

from __future__ import annotations

import functools
import math

import mpmath
import numpy as np
import torch

MP_DPS = 30


@functools.cache
def mp_log_radial_integral(k: int, t: float) -> mpmath.mpf:
    """log of int_0^inf r^k exp(-(r - t)^2 / 2) dr by mpmath.quad in s = log r.

    The integrand is split at the Laplace point (the root of r^2 - t r - (k + 1) = 0) and at multiples of
    its width, so that tanh-sinh quadrature resolves the peak for any t, including |t| = 1e7; the left
    cut-off leaves out less than exp(-150) of the mass.
    """
    with mpmath.workdps(MP_DPS):
        t = mpmath.mpf(t)
        a = k + 1
        big_d = mpmath.sqrt(t * t + 4 * a)
        r = (t + big_d) / 2 if t >= 0 else 2 * a / (big_d - t)
        s0 = mpmath.log(r)
        width = mpmath.sqrt(1 / (r * big_d))
        g0 = a * s0 - (r - t) ** 2 / 2

        def integrand(s):
            return mpmath.exp(a * s - (mpmath.exp(s) - t) ** 2 / 2 - g0)

        left = s0 - 40 * width - 1 - mpmath.mpf(150) / a
        points = [left] + [s0 + c * width for c in (-10, -3, 0, 3, 10, 40)]
        return g0 + mpmath.log(mpmath.quad(integrand, points))


def mp_log_radial_integral_pcfd(k: int, t) -> mpmath.mpf:
    """The same through the parabolic-cylinder identity J_k(t) = k! exp(-t^2/4) D_{-k-1}(-t)."""
    with mpmath.workdps(MP_DPS):
        t = mpmath.mpf(t)
        return mpmath.loggamma(k + 1) - t * t / 4 + mpmath.log(mpmath.pcfd(-k - 1, -t))


def mp_projected_normal_log_prob(loc, scale, value) -> mpmath.mpf:
    """log PN(value; loc, diag(scale^2)) from the definition, for one event (1-d array-likes of length d).

    ``scale`` may have length 1 (isotropic) or d. A, b, c are accumulated in mpmath from the exact binary
    values of the inputs, so the reference does not inherit any floating-point cancellation.
    """
    loc = [mpmath.mpf(float(x)) for x in np.asarray(loc, dtype=np.float64).ravel()]
    value = [mpmath.mpf(float(x)) for x in np.asarray(value, dtype=np.float64).ravel()]
    scale = [mpmath.mpf(float(x)) for x in np.asarray(scale, dtype=np.float64).ravel()]
    d = len(loc)
    if len(scale) == 1:
        scale = scale * d
    with mpmath.workdps(MP_DPS):
        prec = [1 / (s * s) for s in scale]
        big_a = mpmath.fsum(p * u * u for p, u in zip(prec, value, strict=True))
        b = mpmath.fsum(p * u * m for p, u, m in zip(prec, value, loc, strict=True))
        c = mpmath.fsum(p * m * m for p, m in zip(prec, loc, strict=True))
        log_det = mpmath.fsum(2 * mpmath.log(s) for s in scale)
        t = b / mpmath.sqrt(big_a)
        return (
            -mpmath.mpf(d) / 2 * mpmath.log(2 * mpmath.pi)
            - log_det / 2
            - mpmath.mpf(d) / 2 * mpmath.log(big_a)
            - (c - b * b / big_a) / 2
            + mp_log_radial_integral(d - 1, t)
        )


def log_sphere_area(d: int) -> float:
    """log |S^{d-1}| = log 2 + (d/2) log pi - lgamma(d/2)."""
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


def uniform_sphere(n: int, d: int, dtype=torch.float64, generator=None) -> torch.Tensor:
    """n points uniform on S^{d-1} (normalized standard normals)."""
    x = torch.randn(n, d, dtype=dtype, generator=generator)
    return x / x.norm(dim=-1, keepdim=True)


def rel_err(actual: float, expected: float) -> float:
    """|actual - expected| / max(1, |expected|): the accuracy measure of the brief."""
    return abs(actual - expected) / max(1.0, abs(expected))
