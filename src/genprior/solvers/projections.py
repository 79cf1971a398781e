"""Exact Euclidean projection onto l1 balls, batched.

For ``v`` with ``||v||_1 > r`` the projection onto ``{p : ||p||_1 <= r}`` is the soft threshold
``p = sign(v) * max(|v| - theta, 0)`` whose level ``theta > 0`` makes ``||p||_1 = r``. With
``u`` the sorted magnitudes ``u_1 >= u_2 >= ... >= u_n`` and ``S_j = u_1 + ... + u_j``,
``theta = (S_rho - r) / rho`` where ``rho = max{j : u_j > (S_j - r) / j}`` (Duchi, Shalev-Shwartz,
Singer & Chandra 2008; Condat 2016). genprior finds ``theta`` with Michelot's fixed point
(a handful of O(n) passes: compare, count, sum), falling back to the sort for any row that has not
settled after 60 passes. Every batch element is handled at once, no Python loop over the batch.
Magnitudes, sums and ``theta`` are float64 whatever the input precision, so the result is
accurate for float32 inputs with millions of entries.
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


def _project(x: Tensor, radius: float | Tensor, validate: bool = True) -> tuple[Tensor, Tensor]:
    """The projection and the (B,) mask of the elements that were outside their ball.

    ``validate=False`` skips the radius checks (and their host synchronisations) for callers that
    build a valid per-sample radius once and project on every optimisation step.
    """
    if x.dim() == 0:
        raise ValueError("project_l1_ball needs a batched tensor (B, ...)")
    b = x.shape[0]
    if validate:
        r = _radius_tensor(radius, b, x.device)
    else:
        r = torch.as_tensor(radius, dtype=torch.float64, device=x.device).expand(b)
    if b == 0 or x[0].numel() == 0:
        return x.clone(), torch.zeros(b, dtype=torch.bool, device=x.device)
    flat = x.reshape(b, -1)
    mag = flat.abs()
    l1 = mag.sum(dim=1, dtype=torch.float64)
    outside = l1 > r  # inf radius and points inside (including all-zero x) stay as they are
    if not bool(outside.any()):
        return x.clone(), torch.zeros(b, dtype=torch.bool, device=x.device)

    r_fin = torch.where(outside, r, torch.zeros_like(r))  # keeps inf out of the arithmetic
    mag64 = mag.to(torch.float64)
    theta, done = _michelot_theta(mag64, l1, r_fin, outside)
    if not bool(done.all()):  # rare: fall back to the sort for the rows that did not settle
        theta = torch.where(done, theta, _sorted_theta(mag64, r_fin))
    shrunk = (mag64 - theta.unsqueeze(1)).clamp_min(0).to(x.dtype)
    proj = torch.sign(flat) * shrunk
    # exact zeros where the radius is 0 (theta = max|v| can round to leave a tiny residue)
    proj = torch.where((r == 0).unsqueeze(1), torch.zeros_like(proj), proj)
    out = torch.where(outside.unsqueeze(1), proj, flat)
    return out.reshape(x.shape), outside


def _michelot_theta(mag: Tensor, l1: Tensor, r: Tensor, active: Tensor, max_iter: int = 60) -> tuple[Tensor, Tensor]:
    """Soft-threshold level by Michelot's fixed point, all rows at once.

    Start with every entry in the support S and ``theta = (sum_S |v| - r) / |S|``; drop the entries
    with ``|v| <= theta`` and recompute. ``theta`` only grows, and when no entry is dropped it is
    exactly the level the sort-based formula gives (Condat 2016). Each pass is one comparison and
    two masked reductions over ``(B, n)`` (``mag`` is float64): O(n) instead of the sort's
    O(n log n), and in practice a handful of passes. Returns ``(theta, settled)``.
    """
    theta = ((l1 - r) / mag.shape[1]).clamp_min(0.0)
    count = torch.full_like(theta, float(mag.shape[1]))
    done = ~active
    for _ in range(max_iter):
        support = mag > theta.unsqueeze(1)
        new_count = support.sum(dim=1).to(torch.float64)
        new_sum = torch.where(support, mag, torch.zeros_like(mag)).sum(dim=1)
        settled = new_count == count
        theta = torch.where(done, theta, ((new_sum - r) / new_count.clamp_min(1.0)).clamp_min(0.0))
        done = done | settled
        count = new_count
        if bool(done.all()):
            break
    return theta, done


def _sorted_theta(mag: Tensor, r: Tensor) -> Tensor:
    """Soft-threshold level by sorting (Duchi et al. 2008): exact, O(n log n)."""
    b, n = mag.shape
    u = torch.sort(mag, dim=1, descending=True).values
    csum = torch.cumsum(u, dim=1)
    j = torch.arange(1, n + 1, device=mag.device, dtype=torch.float64)
    cond = u * j > csum - r.unsqueeze(1)
    # cond holds on a prefix 1..rho; take the largest true index, robust to round-off.
    # For r = 0 nothing holds and rho falls to 1, theta = u_1: the result is all zeros.
    rho = torch.where(cond, j.to(torch.long).expand(b, n), torch.ones_like(j, dtype=torch.long)).amax(dim=1)
    s_rho = csum.gather(1, (rho - 1).unsqueeze(1)).squeeze(1)
    return ((s_rho - r) / rho.to(torch.float64)).clamp_min(0.0)


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
