"""Pyro model/guide pairs: VCL (VSimCLR, VSupCon) and VJE. The training methods built on them, and the
deterministic baselines beside them, are in :mod:`vprob.methods`."""

from vprob.models.vcl import KL_MODES, VCL
from vprob.models.vje import DIRECTIONAL_MODES, VJE

__all__ = ["DIRECTIONAL_MODES", "KL_MODES", "VCL", "VJE"]
