"""CSGM: compressed sensing with generative models (Bora, Jalal, Price, Dimakis, ICML 2017).

Adam on the generator's input latent(s) to fit ``A(G(z)) ~ y``, optionally with a Gaussian latent
prior ``prior_weight * ||z||^2``, from several random restarts; per image, the restart with the
lowest measurement error wins. All restarts run at once as one batch, so the physics must
broadcast over the batch (true of deepinv operators whose parameters have batch size 1).
The paper's MNIST setting is ``CSGMConfig(steps=1000, lr=0.01, restarts=10, prior_weight=0.1,
reduction="sum")`` (the paper writes the data term as the *sum* of squared residuals; its code
averages them over the m measurements, ``reduction="mean"``). The defaults are lighter (300
steps, lr 0.05, one restart, no prior) so that the bundled examples run in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..generators.base import Inputs, LayeredGenerator
from ..losses import fidelity, latent_prior
from .common import (
    BestTracker,
    GenerativeSolver,
    RunRecord,
    SolverConfig,
    Timer,
    apply_overrides,
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_seed,
    finish_run,
    lr_schedule,
    progress_bar,
)

REDUCTIONS: tuple[str, ...] = ("mean", "sum")
#: how the latents start: the generator's own prior of its search space, or uniform in [-1, 1]
INITS: tuple[str, ...] = ("gaussian", "uniform")


@dataclass
class CSGMConfig(SolverConfig):
    """Settings of :class:`CSGM`.

    Attributes:
        steps: Adam steps per restart.
        lr: learning rate.
        restarts: independent random initialisations (run in one batch).
        prior_weight: weight of ``||z||^2`` (Bora et al.: 0.1; summed residuals in the paper,
            averaged ones in their code).
        reduction: ``"mean"`` or ``"sum"`` of squared residuals over measurements.
        optimize_noise: also optimise the generator's noise inputs (StyleGAN2); off by default
            (CSGM searches the latent only).
        lr_schedule: use the warm-up / cosine ramp-down of :func:`lr_schedule` (off: constant lr,
            as in Bora et al.).
        init: ``"gaussian"``: the latents start from the prior of the space searched
            (``generator.sample_inputs``: ``N(0, I)``, StyleGAN2's Gaussianised W+);
            ``"uniform"``: uniformly in ``[-1, 1]`` in that space (deepinv's ``CSGMGenerator``
            and AmbientGAN). Noise inputs start from their prior either way.
        seed: seed of the initial latents.
    """

    steps: int = 300
    lr: float = 0.05
    restarts: int = 1
    prior_weight: float = 0.0
    reduction: str = "mean"
    optimize_noise: bool = False
    lr_schedule: bool = False
    init: str = "gaussian"
    seed: int = 0

    def validate(self) -> None:
        check_int(self, "steps", 0)
        check_number(self, "lr")
        check_int(self, "restarts", 1)
        check_number(self, "prior_weight")
        check_choice(self, "reduction", REDUCTIONS)
        check_bool(self, "optimize_noise")
        check_bool(self, "lr_schedule")
        check_choice(self, "init", INITS)
        check_seed(self)


class CSGM(GenerativeSolver):
    """CSGM as a deepinv ``Reconstructor``: ``x_hat = CSGM(generator)(y, physics)``."""

    method = "csgm"

    def __init__(self, generator: LayeredGenerator, config: CSGMConfig | None = None, **overrides: Any):
        config = apply_overrides(config or CSGMConfig(), overrides)
        super().__init__(generator, config)

    def solve(
        self, y: Tensor, physics: Any, progress: bool = False, start: Inputs | None = None
    ) -> tuple[Tensor, RunRecord]:
        """``start``: the initial inputs (``batch * restarts`` of each, restart-major) instead of
        ``init``'s draw, e.g. another implementation's start, to compare the two step by step."""
        cfg: CSGMConfig = self.config
        G = self.generator
        self._check_y(y)
        batch, R = y.shape[0], cfg.restarts
        if start is not None:
            inputs = {k: v.detach().to(G.device) for k, v in start.items()}
            names = [spec.name for spec in G.input_specs]
            bad = [k for k in names if k not in inputs or inputs[k].shape[0] != batch * R]
            if bad:
                raise UserError(
                    f"start must give every input of the generator for {batch * R} images (batch x restarts): "
                    f"{bad[0]!r} is missing or has another batch size"
                )
        else:
            inputs = self._init_inputs(batch * R, cfg.seed)
        if start is None and cfg.init == "uniform":  # drawn on the CPU: the same start on every device
            g = torch.Generator().manual_seed(cfg.seed)
            for k in G.latent_names():
                inputs[k] = (2 * torch.rand(inputs[k].shape, generator=g) - 1).to(inputs[k])
        yy = y.repeat((R,) + (1,) * (y.dim() - 1))
        names = G.latent_names() + (G.noise_names() if cfg.optimize_noise else ())
        free = {k: inputs[k].clone().requires_grad_(True) for k in names}
        opt = torch.optim.Adam(list(free.values()), lr=cfg.lr, foreach=True)
        rec = RunRecord(method=self.method)
        best = BestTracker(batch)
        bar = progress_bar(cfg.steps, progress, "CSGM")
        with Timer() as timer:
            for t in range(cfg.steps + 1):
                last = t == cfg.steps
                with torch.set_grad_enabled(not last):
                    x = G({**inputs, **free})
                    ax = physics.A(x)
                    err = fidelity(ax, yy, "mse")
                    loss = err if cfg.reduction == "mean" else fidelity(ax, yy, "mse", reduction="sum")
                    if cfg.prior_weight > 0:
                        loss = loss + cfg.prior_weight * latent_prior([free[k] for k in G.latent_names()])
                best.update(err, x, 0)
                if last:
                    break
                rec.log_step(loss, err, batch, 0)
                if cfg.lr_schedule:
                    for g in opt.param_groups:
                        g["lr"] = cfg.lr * lr_schedule(t, cfg.steps)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
                bar.update(1)
        bar.close()
        return finish_run(rec, best, timer, round_steps=cfg.steps, best_restart=best.restart.tolist())
