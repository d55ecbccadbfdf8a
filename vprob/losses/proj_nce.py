"""ProjNCE (Jeong & Hero 2025): InfoNCE with projection functions of the class and an adjustment term R.

The reading of ProjNCE (docs/maths.md) implemented here. For anchor row i (N = V·B rows, every sum over j
leaves out j = i):

    s⁺_ij = z_i·g₊(c_j)/τ,   s⁻_ij = z_i·g₋(c_j)/τ = z_i·z_j/τ,   m_i = (1/(N−1)) Σ_{j≠i} exp(s⁻_ij)
    I_proj = mean_i −log( exp(s⁺_ii) / Σ_{j≠i} exp(s⁻_ij) )
    R      = mean_i (1/(N−1)) Σ_{j≠i} (exp(s⁺_ij) − exp(s⁻_ij)) / m_i  =  mean_i [ exp(lse⁺_i − lse⁻_i) − 1 ]
    ProjNCE = I_proj + β R

with lse^±_i = log Σ_{j≠i} exp(s^±_ij). R is evaluated in that log-space form (``expm1`` of a difference of
two max-shifted log-sum-exps), which is the max-shifted ratio of METHODS with the shift folded into each lse.

Projection functions g₊ (choices, documented as such; g₋(c_j) = z_j always). For anchor i, every g₊ is
estimated from the batch with row i held out, so that an anchor never scores against itself and the
critic only depends on the other rows. For a class c ≠ c_i that is the class's own estimate; for the
anchor's class it is the estimate from its positives (the other rows of c_i):

- "centroid": mean of the class rows (the anchor's positives for its own class), not renormalized.
  Then s⁺_ii = mean_{p∈P(i)} s⁻_ip and I_proj is SupCon exactly (same code path, bitwise equal).
- "median": coordinate-wise median of the class rows (midpoint of the two middle values for an even count,
  as numpy.median), not renormalized.
- "orthogonal": Nadaraya–Watson estimate of E[z | c] with the Epanechnikov kernel K(t) = max(0, 1 − t²)
  on the one-hot label vectors, t = |e_c − e_{y_k}| / h: rows of class c weigh 1, rows of any other class
  weigh κ = max(0, 1 − 2/h²) (as |e_a − e_b| = √2), i.e.
  g₊(c) = (Σ_{k∈c} z_k + κ Σ_{k∉c} z_k) / (n_c + κ(N' − n_c)) over the N' rows other than the anchor.
  h <= √2 gives the class mean (= "centroid"); the default h = 1.5 (κ = 1/9) shrinks it toward the batch
  mean.
- "mlp": a learnable map of the centroid, g₊(c) = mlp(centroid(c)), with ``mlp`` an :class:`MLPProjection`
  (identity at initialization, so training starts from "centroid").

Anchors whose class has no other row (possible only with V = 1) are left out of both means, as in ``supcon``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vprob.losses._batch import ContrastBatch, anchor_mean, contrast_batch
from vprob.losses._checks import (
    check_chunk_size,
    check_embeddings,
    check_finite,
    check_labels,
    check_positive,
    full_precision,
    prepare,
)
from vprob.losses.chunked import masked_logsumexp
from vprob.losses.log_softmax import held_out_centroid, log_softmax_terms

PROJECTIONS = ("centroid", "median", "orthogonal", "mlp")


class MLPProjection(nn.Module):
    """Learnable projection g(c) = x + W₂ relu(W₁ x + b₁) + b₂ of a class centroid x (d → d).

    The last layer starts at zero, so the map starts as the identity (ProjNCE "mlp" = "centroid" at step 0).
    Output not renormalized. Pass the module as ``proj_nce(..., projection="mlp", mlp=module)`` and give its
    parameters to the optimizer.
    """

    def __init__(self, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = dim if hidden is None else hidden
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., d) → (..., d)."""
        return x + self.net(x)


