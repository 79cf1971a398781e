"""Gradient descent on the latent of a ReLU generator, with the sign-flip step.

* :func:`gd_invert` -- gradient descent (Adam or plain) on ``||A G(z) - y||^2`` with Hand &
  Voroninski's sign-flip check: every few steps compare the loss at ``z`` and ``-rho z`` and jump
  when the latter is lower (the spurious critical point of the landscape sits near ``-rho_d z*``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..generators.random_relu import RandomReLUGenerator
from .common import (
    WeightsBiases,
    local_curvature,
    net_and_op,
)


@dataclass
class GDInversionResult:
    """Result of :func:`gd_invert`.

    Attributes:
        z: best latent ``(k,)`` over the restarts (float64 tensor).
        loss: its loss ``||A G(z) - y||^2 / 2``.
        rel_residual: ``||A G(z) - y|| / ||y||``.
        success: ``rel_residual <= residual_tol``.
        z_all: final latents of all restarts ``(R, k)``; ``losses``: their losses ``(R,)``.
        flips: number of sign flips taken, summed over restarts.
        steps: iterations run (early stop when every restart fits).
        time_s: wall time.
    """

    z: Tensor
    loss: float
    rel_residual: float
    success: bool
    z_all: Tensor
    losses: Tensor
    flips: int
    steps: int
    time_s: float


def gd_invert(
    generator: RandomReLUGenerator | WeightsBiases,
    y: Any,
    A: Any = None,
    *,
    x_shape: Sequence[int] | None = None,
    steps: int = 1000,
    optimizer: Literal["gd", "adam"] = "gd",
    lr: float | None = None,
    lr_final: float = 1e-4,
    step_scale: float = 0.9,
    curvature_every: int = 100,
    sign_flip: bool = True,
    flip_every: int = 10,
    rho: float = 1.0,
    restarts: int = 4,
    seed: int = 0,
    z_init: Any = None,
    residual_tol: float = 1e-3,
    stop_tol: float = 1e-13,
    activation: str = "relu",
    negative_slope: float = 0.2,
    output_activation: str | None = None,
) -> GDInversionResult:
    """Minimise ``f(z) = ||A G(z) - y||^2 / 2`` over ``z`` by gradient descent, all restarts at once.

    Hand & Voroninski's sign flip (``sign_flip``): every ``flip_every`` steps, a restart whose loss
    at ``-rho z`` is lower than at ``z`` jumps there (and its optimiser state is reset).

    Args:
        generator: a :class:`RandomReLUGenerator` or a list of ``(W, b)``.
        y: the observation ``A G(z*) (+ noise)``.
        A: measurements (None, matrix or deepinv LinearPhysics).
        steps: iterations.
        optimizer: ``"gd"``: plain gradient descent. With ``lr=None`` each restart's step is
            ``step_scale / lambda_max(J^T A^T A J)`` at its current point (power iteration,
            re-measured every ``curvature_every`` steps and after a flip; halved for a restart
            whose loss went up), so it converges linearly on the piecewise-linear landscape.
            A given ``lr`` is a constant step. ``"adam"``: per-restart Adam with the step decaying
            geometrically from ``lr`` (default 0.05) to ``lr_final``.
        restarts: independent random initialisations ``N(0, I)`` run as one batch.
        z_init: initial latent(s) ``(k,)`` or ``(R, k)`` instead of random ones.
        residual_tol: ``success`` when ``||A G(z) - y|| / ||y|| <= residual_tol``.
        stop_tol: stop early once the best restart has relative residual below this.
    """
    t0 = time.perf_counter()
    if steps < 1 or restarts < 1 or flip_every < 1 or curvature_every < 1:
        raise UserError("steps, restarts, flip_every and curvature_every must be positive")
    if optimizer not in ("adam", "gd"):
        raise UserError(f"unknown optimizer {optimizer!r}: use gd or adam")
    if lr is not None and not lr > 0:
        raise UserError(f"lr {lr} must be positive")
    net, op, yt = net_and_op(generator, y, A, x_shape, activation, negative_slope, output_activation)
    k = net.latent_dim
    g = torch.Generator().manual_seed(int(seed))
    if z_init is not None:
        z = torch.as_tensor(np.asarray(z_init), dtype=net.dtype).reshape(-1, k).clone()
        restarts = z.shape[0]
    else:
        z = torch.randn((restarts, k), generator=g, dtype=net.dtype)
    ynorm = float(yt.norm()) or 1.0

    def fwd(zz: Tensor) -> Tensor:
        return op.apply(net.vector(zz))

    def losses(zz: Tensor) -> Tensor:
        return 0.5 * ((fwd(zz) - yt) ** 2).sum(1)

    auto = optimizer == "gd" and lr is None
    base_lr = 0.05 if lr is None else float(lr)
    m1 = torch.zeros_like(z)
    m2 = torch.zeros_like(z)
    tcount = torch.zeros(restarts, 1, dtype=net.dtype)
    b1, b2, eps = 0.9, 0.999, 1e-12
    decay = (lr_final / base_lr) ** (1.0 / max(steps - 1, 1)) if optimizer == "adam" and lr_final > 0 else 1.0
    row_step = torch.full((restarts,), base_lr, dtype=net.dtype)
    shrink = torch.ones(restarts, dtype=net.dtype)
    stale = torch.ones(restarts, dtype=torch.bool)  # curvature to (re)measure
    prev_f = torch.full((restarts,), math.inf, dtype=net.dtype)
    flips = 0
    it = 0
    for it in range(1, steps + 1):
        if sign_flip and (it - 1) % flip_every == 0:
            with torch.no_grad():
                jump = losses(-rho * z) < losses(z)
                if jump.any():
                    z = torch.where(jump[:, None], -rho * z, z)
                    m1[jump] = 0
                    m2[jump] = 0
                    tcount[jump] = 0
                    stale |= jump
                    prev_f[jump] = math.inf
                    flips += int(jump.sum())
        if auto and ((it - 1) % curvature_every == 0 or stale.any()):
            lam = local_curvature(fwd, z.detach(), iters=12, seed=seed + it)
            row_step = step_scale / lam.clamp_min(1e-12)
            shrink = torch.ones_like(shrink)
            stale[:] = False
        zz = z.detach().requires_grad_(True)
        f = losses(zz)
        (grad,) = torch.autograd.grad(f.sum(), zz)
        with torch.no_grad():
            f = f.detach()
            if float((2 * f.min()).sqrt()) / ynorm <= stop_tol:
                break  # the best restart fits to round-off
            if optimizer == "adam":
                step = base_lr * decay ** (it - 1)
                tcount += 1
                m1.mul_(b1).add_(grad, alpha=1 - b1)
                m2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                mhat = m1 / (1 - b1**tcount)
                vhat = m2 / (1 - b2**tcount)
                z = z - step * mhat / (vhat.sqrt() + eps)
            else:
                if auto:
                    shrink = torch.where(f > prev_f * (1 + 1e-9), shrink * 0.5, shrink)
                z = z - (row_step * shrink)[:, None] * grad
            prev_f = f
    with torch.no_grad():
        f = losses(z)
    best = int(torch.argmin(f))
    loss = float(f[best])
    rel = math.sqrt(2 * loss) / ynorm
    return GDInversionResult(
        z[best].detach().clone(),
        loss,
        rel,
        rel <= residual_tol,
        z.detach(),
        f.detach(),
        flips,
        it,
        time.perf_counter() - t0,
    )
