"""Exact Euclidean projection onto l1 balls, batched.

For ``v`` with ``||v||_1 > r`` the projection onto ``{p : ||p||_1 <= r}`` is the soft threshold
``p = sign(v) * max(|v| - theta, 0)`` whose level ``theta > 0`` makes ``||p||_1 = r``. With
``u`` the sorted magnitudes ``u_1 >= u_2 >= ... >= u_n`` and ``S_j = u_1 + ... + u_j``,
``theta = (S_rho - r) / rho`` where ``rho = max{j : u_j > (S_j - r) / j}`` (Duchi, Shalev-Shwartz,
Singer & Chandra 2008; Condat 2016). Every batch element is handled at once: one sort, one
cumulative sum and one gather over the ``(B, n)`` matrix, no Python loop over the batch. The
partial sums and ``theta`` are formed in float64 whatever the input precision, so the result
is accurate for float32 inputs with millions of entries.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import UserError

__all__ = ["project_l1_ball", "project_l1_ball_around"]


def _radius_tensor(radius: float | Tensor, batch: int, device: torch.device) -> Tensor:
    r = torch.as_tensor(radius, dtype=torch.float64).to(device)
    if r.dim() == 0:
        r = r.expand(batch)
    elif r.dim() == 1 and r.shape[0] in (1, batch):
        r = r.expand(batch)
    else:
        raise UserError(
            f"l1 radius of shape {tuple(r.shape)} does not match a batch of {batch}: give a number or a ({batch},) tensor"
        )
    if bool(torch.isnan(r).any()) or bool((r < 0).any()):
        raise UserError("l1 radius is negative or NaN: give a radius >= 0 (inf disables the projection)")
    return r


def project_l1_ball(x: Tensor, radius: float | Tensor) -> Tensor:
    """Project each batch element of ``x`` onto the l1 ball ``{v : ||v||_1 <= radius}``.

    Args:
        x: ``(B, ...)`` tensor; each ``x[b]`` is flattened over all its dimensions.
        radius: a number, or a ``(B,)`` tensor of per-element radii, each ``>= 0``;
            ``inf`` leaves the element unchanged, ``0`` maps it to zeros.

    Returns a new tensor of ``x``'s shape, dtype and device: elements already inside their ball
    are returned exactly as they are, the others land on the sphere ``||p||_1 = radius`` (up to
    round-off).
    """
    return _project(x, radius)[0]


def _project(x: Tensor, radius: float | Tensor) -> tuple[Tensor, Tensor]:
    """The projection and the (B,) mask of the elements that were outside their ball."""
    if x.dim() == 0:
        raise ValueError("project_l1_ball needs a batched tensor (B, ...)")
    b = x.shape[0]
    r = _radius_tensor(radius, b, x.device)
    if b == 0 or x[0].numel() == 0:
        return x.clone(), torch.zeros(b, dtype=torch.bool, device=x.device)
    flat = x.reshape(b, -1)
    n = flat.shape[1]
    mag = flat.abs()
    l1 = mag.sum(dim=1, dtype=torch.float64)
    outside = l1 > r  # inf radius and points inside (including all-zero x) stay as they are
    if not bool(outside.any()):
        return x.clone(), torch.zeros(b, dtype=torch.bool, device=x.device)

    u = torch.sort(mag, dim=1, descending=True).values
    csum = torch.cumsum(u, dim=1, dtype=torch.float64)
    j = torch.arange(1, n + 1, device=x.device, dtype=torch.float64)
    r_fin = torch.where(outside, r, torch.zeros_like(r)).unsqueeze(1)  # keeps inf out of the arithmetic
    cond = u.to(torch.float64) * j > csum - r_fin
    # cond holds on a prefix 1..rho; take the largest true index, robust to round-off.
    # For r = 0 nothing holds and rho falls to 1, theta = u_1: the result is all zeros.
    rho = torch.where(cond, j.to(torch.long).expand(b, n), torch.ones_like(j, dtype=torch.long)).amax(dim=1)
    s_rho = csum.gather(1, (rho - 1).unsqueeze(1)).squeeze(1)
    theta = ((s_rho - r_fin.squeeze(1)) / rho.to(torch.float64)).clamp_min(0.0)
    shrunk = (mag.to(torch.float64) - theta.unsqueeze(1)).clamp_min(0).to(x.dtype)
    proj = torch.sign(flat) * shrunk
    # exact zeros where the radius is 0 (theta = max|v| can round to leave a tiny residue)
    proj = torch.where((r == 0).unsqueeze(1), torch.zeros_like(proj), proj)
    out = torch.where(outside.unsqueeze(1), proj, flat)
    return out.reshape(x.shape), outside


def project_l1_ball_around(x: Tensor, center: Tensor, radius: float | Tensor) -> Tensor:
    """Project onto the l1 ball of ``radius`` centred at ``center``: ``center + P(x - center)``.

    ``center`` must broadcast to ``x``'s shape (e.g. one ``(1, ...)`` centre for the whole batch).
    Elements already inside the ball are returned exactly as they are.
    """
    center = center.to(device=x.device, dtype=x.dtype)
    d = x - center
    p, outside = _project(d, radius)
    out = center + p
    return torch.where(outside.view(-1, *([1] * (x.dim() - 1))), out, x)
