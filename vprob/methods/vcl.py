"""VSimCLR and VSupCon: variational contrastive learning (:class:`vprob.models.VCL`) as training methods."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from vprob.methods.base import CHUNK_SIZE, DIM, HEAD_HIDDEN, TAU, Capabilities, Method
from vprob.models.vcl import KL_MODES, POSTERIORS, VCL
from vprob.options import Option, non_negative, positive

KL = Option(
    "kl",
    str,
    "bound",
    "VCL's KL term: the Gaussian bound (analytic) or the exact Monte Carlo KL",
    choices=KL_MODES,
)
POSTERIOR = Option(
    "posterior",
    str,
    "projected_normal",
    "VCL's posterior family (vmf, power_spherical: exact analytic KL, so --kl does not apply)",
    choices=POSTERIORS,
)
KL_WEIGHT = non_negative("beta", float, 1.0, "VCL: weight of the KL divided by d")
# The contrastive term scales about as 1/tau: at tau 0.5 it is ~7x smaller than at the paper's 0.07, so the
# same beta weighs the KL ~7x more against it. With a reference temperature the weight is given in the
# paper's units: beta_effective = beta * reference / tau keeps the ratio it has at the reference.
KL_REFERENCE_TAU = positive(
    "kl_reference_tau",
    float,
    None,
    "VCL: give beta relative to the contrastive "
    "term at this temperature (the paper's: 0.07): the KL weight becomes beta * "
    "kl_reference_tau / tau (default: beta as given)",
    nullable=True,
)


class VSimCLR(VCL, Method):
    """VCL with InfoNCE on the posterior samples (unsupervised)."""

    name = "vsimclr"
    summary = "VSimCLR: variational SimCLR, projected normal posterior (VCL)"
    capabilities = Capabilities(
        variational=True, distributed=True, uncertainty=True, spherical_posterior=True
    )
    options = (DIM, HEAD_HIDDEN, TAU, POSTERIOR, KL, KL_WEIGHT, KL_REFERENCE_TAU, CHUNK_SIZE)

    def __init__(
        self,
        encoder: nn.Module,
        dim: int = 128,
        head_hidden: int | None = None,
        tau: float = 0.07,
        kl: str = "bound",
        beta: float = 1.0,
        kl_reference_tau: float | None = None,
        chunk_size: int | None = None,
        gather: bool = False,
        posterior: str = "projected_normal",
    ) -> None:
        effective = beta if kl_reference_tau is None else beta * kl_reference_tau / tau
        super().__init__(
            encoder,
            dim,
            supervised=self.capabilities.needs_labels,
            kl=kl,
            beta=effective,
            tau=tau,
            head_hidden=head_hidden,
            chunk_size=chunk_size,
            gather=gather,
            posterior=posterior,
        )
        self.kl_reference_tau = kl_reference_tau


class VSupCon(VSimCLR):
    """VCL with SupCon on the posterior samples (labels required)."""

    name = "vsupcon"
    summary = "VSupCon: variational SupCon, projected normal posterior (VCL)"
    capabilities = replace(VSimCLR.capabilities, needs_labels=True)
