"""Placing a sample drawn around the pole e1 around a mean direction: the last step of the vMF and power
spherical samplers (Wood, 1994; De Cao and Aziz, 2020), which draw w = mu.x and a uniform tangent
direction."""

from __future__ import annotations

import torch
from torch import Tensor


def rotate_from_pole(loc: Tensor, w: Tensor, radius: Tensor, v: Tensor) -> Tensor:
    """``x = R (w, radius * v)`` for an orthogonal map R taking e1 to ``loc``.

    Args:
        loc: (..., d) unit mean directions.
        w: (...) the component along the pole, ``radius * v`` (..., d - 1) the rest: ``v`` need not be
            normalised (pass ``radius = sqrt(1 - w^2) / |v|``). Everything broadcasts.

    R = -s H with H the reflection along u = e1 + s loc, s = sign(loc_1) (s = 1 at 0):
    |u|^2 = 1 + 2 |loc_1| + |loc|^2 >= 2, so there is no cancellation or singularity (u = e1 - loc would
    vanish at loc = e1, where the gradient with respect to loc would be lost). Since v's law is invariant
    under the orthogonal maps involved, the samples' law is that of any map taking e1 to loc, and each choice
    of s is smooth in loc, so the pathwise gradient is exact. Expanded, x = c loc - s (y - c e1) with
    c = 2 u.y / u.u and u.y = w + s (loc_1 w + radius (loc_rest . v)): no u, and y built once with c in it.
    """
    mu_first, mu_rest = loc[..., 0], loc[..., 1:]
    s = torch.where(mu_first >= 0, 1.0, -1.0).to(loc.dtype)
    u_dot_u = 1 + 2 * mu_first.abs() + torch.einsum("...i,...i->...", loc, loc)
    u_dot_y = w + s * (mu_first * w + radius * torch.einsum("...i,...i->...", mu_rest, v))
    coef = 2 * u_dot_y / u_dot_u
    y = torch.cat([(w - coef).unsqueeze(-1), radius.unsqueeze(-1) * v], dim=-1)
    return torch.addcmul(coef.unsqueeze(-1) * loc, (-s).unsqueeze(-1), y)
