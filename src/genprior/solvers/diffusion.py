"""Pixel diffusion solvers through deepinv's own implementations: DPS (Chung et al. 2023) and
DiffPIR (Zhu et al. 2023) on a :class:`~genprior.diffusion.pixel.PixelDiffusion` model, which
deepinv drives as a denoiser (:meth:`~genprior.diffusion.pixel.PixelDiffusion.denoiser`, deepinv's
``ScoreModelWrapper`` on the model's own schedule).

Each image gets ``chains`` posterior samples, run as one batch; the output is their mean and
the record keeps the samples and their per-pixel std (:class:`~genprior.solvers.common.PosteriorSamples`),
as SGILO's does. Runs repeat: the samplers' draws come from ``seed``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from deepinv.models import Reconstructor
from torch import Tensor

from ..errors import UserError
from .common import (
    PosteriorSamples,
    RunRecord,
    check_holdout,
    check_int,
    check_number,
    holdout_share,
    setting_error,
)


@dataclass
class DPSConfig:
    """Settings of :class:`DPS` (deepinv's ``DPS``)."""

    steps: int = 1000  # reverse-diffusion steps (DDPM ancestral sampling, the paper's 1000)
    weight: float = (
        100.0  # guidance weight on ||y - A(x0_hat(x_t))|| in deepinv's SDE form (its 1.0 barely moves x)
    )
    chains: int = 1  # posterior samples per image (one batch; `solve --samples K`); the output is their mean
    holdout: float | None = None  # share held out to calibrate the std map (None: 0.1 with chains >= 2)
    seed: int = 0  # seeds the sampler's draws

    def __post_init__(self) -> None:
        check_int(self, "steps", 2)
        check_int(self, "chains", 1)
        check_int(self, "seed", 0)
        check_holdout(self)
        check_number(self, "weight", 0.0, above=True)


@dataclass
class DiffPIRConfig:
    """Settings of :class:`DiffPIR` (deepinv's ``DiffPIR``)."""

    steps: int = 100  # denoising steps (deepinv's default)
    zeta: float = 0.1  # share of fresh noise in each step (0: deterministic, 1: DDPM-like)
    lambda_: float = 7.0  # weight of the data term (the paper's 3 .. 25)
    noise_sigma: float = 0.01  # the measurements' noise level where the physics has none
    chains: int = 1  # posterior samples per image (one batch; `solve --samples K`); the output is their mean
    holdout: float | None = None  # share held out to calibrate the std map (None: 0.1 with chains >= 2)
    seed: int = 0  # seeds the sampler's draws

    def __post_init__(self) -> None:
        check_int(self, "steps", 2)
        if self.steps > 1000:  # deepinv's DiffPIR rounds its steps to the model's 1,000 timesteps
            raise setting_error(self, "steps", "give at most 1000, the model's timesteps (more repeat them)")
        check_int(self, "chains", 1)
        check_int(self, "seed", 0)
        check_holdout(self)
        for name in ("lambda_", "noise_sigma"):
            check_number(self, name, 0.0, above=True)
        check_number(self, "zeta", 0.0)
        if self.zeta > 1:
            raise UserError(f"DiffPIRConfig: zeta = {self.zeta}: give a number in [0, 1]")


class DiffusionSolver(Reconstructor):
    """A posterior sampler on a diffusion model: ``chains`` samples per image in one batch, their
    mean as the answer. Subclasses give :meth:`_sample` and the model class they run on."""

    method = "diffusion"
    latent = False  # runs on a LatentDiffusion (True) or a PixelDiffusion (False)

    def __init__(self, model: Any, config: Any) -> None:
        from ..diffusion.latent import LatentDiffusion

        if isinstance(model, LatentDiffusion) != self.latent:
            want = (
                "a latent diffusion model such as fmnist-ldm-32"
                if self.latent
                else "a pixel diffusion model such as fmnist-ddpm-32"
            )
            raise UserError(f"method {self.method!r} runs on {want}: give --model accordingly")
        super().__init__(device=model.device)
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.config = config
        self.last_record: RunRecord | None = None

    def _sample(self, y: Tensor, physics: Any, progress: bool) -> Tensor:
        """One sample per row of ``y`` (torch's global generator is seeded with ``seed``)."""
        raise NotImplementedError

    def forward(self, y: Tensor, physics: Any, progress: bool = False, **kwargs: Any) -> Tensor:
        from .. import metrics

        if not torch.isfinite(y).all():
            raise UserError("measurements contain NaN or infinite values: give finite measurements")
        cfg = self.config
        rec = RunRecord(self.method)
        t0 = time.perf_counter()
        share = holdout_share(cfg.holdout, cfg.chains)
        scale = self._holdout_scale(y, physics, progress, share) if share else None
        post = self._posterior(y, physics, progress)
        if scale is not None:  # the same solve as without, its std map scaled
            post = post.std_scaled(scale)
            rec.extra["holdout_scale"] = scale.tolist()
        rec.posterior = post
        rec.time_s = time.perf_counter() - t0
        rec.best_meas_err = metrics.measurement_error(post.mean, y, physics).tolist()
        rec.best_round = [0] * y.shape[0]
        self.last_record = rec
        return post.mean

    def _posterior(self, y: Tensor, physics: Any, progress: bool) -> PosteriorSamples:
        """``chains`` samples of each image, as one batch, drawn from ``seed``."""
        cfg, B = self.config, y.shape[0]
        yk = y.repeat(cfg.chains, *([1] * (y.dim() - 1)))  # sample-major: entry s * B + i
        devices = [y.device] if y.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(cfg.seed)
            x = self._sample(yk, physics, progress)
        return PosteriorSamples.from_samples(
            x.detach().float().clamp(0, 1).reshape(cfg.chains, B, *x.shape[1:])
        )

    def _holdout_scale(self, y: Tensor, physics: Any, progress: bool, share: float) -> Tensor:
        """Per image, the factor (at least 1) for the std map: a first solve without a ``share``
        of the observed measurement entries (one draw for the batch), then the factor
        by which its samples' spread must grow for ``mean +- 2 std`` of their measurements to
        cover 95 % of the held-out entries (split conformal calibration,
        :func:`~genprior.solvers.sgilo.holdout_scale`, as SGILO's). On inpainting the held-out
        problem is an inpainting with the smaller mask; on any other linear physics it is
        :class:`~genprior.physics.heldout.HeldOut` (deepinv's conjugate gradients for its
        proximal steps and projections)."""
        from deepinv.physics import Inpainting, LinearPhysics

        from ..physics.heldout import HeldOut
        from .sgilo import holdout_scale

        cfg = self.config
        mask = getattr(physics, "mask", None)
        if isinstance(physics, Inpainting):
            if not isinstance(mask, Tensor) or mask.shape[0] != 1:
                raise UserError(
                    f"holdout = {share} needs one inpainting mask for the whole batch: "
                    "give holdout = 0, or solve the images of each mask as their own batch"
                )
            seen = mask
        elif isinstance(physics, LinearPhysics):
            seen = torch.ones_like(y[:1])
        else:
            raise UserError(
                f"holdout = {share} needs a linear physics (a deepinv LinearPhysics), not "
                f"{type(physics).__name__}: give holdout = 0"
            )
        g = torch.Generator().manual_seed(cfg.seed + 3)
        held = seen * (torch.rand(seen.shape, generator=g) < share).to(seen)
        if isinstance(physics, Inpainting):  # the smaller mask, with inpainting's own closed forms
            kept: Any = Inpainting(
                img_size=tuple(mask.shape[1:]),
                mask=mask - held,
                device=mask.device,
                noise_model=physics.noise_model,
            )
        else:
            kept = HeldOut(physics, 1 - held)
        first = self._posterior(y * (1 - held), kept, progress)
        K = first.num_samples
        with torch.no_grad():
            ax = physics.A(first.samples.flatten(0, 1)).view(K, *y.shape)
        sigma = float(getattr(physics.noise_model, "sigma", 0.0) or 0.0)
        return holdout_scale(ax, y, held.expand_as(y), sigma)


class DPS(DiffusionSolver):
    """Diffusion posterior sampling, deepinv's implementation (``deepinv.sampling.DPS``)."""

    method = "dps"

    def _sampler(self, progress: bool) -> Any:
        from deepinv.sampling import DPS as DeepinvDPS

        cfg = self.config
        return DeepinvDPS(
            self.model.denoiser(),
            num_steps=cfg.steps,
            weight=cfg.weight,
            verbose=progress,
            device=self.model.device,
            rng=torch.Generator(self.model.device).manual_seed(cfg.seed),
        )

    def _sample(self, y: Tensor, physics: Any, progress: bool) -> Tensor:
        with torch.enable_grad():
            return self._sampler(progress)(y, physics, seed=self.config.seed)


class DiffPIR(DiffusionSolver):
    """Diffusion plug-and-play restoration, deepinv's implementation (``deepinv.sampling.DiffPIR``)."""

    method = "diffpir"

    def _sampler(self, progress: bool) -> Any:
        from deepinv.optim.data_fidelity import L2
        from deepinv.sampling import DiffPIR as DeepinvDiffPIR

        cfg = self.config
        return DeepinvDiffPIR(
            self.model.denoiser(),
            L2(),
            sigma=cfg.noise_sigma,
            max_iter=cfg.steps,
            zeta=cfg.zeta,
            lambda_=cfg.lambda_,
            verbose=progress,
            device=self.model.device,
        )

    def _sample(self, y: Tensor, physics: Any, progress: bool) -> Tensor:
        with torch.no_grad():
            return self._sampler(progress)(y, physics)
