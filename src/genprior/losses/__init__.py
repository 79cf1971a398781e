"""Loss terms shared by the solvers. Every function returns one value per image, shape ``(B,)``."""

from __future__ import annotations

import torch
from torch import Tensor


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def fidelity(
    ax: Tensor, y: Tensor, kind: str = "mse", deadzone: float = 0.0, reduction: str = "mean"
) -> Tensor:
    """Measurement fidelity between ``A(x)`` and ``y``, per image.

    Args:
        kind: ``"mse"`` (squared error) or ``"l1"`` (absolute error).
        deadzone: residuals smaller than this (in absolute value) cost nothing; for ``"l1"`` this is
            the dead-zone L1 loss robust to bounded noise. ``0`` disables it.
        reduction: ``"mean"`` over measurement entries, or ``"sum"`` (Bora et al.'s
            ``||y - A G(z)||^2``).
    """
    r = _flat(ax - y)
    if deadzone > 0:
        r = torch.sign(r) * torch.relu(r.abs() - deadzone)
    if kind == "mse":
        e = r.pow(2)
    elif kind == "l1":
        e = r.abs()
    else:
        raise ValueError(f"unknown fidelity kind {kind!r}: use 'mse' or 'l1'")
    if reduction == "mean":
        return e.mean(dim=1)
    if reduction == "sum":
        return e.sum(dim=1)
    raise ValueError(f"unknown reduction {reduction!r}: use 'mean' or 'sum'")


def geocross(latents: Tensor) -> Tensor:
    """PULSE's geodesic cross loss on an extended latent ``(B, n, D)``, per image.

    The mean over all ordered pairs ``(i, j)`` of the squared angle between rows ``i`` and ``j``,
    times ``D / 8`` (PULSE's scaling for its 18x512 W+). It pulls the rows of W+ towards each
    other, i.e. towards a code the mapping network could have produced. ``n < 2`` gives zeros.
    """
    if latents.dim() != 3:
        raise ValueError("geocross expects latents of shape (B, n, D)")
    b, n, d = latents.shape
    if n < 2:
        return latents.new_zeros(b)
    xi = latents.unsqueeze(2)
    xj = latents.unsqueeze(1)
    diff = (xi - xj).norm(dim=-1)
    summ = (xi + xj).norm(dim=-1)
    angle = 2 * torch.atan2(diff, summ)
    return angle.pow(2).mean(dim=(1, 2)) * d / 8


def latent_prior(latents: list[Tensor]) -> Tensor:
    """Squared l2 norm of the latents (a Gaussian prior's negative log-density up to a factor 2)."""
    return sum(_flat(z).pow(2).sum(dim=1) for z in latents)
