"""Latent-DPS and PSLD: gradient-guided sampling of a latent diffusion model, the latent baselines
ReSample is measured against.

* **Latent-DPS** (DPS, Chung et al. 2023, on a latent model): a DDIM step (``eta = 1``: DDPM's
  ancestral sampling) from Tweedie's ``z0_hat``, then ``z_{t-1} -= weight * grad_{z_t}
  ||y - A(D(z0_hat))||`` (the norm, not its square, as in DPS).
* **PSLD** (Rout et al. 2023): Latent-DPS plus the "gluing" term ``gluing * ||z0_hat -
  E(P(D(z0_hat)))||``, which pulls ``z0_hat`` towards a fixed point of the autoencoder on images
  that agree with ``y``, ``P`` the projection onto ``{x : A x = y}``. The paper writes ``P(x) =
  A^T y + (I - A^T A) x``, the projection only where ``A A^T = I`` (inpainting); genprior uses
  ``x + A^+ (y - A x)`` on every linear task (``projection = "pinv"``, the default; ``"adjoint"``
  is the paper's formula; :mod:`genprior.physics.project`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .latent import LatentDiffusion
from .pixel import ddim_step, ddim_times
from .resample import dps_gradient, gluing_term


def guided_latent_sampling(
    y: Tensor,
    physics: Any,
    model: LatentDiffusion,
    *,
    steps: int = 250,
    weight: float = 1.0,
    gluing: float = 0.0,
    projection: str = "pinv",
    eta: float = 1.0,
    seed: int = 0,
) -> Tensor:
    """Images ``(B, C, H, W)`` in ``[0, 1]``: Latent-DPS (``gluing = 0``) or PSLD (``gluing > 0``)."""
    B, dev = y.shape[0], y.device
    g = torch.Generator().manual_seed(seed)
    ac = model.alphas_cumprod
    ts = ddim_times(steps, len(ac))

    glue = gluing_term(y, physics, model.encode, gluing, projection) if gluing > 0 else None
    z = torch.randn((B, *model.latent_shape), generator=g).to(dev)
    for i, t in enumerate(ts):
        a = ac[t]
        a_prev = ac[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(a)
        tt = torch.full((B,), t, device=dev, dtype=torch.long)
        z0, e, grad = dps_gradient(z, tt, a, y, physics, model.eps, model.decode, glue)
        if i + 1 < len(ts):
            noise = torch.randn(z.shape, generator=g).to(dev)
            z = ddim_step(z0, e, a, a_prev, eta, noise) - weight * grad
        else:
            z = z0 - weight * grad
    with torch.no_grad():
        return model.decode(z).clamp(0, 1)