def proj_nce(
    z: Tensor,
    labels: Tensor,
    tau: float = 0.07,
    *,
    projection: str = "centroid",
    beta: float = 1.0,
    normalize: bool = True,
    mlp: nn.Module | None = None,
    bandwidth: float = 1.5,
    chunk_size: int | None = None,
    gather: bool = False,
) -> Tensor:
    """ProjNCE = I_proj + β R (equations in the module docstring).

    Args:
        z: (V, B, d) embeddings, views first (V >= 1; positives are the other rows of the same class).
        labels: (B,) integer class of each image.
        tau: temperature τ > 0.
        projection: "centroid" (default; with β = 0 equal to ``supcon``), "median", "orthogonal" or "mlp".
        beta: weight β of the adjustment term R (1 is the paper's main loss; 5 and 10 are also studied).
            With β = 0, R is not computed.
        normalize: L2-normalize the rows inside (in float32) first; pass False if they already are.
        mlp: the :class:`MLPProjection` (any d → d module) used by projection="mlp".
        bandwidth: h of the Epanechnikov kernel of projection="orthogonal".
        chunk_size: as in ``supcon``; applies to both log-sum-exps (rows and classes).
        gather: as in ``supcon`` (each process's rows are its anchors, every process's rows are contrast rows,
            the projections are estimated on the gathered batch).
    Returns:
        Scalar loss, float32 (float64 for float64 input).
    """
    beta = check_finite(beta, "beta")
    i_proj, adjustment = _proj_nce(
        z, labels, tau, projection, normalize, mlp, bandwidth, chunk_size, gather, with_adjustment=beta != 0
    )
    return i_proj if adjustment is None else i_proj + beta * adjustment


def proj_nce_terms(
    z: Tensor,
    labels: Tensor,
    tau: float = 0.07,
    *,
    projection: str = "centroid",
    normalize: bool = True,
    mlp: nn.Module | None = None,
    bandwidth: float = 1.5,
    chunk_size: int | None = None,
    gather: bool = False,
) -> tuple[Tensor, Tensor]:
    """The two parts (I_proj, R) of ProjNCE, each a scalar; arguments as in :func:`proj_nce`."""
    return _proj_nce(
        z, labels, tau, projection, normalize, mlp, bandwidth, chunk_size, gather, with_adjustment=True
    )


def _proj_nce(z, labels, tau, projection, normalize, mlp, bandwidth, chunk_size, gather, *, with_adjustment):
    check_embeddings(z)
    labels = check_labels(labels, z.shape[1])
    tau = check_positive(tau, "tau")
    bandwidth = check_positive(bandwidth, "bandwidth")
    chunk_size = check_chunk_size(chunk_size)
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
    if (projection == "mlp") != (mlp is not None):
        raise ValueError("mlp: pass an MLPProjection module exactly when projection='mlp'")
    with full_precision(z.device):
        batch = contrast_batch(prepare(z, normalize), labels, gather=gather)
        table, own, anchor_extra, table_extra = _projections(batch, projection, mlp, bandwidth)
        log_denominator, positive = log_softmax_terms(batch, own, tau, chunk_size)
        i_proj = anchor_mean(log_denominator - positive, batch)
        if not with_adjustment:
            return i_proj, None
        log_numerator = _log_sum_exp_positive(
            batch, table, positive, anchor_extra, table_extra, tau, chunk_size
        )
        return i_proj, anchor_mean(torch.expm1(log_numerator - log_denominator), batch)


def _log_sum_exp_positive(batch, table, positive, anchor_extra, table_extra, tau, chunk_size) -> Tensor:
    """lse⁺_i = log Σ_{j≠i} exp(s⁺_ij), grouping the rows j by class.

    The n_c rows of a class c ≠ c_i share the score z_i·g₊(c)/τ (bias log n_c); the n_{c_i} − 1 other rows of
    the anchor's own class share s⁺_ii. ``anchor_extra``/``table_extra`` add a rank-one term ρ_i e_c/τ to the
    scores (the held-out correction of "orthogonal"), folded in as one more feature column.
    """
    classes = batch.anchor_classes
    others = (batch.counts[classes] - 1).to(positive.dtype)
    own_class = torch.log(others) + positive  # −inf for anchors without a positive; they are masked out
    if batch.counts.shape[0] == 1:
        return own_class
    anchors = batch.anchors
    if anchor_extra is not None:
        anchors = torch.cat([anchors, anchor_extra[:, None]], dim=1)
        table = torch.cat([table, table_extra[:, None]], dim=1)
    log_counts = torch.log(batch.counts.to(positive.dtype))
    other_classes = masked_logsumexp(
        anchors, table, classes, 1.0 / tau, bias=log_counts, chunk_size=chunk_size
    )
    return torch.logaddexp(other_classes, own_class)


