"""PULSE: Self-Supervised Photo Upsampling via Latent Space Exploration of Generative Models
(Menon, Damian, Hu, Ravi, Rudin, CVPR 2020).

PULSE searches the generator's inputs on spheres: every latent row and every optimised noise map
keeps the norm it was drawn with (about ``sqrt(dim)`` for a Gaussian input, where nearly all of a
Gaussian's mass lies). Each step is an Adam step followed by the projection back to the spheres
(the reference code's ``SphericalOptimizer`` wrapping ``torch.optim.Adam``). The loss is PULSE's
``"100*L2+0.05*GEOCROSS"``: the mean squared error in measurement space, floored at ``eps``, plus
the geodesic cross loss between the rows of every latent group (StyleGAN's W+), which pulls the
rows towards a code the mapping network could have produced.

The epsilon check: an image whose measurement error falls below ``eps`` has found an answer that
"downscales correctly"; its inputs are frozen from then on and that iterate is its output. Images
that never get there return their lowest-loss iterate (the reference code's ``best_im``);
``RunRecord.extra["reached_eps"]`` says which did. Nothing raises when no image reaches ``eps``.

Defaults follow the reference code's ``run.py`` (Adam, lr 0.4, 100 steps, ``linear1cycledrop``,
the first 5 noise layers trainable) except ``eps``: 2e-3 is the paper's value (the code's default
is 1e-3). Differences from the reference: the operator is any ``physics`` (not a bicubic
downsampler), geocross acts on the generator's own latents (for StyleGAN2 in genprior these are
PULSE's Gaussianised W+ rows themselves, the reference applies it after the Gaussian fit's affine
map and leaky ReLU), the early stop and the best iterate are per image (the reference compares
batch sums), and no noise layer is zeroed (the reference zeroes layer 17 of its 1024 px StyleGAN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..generators.base import LayeredGenerator
from ..losses import fidelity, geocross
from .common import (
    Best,
    GenerativeSolver,
    RunRecord,
    SolverConfig,
    Timer,
    apply_overrides,
    batch_norms,
    check_choice,
    check_int,
    check_number,
    check_seed,
    finish_run,
    latent_groups,
    progress_bar,
    project_to_norm,
)

__all__ = ["PULSE", "PULSEConfig", "pulse_lr_factor", "PULSE_SCHEDULES"]

PULSE_SCHEDULES: tuple[str, ...] = ("fixed", "linear1cycle", "linear1cycledrop")


def pulse_lr_factor(step: int, total: int, schedule: str = "linear1cycledrop") -> float:
    """PULSE's learning-rate factor at ``step`` (0-based) of ``total``.

    ``linear1cycle``: from 0.1 up to 1 at mid-run, back to 0.1 at the end; ``linear1cycledrop``:
    the same cycle over the first 90% of the steps, then a linear drop from 0.1 to 0.001.
    """
    if schedule == "fixed":
        return 1.0
    if schedule == "linear1cycle":
        return (9 * (1 - abs(step / total - 0.5) * 2) + 1) / 10
    if schedule == "linear1cycledrop":
        cycle = 0.9 * total
        if step < cycle:
            return (9 * (1 - abs(step / cycle - 0.5) * 2) + 1) / 10
        return 0.1 + (step - cycle) / (0.1 * total) * (0.001 - 0.1)
    raise UserError(f"unknown PULSE lr schedule {schedule!r}: use one of {', '.join(PULSE_SCHEDULES)}")


@dataclass
class PULSEConfig(SolverConfig):
    """Settings of :class:`PULSE` (defaults: the reference code's ``run.py``, ``eps`` from the paper).

    Attributes:
        steps: spherical Adam steps (reference: 100).
        lr: Adam learning rate (reference: 0.4).
        lr_schedule: ``"linear1cycledrop"`` (reference), ``"linear1cycle"`` or ``"fixed"``.
        weight_l2: weight of the measurement MSE (reference loss string ``"100*L2+0.05*GEOCROSS"``).
        weight_geocross: weight of geocross over every latent group with >= 2 members.
        eps: the target measurement MSE (paper: 2e-3; reference code default 1e-3). The L2 term is
            floored at ``eps``, and an image stops as soon as its error is below it.
        trainable_noise: how many of the generator's noise inputs (in ``input_specs`` order,
            coarse to fine) are optimised; the others keep their random initial values
            (reference: 5). ``None``: all of them.
        seed: seed of the initial latents and noise maps.
    """

    steps: int = 100
    lr: float = 0.4
    lr_schedule: str = "linear1cycledrop"
    weight_l2: float = 100.0
    weight_geocross: float = 0.05
    eps: float = 2e-3
    trainable_noise: int | None = 5
    seed: int = 0

    def validate(self) -> None:
        check_int(self, "steps", 0)
        check_number(self, "lr")
        check_choice(self, "lr_schedule", PULSE_SCHEDULES)
        check_number(self, "weight_l2")
        check_number(self, "weight_geocross")
        check_number(self, "eps", inf=True)
        check_int(self, "trainable_noise", 0, none=True)
        check_seed(self)


class PULSE(GenerativeSolver):
    """PULSE as a deepinv ``Reconstructor``: ``x_hat = PULSE(generator)(y, physics)``.

    ``solver.last_record.extra`` holds ``reached_eps`` (per image), ``eps_step`` (the step at
    which each image reached ``eps``, or ``None``), ``eps``, and ``norm_ratio``: per optimised
    input, each image's final norm over its initial norm (1 up to rounding: the spheres hold).
    """

    method = "pulse"

    def __init__(self, generator: LayeredGenerator, config: PULSEConfig | None = None, **overrides: Any):
        config = apply_overrides(config or PULSEConfig(), overrides)
        super().__init__(generator, config)

    def free_names(self) -> tuple[str, ...]:
        """The inputs PULSE optimises: every latent and the first ``trainable_noise`` noise maps."""
        noise = self.generator.noise_names()
        k = self.config.trainable_noise
        return self.generator.latent_names() + (noise if k is None else noise[: max(0, int(k))])

    def solve(self, y: Tensor, physics: Any, progress: bool = False) -> tuple[Tensor, RunRecord]:
        cfg: PULSEConfig = self.config
        G = self.generator
        self._check_y(y)
        batch = y.shape[0]
        inputs = self._init_inputs(batch, cfg.seed)
        free = {k: inputs[k].clone().requires_grad_(True) for k in self.free_names()}
        radii = {k: batch_norms(v.detach()) for k, v in free.items()}
        groups = {g: names for g, names in latent_groups(G).items() if len(names) >= 2}

        opt = torch.optim.Adam(list(free.values()), lr=cfg.lr) if free else None
        rec = RunRecord(method=self.method)
        active = torch.ones(batch, dtype=torch.bool)
        eps_step: list[int | None] = [None] * batch
        best_loss = torch.full((batch,), math.inf)
        best_err = torch.full((batch,), math.inf)
        best_x: Tensor | None = None
        bar = progress_bar(cfg.steps, progress, "PULSE")
        with Timer() as timer:
            for t in range(cfg.steps + 1):
                last = t == cfg.steps or opt is None
                with torch.set_grad_enabled(not last):
                    x = G({**inputs, **free})
                    err = fidelity(physics.A(x), y, "mse")
                    loss = cfg.weight_l2 * err.clamp_min(cfg.eps)
                    if cfg.weight_geocross > 0:
                        for names in groups.values():
                            rows = torch.stack([free[n].reshape(batch, -1) for n in names], 1)
                            loss = loss + cfg.weight_geocross * geocross(rows)
                with torch.no_grad():
                    e, l = err.detach().float().cpu(), loss.detach().float().cpu()
                    reached = active & (e < cfg.eps)
                    better = (active & (l < best_loss)) | reached
                    if best_x is None:
                        best_x = x.detach().clone()
                    elif better.any():
                        best_x[better.to(x.device)] = x.detach()[better.to(x.device)]
                    best_loss = torch.where(better, l, best_loss)
                    best_err = torch.where(better, e, best_err)
                    for i in torch.nonzero(reached).flatten().tolist():
                        eps_step[i] = t
                    active &= ~reached
                if last or not active.any():
                    break
                rec.log_step(loss, err, batch, 0)
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * pulse_lr_factor(t, cfg.steps, cfg.lr_schedule)
                frozen = {k: v.detach().clone() for k, v in free.items()} if not active.all() else None
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
                with torch.no_grad():
                    for k, v in free.items():
                        project_to_norm(v, radii[k])
                        if frozen is not None:  # Adam's momentum would still move finished images
                            keep = (~active).to(v.device)
                            v[keep] = frozen[k][keep]
                bar.update(1)
        bar.close()
        assert best_x is not None
        return finish_run(
            rec,
            Best(best_x, best_err, torch.zeros(batch, dtype=torch.long)),
            timer,
            round_steps=t,  # the loop broke at step t, having logged steps 0 .. t - 1
            reached_eps=[s is not None for s in eps_step],
            eps_step=eps_step,
            eps=cfg.eps,
            norm_ratio={k: (batch_norms(v.detach()) / radii[k]).flatten().tolist() for k, v in free.items()},
        )
