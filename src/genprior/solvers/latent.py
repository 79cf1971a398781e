"""Latent diffusion solvers on a :class:`~genprior.diffusion.latent.LatentDiffusion` model:
ReSample (Song et al., ICLR 2024; :mod:`genprior.diffusion.resample`) and its baselines Latent-DPS
and PSLD (:mod:`genprior.diffusion.guided`).

Each image gets ``chains`` posterior samples, run as one batch; the output is their mean and the
record keeps the samples and their per-pixel std, as for DPS, DiffPIR and SGILO. Runs repeat: every
draw comes from ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor

from ..diffusion.guided import guided_latent_sampling
from ..diffusion.resample import GLUING_PROJECTIONS, ReSampleConfig, resample
from .common import check_choice, check_holdout, check_int, check_number
from .diffusion import DiffusionSolver

__all__ = ["PSLD", "LatentDPS", "LatentDPSConfig", "PSLDConfig", "ReSample", "ReSampleConfig"]


@dataclass
class LatentDPSConfig:
    """Settings of :class:`LatentDPS`."""

    steps: int = 250  # DDIM steps
    weight: float = 1.0  # step on the gradient of ||y - A(D(z0_hat))|| in z_t
    eta: float = 1.0  # DDIM's eta (1: DDPM's ancestral sampling)
    chains: int = 1  # posterior samples per image (one batch; `solve --samples K`); the output is their mean
    holdout: float | None = None  # share held out to calibrate the std map (None: 0.1 with chains >= 2)
    seed: int = 0  # seeds the start and every draw

    def __post_init__(self) -> None:
        check_int(self, "steps", 2)
        check_int(self, "chains", 1)
        check_int(self, "seed", 0)
        check_holdout(self)
        check_number(self, "weight", 0.0)
        check_number(self, "eta", 0.0)


@dataclass
class PSLDConfig(LatentDPSConfig):
    """Settings of :class:`PSLD`: Latent-DPS's and the gluing weight."""

    gluing: float = 0.1  # step on the gradient of ||z0_hat - E(P(D(z0_hat)))||, P the projection onto A x = y
    gluing_projection: str = "pinv"  # P(x) = x + A^+ (y - A x); "adjoint": the paper's A^T y + (I - A^T A) x

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self, "gluing", 0.0, above=True)
        check_choice(self, "gluing_projection", GLUING_PROJECTIONS)


class ReSample(DiffusionSolver):
    """ReSample: hard data consistency and stochastic resampling in a latent diffusion model."""

    method = "resample"
    latent = True

    def _sample(self, y: Tensor, physics: Any, progress: bool) -> Tensor:
        m, cfg = self.model, self.config
        if cfg.model_error is None:  # the autoencoder's own error, as this physics shows it
            cfg = replace(cfg, model_error=m.recon_floor(physics))
        return resample(y, physics, m.eps, m.decode, m.encode, m.latent_shape, m.alphas_cumprod, cfg)


class LatentDPS(DiffusionSolver):
    """DPS on the latents of a latent diffusion model."""

    method = "latent-dps"
    latent = True

    def _sample(self, y: Tensor, physics: Any, progress: bool) -> Tensor:
        c = self.config
        return guided_latent_sampling(
            y, physics, self.model, steps=c.steps, weight=c.weight, eta=c.eta, seed=c.seed
        )


class PSLD(LatentDPS):
    """PSLD: Latent-DPS with the gluing term that keeps the latent a fixed point of the autoencoder."""

    method = "psld"

    def _sample(self, y: Tensor, physics: Any, progress: bool) -> Tensor:
        c = self.config
        return guided_latent_sampling(
            y,
            physics,
            self.model,
            steps=c.steps,
            weight=c.weight,
            gluing=c.gluing,
            projection=c.gluing_projection,
            eta=c.eta,
            seed=c.seed,
        )