def _projections(batch: ContrastBatch, projection: str, mlp: nn.Module | None, bandwidth: float):
    """g₊ for every class (K, d) and for each anchor's own class with the anchor held out (n, d).

    Also returns the rank-one score correction (anchor_extra (n,), table_extra (K,)) ("orthogonal"), or Nones.
    """
    contrast, classes, counts = batch.contrast, batch.classes, batch.counts
    dtype = contrast.dtype
    class_sums = contrast.new_zeros(counts.shape[0], contrast.shape[1]).index_add(0, classes, contrast)
    class_means = class_sums / counts.to(dtype)[:, None]
    if projection == "centroid":
        return class_means, held_out_centroid(batch), None, None
    if projection == "mlp":
        return _apply(mlp, class_means), _apply(mlp, held_out_centroid(batch)), None, None
    if projection == "median":
        return _class_medians(batch)
    # "orthogonal": Nadaraya–Watson weights 1 (same class), kappa (other classes), on all rows but the anchor.
    kappa = max(0.0, 1.0 - 2.0 / bandwidth**2)
    num_rows = contrast.shape[0]
    weighted = class_sums + kappa * (class_sums.sum(dim=0) - class_sums)  # (K, d) with every row
    mass = counts.to(dtype) + kappa * (num_rows - counts.to(dtype))
    own_classes = batch.anchor_classes
    own_row = contrast.index_select(0, batch.self_index)
    # Own class: drop the anchor (weight 1); other classes: drop it from the kappa part.
    own_mass = mass[own_classes] - 1  # 0 only for anchors without a positive (masked out)
    own = (weighted[own_classes] - own_row) / torch.where(own_mass > 0, own_mass, 1.0)[:, None]
    table = weighted / (mass - kappa)[:, None]
    if kappa == 0.0:
        return table, own, None, None
    # z_i·(weighted_c − κ z_i)/(mass_c − κ): the −κ|z_i|²/(mass_c − κ) part is a rank-one term.
    anchor_extra = (batch.anchors * own_row).sum(dim=-1)
    return table, own, anchor_extra, -kappa / (mass - kappa)


def _apply(mlp: nn.Module, x: Tensor) -> Tensor:
    # Run the module in its own parameter dtype (a float32 module on float64 rows works), return ours.
    parameter = next(mlp.parameters(), None)
    inner = x if parameter is None else x.to(parameter.dtype)
    return mlp(inner).to(x.dtype)


def _class_medians(batch: ContrastBatch):
    """Coordinate-wise medians: of every class (K, d), and of each anchor's class without the anchor (n, d).

    Every column is ordered by (class, value) with two sorts; the median is then read at fixed positions, and
    holding the anchor out shifts the positions at or after its rank by one. Gradients flow to the middle
    element(s) through ``gather``.
    """
    contrast, classes, counts = batch.contrast, batch.classes, batch.counts
    num_rows, dim = contrast.shape
    by_value = contrast.detach().argsort(dim=0)
    by_class = classes[by_value].argsort(dim=0, stable=True)
    order = by_value.gather(0, by_class)  # (m, d): row at each sorted position, classes in blocks
    values = contrast.gather(0, order)
    starts = counts.cumsum(0) - counts
    table = 0.5 * (values[starts + (counts - 1) // 2] + values[starts + counts // 2])

    positions = torch.empty_like(order)
    positions.scatter_(0, order, torch.arange(num_rows, device=order.device)[:, None].expand(num_rows, dim))
    own_classes = batch.anchor_classes
    start = starts[own_classes][:, None]
    rank_in_class = positions[batch.self_index] - start  # (n, d)
    remaining = counts[own_classes][:, None] - 1

    def held_out(k: Tensor) -> Tensor:
        # k-th smallest of the class without the anchor (k may be −1 for anchors without a positive).
        index = (start + k + (k >= rank_in_class).long()).clamp(0, num_rows - 1)
        return values.gather(0, index)

    own = 0.5 * (held_out((remaining - 1) // 2) + held_out(remaining // 2))
    return table, own, None, None
