"""Intermediate Layer Optimization (Daras, Dean, Jalal, Dimakis, ICML 2021).

ILO solves ``y = A(G(inputs)) + noise`` in rounds. Round 0 searches the generator's inputs
(latents and noise maps; for StyleGAN2 the Gaussianised W+ of PULSE), like CSGM. Round ``r >= 1``
moves one stage deeper: the state at stage ``s_r`` (what the first ``s_r`` layers produce) becomes
a free variable, together with the inputs the remaining layers still read. After every Adam step
the state's deviation from where the round started is projected onto an l1 ball, so the answer can
leave the range of the generator a little while staying close to it.

Where genprior differs from the paper's reference code (all four are bugs there):

* resuming from an intermediate StyleGAN2 layer carries the RGB skip image in the state (the
  reference drops it, so its rounds >= 1 start from a different image than round 0 ended with);
* geocross is applied to the latents still in use in every round (it vanishes after round 1
  in the reference);
* there is no "factor 1 bicubic downsampler": the operator is whatever ``physics`` the user gives;
* the output is the best iterate over *all* rounds by measurement error, per image (the
  reference keeps the best image of the last round only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..generators.base import LayeredGenerator, State
from ..losses import fidelity, geocross
from ..metrics import observed_share
from .common import (
    BestTracker,
    GenerativeSolver,
    RunRecord,
    SolverConfig,
    Timer,
    apply_overrides,
    batch_norms,
    check_bool,
    check_choice,
    check_number,
    check_per_round,
    check_seed,
    check_stages,
    finish_run,
    is_int,
    is_number,
    latent_groups,
    lr_schedule,
    per_round,
    progress_bar,
    project_to_norm,
    setting_error,
)
from .projections import project_state

PerceptualFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class ILOConfig(SolverConfig):
    """Settings of :class:`ILO`. Defaults suit the bundled 32-64 px generators on a CPU.

    Attributes:
        stages: the stage optimised in rounds 1, 2, ...; ``None`` means ``1 .. ceil(S/2)`` for a
            generator with ``S`` stages (the paper stops half-way through StyleGAN2, since deeper
            layers can fit anything, noise included).
        steps: Adam steps per round, round 0 first; an int gives every round the same count; a
            shorter sequence repeats its last entry.
        lr: Adam learning rate of latents and noise maps.
        state_lr: Adam learning rate of the intermediate state.
        radius: l1 radius of each round >= 1, *relative* to the state the round starts from:
            per image, ``||state - state0||_1 <= radius * ||state0||_1`` (scale-free across
            layers and generators, where the paper's absolute radii must be retuned for each);
            ``inf`` disables the projection. A sequence gives one radius per round >= 1.
        optimize_noise: let the noise inputs the remaining layers read be free variables (the
            paper's setting, off by default here). Off, they keep their initial random values: on
            the bundled 32x32 StyleGAN2, whose high-resolution noise maps reach the pixels almost
            directly, free noise fits the measurement noise in round 0 already (denoising at
            sigma 0.2: measurement error 0.002 against a noise variance of 0.04, 5 dB lost).
        spherical: after each step, project every latent row and noise map back to its initial norm.
        fidelity: ``"mse"`` or ``"l1"`` between ``A(x)`` and ``y``; ``deadzone`` > 0 ignores
            residuals below it.
        perceptual: optional callable ``(A(x), y) -> (B,)`` (e.g. LPIPS in measurement space),
            weighted by ``perceptual_weight``.
        geocross_weight: weight of PULSE's geocross on the grouped latents still in use.
        noise_floor: ``None`` (the default) outputs the iterate of lowest measurement error.
            A number, or ``"auto"`` (the variance of the physics' Gaussian noise model, times the
            fraction of measurement entries that are non-zero, i.e. observed), applies Morozov's
            discrepancy principle instead: errors below the floor count as equal to it, so the
            earliest iterate that fits the measurements down to the noise level wins and later
            rounds cannot replace it by fitting the noise. With a floor, the output's measurement
            error may lie above round 0's best.
        rampup, rampdown: warm-up and cosine ramp-down lengths as fractions of a round.
        seed: seed of the initial inputs.
    """

    stages: Sequence[int] | None = None
    steps: int | Sequence[int] = (150, 100, 100, 100)
    lr: float = 0.1
    state_lr: float = 0.05
    radius: float | Sequence[float] = 0.4
    optimize_noise: bool = False
    spherical: bool = True
    fidelity: str = "mse"
    deadzone: float = 0.0
    perceptual: PerceptualFn | None = field(default=None, repr=False)
    perceptual_weight: float = 0.0
    geocross_weight: float = 1e-4
    noise_floor: float | str | None = None
    rampup: float = 0.05
    rampdown: float = 0.25
    seed: int = 0

    def validate(self) -> None:
        check_stages(self, "stages")
        check_per_round(self, "steps", lambda v: is_int(v) and v >= 0, "an integer >= 0")
        for name in ("lr", "state_lr"):
            check_number(self, name)
        check_per_round(
            self, "radius", lambda v: is_number(v) and v >= 0, "a number >= 0 (inf: no projection)"
        )
        check_bool(self, "optimize_noise")
        check_bool(self, "spherical")
        check_choice(self, "fidelity", FIDELITIES)
        check_number(self, "deadzone")
        if self.perceptual is not None and not callable(self.perceptual):
            raise setting_error(self, "perceptual", "give None or a callable (A(x), y) -> (B,) tensor")
        for name in ("perceptual_weight", "geocross_weight", "rampup", "rampdown"):
            check_number(self, name)
        if not _noise_floor_ok(self.noise_floor):
            raise setting_error(self, "noise_floor", "give None, 'auto' or a number >= 0")
        check_seed(self)


FIDELITIES: tuple[str, ...] = ("mse", "l1")


def _noise_floor_ok(v: Any) -> bool:
    if v is None or v == "auto":
        return True
    if isinstance(v, str):  # a number written out, as noise_floor() reads it
        try:
            v = float(v)
        except ValueError:
            return False
    return is_number(v) and v >= 0


@dataclass
class Start:
    """Where :meth:`ILO.solve` may begin instead of round 0's search: the state at ``stage`` and
    the generator's inputs (``stage`` 0 and ``state == ()``: a point of the generator's range)."""

    stage: int
    state: State
    inputs: dict[str, Tensor]


def default_stages(num_stages: int) -> list[int]:
    return list(range(1, max(1, math.ceil(num_stages / 2)) + 1)) if num_stages > 0 else []


class ILO(GenerativeSolver):
    """Intermediate Layer Optimization as a deepinv ``Reconstructor``.

    ``x_hat = ILO(generator, ILOConfig(...))(y, physics)``; ``solver.last_record`` holds the run.
    """

    method = "ilo"

    def __init__(self, generator: LayeredGenerator, config: ILOConfig | None = None, **overrides: Any):
        config = apply_overrides(config or ILOConfig(), overrides)
        super().__init__(generator, config)
        self.last_inputs: dict[str, Tensor] | None = None

    def solve(
        self, y: Tensor, physics: Any, progress: bool = False, start: Start | None = None
    ) -> tuple[Tensor, RunRecord]:
        """``start``: begin from a given point instead of round 0's search (SGILO's refinement of
        its chains): round 0 then only evaluates ``tail(start.stage, start.state, start.inputs)``
        and the rounds go on from the configured stages deeper than ``start.stage``."""
        cfg: ILOConfig = self.config
        G = self.generator
        self._check_y(y)
        stages = list(cfg.stages) if cfg.stages is not None else default_stages(G.num_stages)
        for s in stages:  # increasing and >= 1: ILOConfig checks that
            G.check_stage(s)
        if start is not None:
            stages = [s for s in stages if s > start.stage]
        n_rounds = 1 + len(stages)
        steps = per_round(cfg.steps, n_rounds)
        radii = per_round(cfg.radius, max(1, len(stages)))
        batch = y.shape[0]

        if start is None:
            inputs = self._init_inputs(batch, cfg.seed)
        else:
            steps[0] = 0  # the start is evaluated, not searched
            inputs = {k: v.detach() for k, v in start.inputs.items()}
        init_norms = {k: batch_norms(v) for k, v in inputs.items()}
        groups = latent_groups(G)

        rec = RunRecord(method=self.method)
        best = BestTracker(batch)
        floor = noise_floor(cfg.noise_floor, y, physics)
        if floor is not None:
            rec.extra["noise_floor"] = floor.tolist()
        bar = progress_bar(sum(steps), progress, "ILO")
        fixed = set() if cfg.optimize_noise else set(G.noise_names())
        state: State = ()
        stage_prev = 0
        with Timer() as timer:
            for r in range(n_rounds):
                stage = stages[r - 1] if r > 0 else start.stage if start is not None else 0
                with torch.no_grad():
                    if r == 0:
                        state0 = tuple(start.state) if start is not None else ()
                    elif r == 1 and start is None:
                        state0 = G.head(stage, inputs)
                    else:
                        state0 = G.advance(stage_prev, stage, state, inputs)
                    state0 = tuple(s.detach() for s in state0)
                free = {
                    k: inputs[k].detach().clone().requires_grad_(True)
                    for k in G.tail_inputs(stage)
                    if k not in fixed
                }
                # geocross only on groups with at least two members still free in this round
                gx_groups = [
                    u for u in ([n for n in names if n in free] for names in groups.values()) if len(u) >= 2
                ]
                use_gx = cfg.geocross_weight > 0 and bool(gx_groups)
                state = tuple(s.clone().requires_grad_(True) for s in state0)
                param_groups = [{"params": list(free.values()), "lr": cfg.lr, "base": cfg.lr}]
                if state:
                    param_groups.append({"params": list(state), "lr": cfg.state_lr, "base": cfg.state_lr})
                opt = torch.optim.Adam(param_groups, betas=(0.9, 0.999), foreach=True)
                rel = float(radii[r - 1]) if r > 0 and state else math.inf
                radius = (
                    rel * sum(s.reshape(batch, -1).abs().sum(1, dtype=torch.float64) for s in state0)
                    if math.isfinite(rel)
                    else None
                )
                errs = []  # per-step measurement errors, kept on the device until the round ends
                for t in range(steps[r] + 1):
                    cur = {**inputs, **free}
                    last = t == steps[r]
                    with torch.set_grad_enabled(not last):
                        x = G(cur) if r == 0 and start is None else G.tail(stage, state, cur)
                        ax = physics.A(x)
                        err = fidelity(ax, y, "mse")
                        loss = (
                            err
                            if cfg.fidelity == "mse" and cfg.deadzone == 0
                            else fidelity(ax, y, cfg.fidelity, cfg.deadzone)
                        )
                        if cfg.perceptual is not None and cfg.perceptual_weight > 0:
                            loss = loss + cfg.perceptual_weight * cfg.perceptual(ax, y)
                        if use_gx:
                            gx = sum(geocross(torch.stack([cur[n] for n in u], 1)) for u in gx_groups)
                            loss = loss + cfg.geocross_weight * gx
                    best.update(err, x, r, floor)
                    errs.append(err.detach())
                    if last:  # the final iterate is evaluated, not stepped
                        break
                    rec.log_step(loss, err, batch, r)
                    rec.log_extra("geocross", gx.detach().mean() if use_gx else 0.0)
                    factor = lr_schedule(t, steps[r], cfg.rampup, cfg.rampdown)
                    for g in opt.param_groups:
                        g["lr"] = g["base"] * factor
                    opt.zero_grad(set_to_none=True)
                    loss.sum().backward()
                    opt.step()
                    with torch.no_grad():
                        if cfg.spherical:
                            for k, v in free.items():
                                project_to_norm(v, init_norms[k])
                        if radius is not None:
                            project_state(state, state0, radius)
                    bar.update(1)
                with torch.no_grad():
                    inputs = {**inputs, **{k: v.detach() for k, v in free.items()}}
                    state = tuple(s.detach() for s in state)
                stage_prev = stage
                round_errs = torch.stack(errs).float().cpu()
                round_best = round_errs.min(0).values
                rec.rounds.append(
                    {
                        "round": r,
                        "stage": stage,
                        "steps": steps[r],
                        "radius": radius.tolist() if radius is not None else math.inf,
                        "best_meas_err": round_best.tolist(),
                        "start_meas_err": round_errs[0].tolist(),
                        "final_meas_err": round_errs[-1].tolist(),
                    }
                )
                bar.set_postfix(round=r, err=f"{float(round_best.mean()):.2e}")
        bar.close()
        self.last_inputs = inputs  # where the last round ended (SGILO starts from round 0's)
        return finish_run(rec, best, timer)


def noise_floor(setting: float | str | None, y: Tensor, physics: Any) -> Tensor | None:
    """Per-image floor of the measurement error for the discrepancy principle (see ILOConfig)."""
    if setting is None:
        return None
    if setting == "auto":
        model = getattr(physics, "noise_model", None)
        if model is None or type(model).__name__ == "ZeroNoise":
            return None  # noiseless measurements: the plain lowest-error rule
        sigma = getattr(model, "sigma", None)
        if sigma is None:
            raise UserError(
                f"noise_floor='auto' needs a Gaussian noise model, not {type(model).__name__}: give a number"
            )
        return (torch.as_tensor(sigma, dtype=torch.float32, device=y.device) ** 2).reshape(
            -1
        ) * observed_share(y)
    value = float(setting)
    if not value >= 0:
        raise UserError(f"noise_floor must be >= 0, 'auto' or None, not {setting!r}")
    return torch.full((y.shape[0],), value, device=y.device)
