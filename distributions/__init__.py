"""Pyro distributions on the hypersphere.

This package depends on torch and Pyro's distribution classes only, so that any Pyro model can use it
without the rest of vprob::

    from distributions import ProjectedNormal, HypersphericalUniform, PolarStudentT
"""

from distributions.hyperspherical_uniform import HypersphericalUniform
from distributions.kl import gaussian_kl_bound
from distributions.log_radial_integral import log_radial_integral, log_radial_integral_and_derivative
from distributions.polar_student_t import PolarStudentT
from distributions.power_spherical import PowerSpherical
from distributions.projected_normal import ProjectedNormal
from distributions.reparam import ProjectedNormalReparam
from distributions.von_mises_fisher import VonMisesFisher

__all__ = [
    "HypersphericalUniform",
    "PolarStudentT",
    "PowerSpherical",
    "ProjectedNormal",
    "ProjectedNormalReparam",
    "VonMisesFisher",
    "gaussian_kl_bound",
    "log_radial_integral",
    "log_radial_integral_and_derivative",
]
