"""The variance-preserving SDE with a linear noise schedule (Song et al. 2021, "VP SDE").

Forward: ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW`` on ``t in [0, 1]``, ``beta(t) = beta_min +
t (beta_max - beta_min)``, so ``x_t = sqrt(abar(t)) x_0 + sqrt(1 - abar(t)) eps`` with
``log abar(t) = -(beta_min t + (beta_max - beta_min) t^2 / 2)``. A network ``eps_theta(x_t, t)``
predicts ``eps``; the score of ``p_t`` is ``-eps_theta / sqrt(1 - abar)``.

Annealed Langevin works with noise levels ``sigma`` of the variance-*exploding* view, ``x + sigma
eps``: since ``sqrt(abar) (x + sigma eps)`` is ``x_t`` when ``sigma^2 = (1 - abar) / abar``, the
score of ``x + sigma eps`` is ``-eps_theta(sqrt(abar) x, t(sigma)) / sigma``
(:meth:`VPSDE.t_of_sigma`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class VPSDE:
    beta_min: float = 0.1  # beta(0), as in the paper and SGILO's code
    beta_max: float = 20.0  # beta(1)

    def log_abar(self, t: Tensor) -> Tensor:
        return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t)

    def abar(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_abar(t))

    def beta(self, t: Tensor) -> Tensor:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def sigma_of_t(self, t: float) -> float:
        """The variance-exploding noise level of time ``t``: ``sqrt((1 - abar) / abar)``."""
        la = float(self.log_abar(torch.tensor(float(t), dtype=torch.float64)))
        return math.sqrt(math.expm1(-la))

    def t_of_sigma(self, sigma: float) -> float:
        """The time whose ``abar`` is ``1 / (1 + sigma^2)`` (the inverse of :meth:`sigma_of_t`)."""
        a = 0.5 * (self.beta_max - self.beta_min)
        c = math.log1p(sigma * sigma)
        b = self.beta_min
        return (-b + math.sqrt(b * b + 4 * a * c)) / (2 * a) if a > 0 else c / b

    def perturb(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``x_t`` for per-sample times ``t`` (shape ``(B,)``)."""
        ab = self.abar(t).reshape(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps
