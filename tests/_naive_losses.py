"""Naive line-by-line oracles of the contrastive losses (docs/maths.md): loops over anchors, written as the
equations read.

Use them in float64 on tiny batches only. Rows are L2-normalized first, as the library does by default.
Rows are indexed as in the library: row n = v·B + i is view v of image i (``z.reshape(V·B, d)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _rows(z: Tensor) -> tuple[Tensor, int, int]:
    views, batch, dim = z.shape
    return F.normalize(z, dim=-1).reshape(views * batch, dim), views, batch


def naive_supcon(z: Tensor, labels: Tensor, tau: float) -> Tensor:
    """ℓ_i = −(1/|P(i)|) Σ_{p∈P(i)} log( exp(z_i·z_p/τ) / Σ_{a≠i} exp(z_i·z_a/τ) ).

    Mean over the anchors with P(i) ≠ ∅ (anchors without a positive are left out)."""
    x, _, batch = _rows(z)
    y = [int(labels[n % batch]) for n in range(x.shape[0])]
    losses = []
    for i in range(x.shape[0]):
        positives = [p for p in range(x.shape[0]) if p != i and y[p] == y[i]]
        if not positives:
            continue  # an anchor without a positive is left out of the mean
        denominator = sum(torch.exp(x[i] @ x[a] / tau) for a in range(x.shape[0]) if a != i)
        log_probs = [torch.log(torch.exp(x[i] @ x[p] / tau) / denominator) for p in positives]
        losses.append(-sum(log_probs) / len(positives))
    return torch.stack(losses).mean()


def naive_info_nce(z: Tensor, tau: float) -> Tensor:
    """NT-Xent with V views: the positives of an anchor are the V−1 other views of its image."""
    return naive_supcon(z, torch.arange(z.shape[1]), tau)


def reference_supcon_loss(features: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """The reference SupContrast ``SupConLoss.forward`` (contrast_mode "all", base_temperature = temperature).

    Transcribed from HobbitLong/SupContrast losses.py, features (B, V, d) normalized, mask in the features'
    dtype. Anchors without a positive divide by zero there; only call it where every anchor has one.
    """
    batch_size = features.shape[0]
    labels = labels.contiguous().view(-1, 1)
    mask = torch.eq(labels, labels.T).to(features.dtype)
    contrast_count = features.shape[1]
    contrast_feature = torch.cat(torch.unbind(features, dim=1), dim=0)
    anchor_feature, anchor_count = contrast_feature, contrast_count
    anchor_dot_contrast = torch.div(torch.matmul(anchor_feature, contrast_feature.T), temperature)
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    mask = mask.repeat(anchor_count, contrast_count)
    logits_mask = torch.scatter(
        torch.ones_like(mask), 1, torch.arange(batch_size * anchor_count).view(-1, 1), 0
    )
    mask = mask * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    loss = -(temperature / temperature) * mean_log_prob_pos
    return loss.view(anchor_count, batch_size).mean()


def naive_proj_nce_terms(
    z: Tensor, labels: Tensor, tau: float, projection: str, mlp=None, bandwidth: float = 1.5
) -> tuple[Tensor, Tensor]:
    """(I_proj, R) of docs/maths.md, ProjNCE, g₊ of row i estimated from the rows other than i, g₋(c_j) = z_j.

    s⁺_ij = z_i·g₊(c_j)/τ, s⁻_ij = z_i·z_j/τ, m_i = (1/(N−1)) Σ_{j≠i} exp(s⁻_ij),
    I_proj = mean_i −log( exp(s⁺_ii) / Σ_{j≠i} exp(s⁻_ij) ),
    R = mean_i (1/(N−1)) Σ_{j≠i} (exp(s⁺_ij) − exp(s⁻_ij)) / m_i, over anchors with a positive.
    """
    x, _, batch = _rows(z)
    n = x.shape[0]
    y = [int(labels[k % batch]) for k in range(n)]
    classes = sorted(set(y))
    one_hot = {c: torch.eye(len(classes), dtype=x.dtype)[classes.index(c)] for c in classes}

    def epanechnikov(t: Tensor) -> Tensor:
        return torch.clamp(1 - t**2, min=0)

    # Nadaraya–Watson kernel between the one-hot label vectors of two classes.
    kernel = {
        (a, b): epanechnikov(torch.linalg.norm(one_hot[a] - one_hot[b]) / bandwidth)
        for a in classes
        for b in classes
    }

    def g_plus(c: int, i: int) -> Tensor:
        members = torch.stack([x[k] for k in range(n) if k != i and y[k] == c])
        if projection == "centroid":
            return members.mean(dim=0)
        if projection == "median":
            return torch.quantile(members, 0.5, dim=0)  # midpoint of the two middle values for even counts
        if projection == "mlp":
            return mlp(members.mean(dim=0))
        if projection == "orthogonal":  # Nadaraya–Watson on one-hot label vectors, row i left out
            numerator = sum(kernel[c, y[k]] * x[k] for k in range(n) if k != i)
            return numerator / sum(kernel[c, y[k]] for k in range(n) if k != i)
        raise ValueError(projection)

    i_terms, r_terms = [], []
    for i in range(n):
        if not any(k != i and y[k] == y[i] for k in range(n)):
            continue
        g = {c: g_plus(c, i) for c in classes}
        s_plus = [x[i] @ g[y[j]] / tau for j in range(n)]
        s_minus = [x[i] @ x[j] / tau for j in range(n)]
        others = [j for j in range(n) if j != i]
        m_i = sum(torch.exp(s_minus[j]) for j in others) / (n - 1)
        i_terms.append(-torch.log(torch.exp(s_plus[i]) / sum(torch.exp(s_minus[j]) for j in others)))
        r_terms.append(sum(torch.exp(s_plus[j]) - torch.exp(s_minus[j]) for j in others) / (n - 1) / m_i)
    return torch.stack(i_terms).mean(), torch.stack(r_terms).mean()


def naive_cct(
    z: Tensor, t_pos: float, t_neg: float, detach_weights: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """CACR: L_CA + L_CR with cost |a − b|², and the weights (V, B, V−1), (pairs, B, B−1)."""
    z = F.normalize(z, dim=-1)
    views, batch, _ = z.shape

    def cost(a: Tensor, b: Tensor) -> Tensor:
        return ((a - b) ** 2).sum()

    def weights_of(costs: Tensor, t: float) -> Tensor:
        return torch.softmax(t * (costs.detach() if detach_weights else costs), dim=0)

    attraction, w_pos = [], []
    for v in range(views):
        for i in range(batch):
            costs = torch.stack([cost(z[v, i], z[u, i]) for u in range(views) if u != v])
            w = weights_of(costs, +t_pos)  # far positives weigh more
            attraction.append((w * costs).sum())
            w_pos.append(w)
    repulsion, w_neg = [], []
    for x in range(views):
        for y in range(x + 1, views):
            for i in range(batch):
                costs = torch.stack([cost(z[x, i], z[y, j]) for j in range(batch) if j != i])
                w = weights_of(costs, -t_neg)  # close negatives weigh more
                repulsion.append((w * costs).sum())
                w_neg.append(w)
    loss = torch.stack(attraction).mean() - torch.stack(repulsion).mean()
    pairs = views * (views - 1) // 2
    return (
        loss,
        torch.stack(w_pos).view(views, batch, views - 1),
        torch.stack(w_neg).view(pairs, batch, batch - 1),
    )
