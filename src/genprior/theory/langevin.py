"""Langevin sampling of the latent posterior of a ReLU generator.

* :func:`langevin_sample` -- unadjusted Langevin on ``p(z | y) ~ exp(-||A G(z) - y||^2 / (2 sigma^2)
  - ||z||^2 / 2)``, vectorised over chains.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..generators.random_relu import RandomReLUGenerator
from .common import (
    Operator,
    WeightsBiases,
    local_curvature,
    net_and_op,
)


@dataclass
class LangevinResult:
    """Result of :func:`langevin_sample`.

    Attributes:
        samples: ``(chains * n_samples, k)`` latent samples after burn-in and thinning.
        mean, std: their per-coordinate mean and standard deviation ``(k,)``.
        x_mean: the mean of ``G(samples)`` ``(n,)``.
        step_size: the final step size.
        chain_means: per-chain means ``(chains, k)`` (a mixing diagnostic).
        time_s: wall time.
        accept_rate: fraction of proposals taken (1 minus the guarded ones for plain Langevin;
            the Metropolis acceptance rate with ``metropolis=True``).
        guarded: proposals refused by the divergence guard.
    """

    samples: Tensor
    mean: Tensor
    std: Tensor
    x_mean: Tensor
    step_size: float
    chain_means: Tensor
    time_s: float
    accept_rate: float = 1.0
    guarded: int = 0


def _lipschitz_bound(net: RandomReLUGenerator, op: Operator) -> float:
    """``||A|| * prod ||W_i||`` (times the largest activation slope, which is 1)."""
    L = op.norm()
    for w in net.weights:
        L *= float(torch.linalg.matrix_norm(w.double(), ord=2))
    return L


def _jacobian(f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """Row-wise Jacobians ``(C, m, k)`` of ``f`` at ``z`` ``(C, k)`` by ``k`` batched JVPs."""
    cols = []
    for j in range(z.shape[1]):
        v = torch.zeros_like(z)
        v[:, j] = 1.0
        _, jv = torch.func.jvp(f, (z,), (v,))
        cols.append(jv)
    return torch.stack(cols, -1)


def langevin_sample(
    generator: RandomReLUGenerator | WeightsBiases,
    y: Any,
    A: Any = None,
    *,
    sigma: float,
    x_shape: Sequence[int] | None = None,
    n_samples: int = 200,
    burn_in: int = 1000,
    thin: int = 5,
    chains: int = 4,
    precondition: bool = True,
    precondition_every: int = 50,
    step_size: float | None = None,
    step_scale: float = 0.1,
    step_curvature: Literal["local", "bound"] = "local",
    metropolis: bool = False,
    guard: float | None = None,
    anneal: bool = True,
    anneal_from: float = 1.0,
    sign_flip: bool = True,
    init: Literal["prior"] | Any = "prior",
    seed: int = 0,
    activation: str = "relu",
    negative_slope: float = 0.2,
    output_activation: str | None = None,
) -> LangevinResult:
    """Unadjusted Langevin sampling of ``p(z | y) ~ exp(-U(z))``,
    ``U(z) = ||A G(z) - y||^2 / (2 sigma^2) + ||z||^2 / 2``, all chains in one batch.

    Update: ``z <- z - eta M grad U(z) + sqrt(2 eta) M^(1/2) xi`` with ``xi ~ N(0, I)``.

    * ``precondition=True`` (default): ``M`` is the inverse Gauss-Newton Hessian
      ``(J^T A^T A J / sigma^2 + I)^(-1)`` of each chain (``J`` the Jacobian of ``G``, exact here
      because a ReLU network is piecewise linear), refreshed every ``precondition_every`` steps of
      burn-in and then **frozen** for the sampling phase, so the kept chain is a fixed-preconditioner
      Langevin chain with the right target. In those units the posterior is well conditioned and
      ``eta = step_scale`` (a Gaussian posterior is then sampled with variance inflated by
      ``1 / (1 - eta / 2)``, 2.6 % at the default 0.1). Costs ``k`` Jacobian-vector products per
      refresh.
    * ``precondition=False``: ``M = I`` and ``eta = step_scale / (L^2 / sigma^2 + 1)`` where ``L^2``
      is the largest eigenvalue of ``J^T A^T A J`` over the chains (power iteration, at the start
      and when burn-in ends; ``step_curvature="local"``) or the global bound
      ``(||A|| prod ||W_i||)^2`` (``"bound"``). Mixing then slows with the posterior's condition
      number.

    ``step_size`` overrides ``eta``. During burn-in only, the noise level is annealed geometrically
    from ``max(anneal_from, sigma)`` down to ``sigma`` over the first half, and the sign-flip check
    of :func:`gd_invert` moves a chain from ``z`` to ``-z`` when that lowers ``U``; both only help
    the chains reach the posterior's main mode.

    Divergence guard: a step that raises ``U`` by more than ``guard`` (default ``10 k + 100``; a
    step at equilibrium changes ``U`` by O(k)) is refused, and during burn-in the preconditioner is
    refreshed where the chain stands. It fires when a chain crosses into a region of the piecewise
    linear ``G`` much steeper than its preconditioner assumed; ``LangevinResult.guarded`` counts the
    refusals. ``metropolis=True`` adds the Metropolis-Hastings correction (MALA with the same fixed
    preconditioner), which removes the discretisation bias.

    Args:
        sigma: noise level of the likelihood (> 0).
        n_samples: kept samples per chain; ``thin``: steps between kept samples.
        init: ``"prior"`` (``z ~ N(0, I)``) or initial latents ``(k,)`` / ``(chains, k)``.
    """
    t0 = time.perf_counter()
    if not sigma > 0:
        raise UserError(f"sigma {sigma} must be positive")
    if n_samples < 1 or burn_in < 0 or thin < 1 or chains < 1 or precondition_every < 1:
        raise UserError(
            "n_samples, thin, chains and precondition_every must be positive and burn_in non-negative"
        )
    if step_size is not None and not step_size > 0:
        raise UserError(f"step_size {step_size} must be positive")
    if step_curvature not in ("local", "bound"):
        raise UserError(f"unknown step_curvature {step_curvature!r}: use local or bound")
    net, op, yt = net_and_op(generator, y, A, x_shape, activation, negative_slope, output_activation)
    k = net.latent_dim
    guard = 10.0 * k + 100.0 if guard is None else float(guard)
    g = torch.Generator().manual_seed(int(seed))
    if isinstance(init, str):
        if init != "prior":
            raise UserError(f"unknown init {init!r}: use 'prior' or give latents")
        z = torch.randn((chains, k), generator=g, dtype=net.dtype)
    else:
        z = torch.as_tensor(np.asarray(init), dtype=net.dtype).reshape(-1, k)
        z = z.expand(chains, k).clone() if z.shape[0] == 1 else z.clone()
        chains = z.shape[0]

    def fwd(zz: Tensor) -> Tensor:
        return op.apply(net.vector(zz))

    def data_term(zz: Tensor) -> tuple[Tensor, Tensor]:
        """``D = ||A G(z) - y||^2 / 2`` per chain and its gradient."""
        zz = zz.detach().requires_grad_(True)
        D = 0.5 * ((fwd(zz) - yt) ** 2).sum(1)
        (gD,) = torch.autograd.grad(D.sum(), zz)
        return D.detach(), gD

    def energy(D: Tensor, zz: Tensor, s: float) -> Tensor:
        return D / s**2 + 0.5 * (zz**2).sum(1)

    eye = torch.eye(k, dtype=net.dtype)
    M = eye.expand(chains, k, k).clone()  # preconditioner, its Cholesky factor and its inverse
    C = M.clone()
    H = M.clone()

    def refresh(zz: Tensor, s: float) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            J = _jacobian(fwd, zz.detach())
            Hn = J.transpose(1, 2) @ J / s**2 + eye
            Hn = 0.5 * (Hn + Hn.transpose(1, 2))
            Mn = torch.linalg.inv(Hn)
            Mn = 0.5 * (Mn + Mn.transpose(1, 2))
            return Mn, torch.linalg.cholesky(Mn), Hn

    L2 = None
    if not precondition and step_size is None:
        L2 = (
            _lipschitz_bound(net, op) ** 2
            if step_curvature == "bound"
            else 1.5 * float(local_curvature(fwd, z.detach(), seed=seed).max())
        )

    def eta_for(s: float) -> float:
        if step_size is not None:
            return float(step_size)
        return step_scale if precondition else step_scale / (L2 / s**2 + 1.0)

    def mv(P: Tensor, v: Tensor) -> Tensor:
        return (P @ v[:, :, None])[:, :, 0]

    s_start = max(float(anneal_from), float(sigma)) if anneal else float(sigma)
    anneal_steps = burn_in // 2 if anneal else 0
    total = burn_in + n_samples * thin
    kept = []
    eta = eta_for(sigma)
    D, gD = data_term(z)
    guarded = 0
    accepted = 0
    proposed = 0
    for it in range(total):
        s = (
            s_start * (sigma / s_start) ** (it / max(anneal_steps - 1, 1))
            if it < anneal_steps
            else float(sigma)
        )
        if sign_flip and it < burn_in and it % 10 == 0:
            Dn, gDn = data_term(-z)
            jump = energy(Dn, z, s) < energy(D, z, s)
            if jump.any():
                z = torch.where(jump[:, None], -z, z)
                D = torch.where(jump, Dn, D)
                gD = torch.where(jump[:, None], gDn, gD)
        if precondition and (it == burn_in or (it < burn_in and it % precondition_every == 0)):
            M, C, H = refresh(z, s)  # frozen from it == burn_in on
        if not precondition and it == burn_in and step_size is None and step_curvature == "local":
            L2 = 1.5 * float(local_curvature(fwd, z.detach(), seed=seed).max())
        eta = eta_for(s)
        with torch.no_grad():
            grad = gD / s**2 + z
            drift = mv(M, grad) if precondition else grad
            noise = torch.randn(z.shape, generator=g, dtype=z.dtype)
            kick = mv(C, noise) if precondition else noise
            z_new = z - eta * drift + math.sqrt(2 * eta) * kick
        D_new, gD_new = data_term(z_new)
        with torch.no_grad():
            U_old, U_new = energy(D, z, s), energy(D_new, z_new, s)
            ok = torch.isfinite(U_new) & (U_new - U_old <= guard)
            n_bad = int((~ok).sum())
            if metropolis:
                grad_new = gD_new / s**2 + z_new
                drift_new = mv(M, grad_new) if precondition else grad_new
                fwd_res = z_new - z + eta * drift
                bwd_res = z - z_new + eta * drift_new
                Hq = H if precondition else eye.expand(chains, k, k)
                log_q_fwd = -(fwd_res * mv(Hq, fwd_res)).sum(1) / (4 * eta)
                log_q_bwd = -(bwd_res * mv(Hq, bwd_res)).sum(1) / (4 * eta)
                log_a = (U_old - U_new + log_q_bwd - log_q_fwd).clamp(max=0.0)
                u = torch.rand(chains, generator=g, dtype=z.dtype)
                ok = ok & (torch.log(u) < torch.nan_to_num(log_a, nan=-math.inf))
            proposed += chains
            accepted += int(ok.sum())
            guarded += n_bad
            z = torch.where(ok[:, None], z_new, z)
            D = torch.where(ok, D_new, D)
            gD = torch.where(ok[:, None], gD_new, gD)
        if n_bad and precondition and it < burn_in:
            M, C, H = refresh(z, s)
        if it >= burn_in and (it - burn_in + 1) % thin == 0:
            kept.append(z.clone())
    samples_c = torch.stack(kept, 1)  # (chains, n_samples, k)
    samples = samples_c.reshape(-1, k)
    with torch.no_grad():
        x_mean = net.vector(samples).mean(0)
    return LangevinResult(
        samples,
        samples.mean(0),
        samples.std(0),
        x_mean,
        eta,
        samples_c.mean(1),
        time.perf_counter() - t0,
        accepted / max(proposed, 1),
        guarded,
    )
