"""Pieces every generator-based solver shares: the learning-rate schedule, the best-iterate
tracker, the run record, projections of latents, and the deepinv ``Reconstructor`` base."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from deepinv.models import Reconstructor
from torch import Tensor

from ..generators.base import Inputs, LayeredGenerator


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """A copy of the dataclass ``config`` with ``overrides`` set (the caller's object is left
    alone); an unknown setting is a ``TypeError`` naming it."""
    for k in overrides:
        if k not in {f.name for f in fields(config)}:
            raise TypeError(f"{type(config).__name__} has no setting {k!r}")
    return replace(config, **overrides) if overrides else config


def lr_schedule(step: int, total: int, rampup: float = 0.05, rampdown: float = 0.25) -> float:
    """Warm-up then cosine ramp-down factor (StyleGAN2 projector / ILO), in (0, 1].

    ``step`` counts from 0. The warm-up uses ``(step + 1) / total`` so the first step already
    moves; the ramp-down uses ``step / total`` so the last step still does.
    """
    t_down = step / total
    t_up = (step + 1) / total
    ramp = min(1.0, (1.0 - t_down) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(math.pi * ramp)
    if rampup > 0:
        ramp *= min(1.0, t_up / rampup)
    return ramp


def batch_norms(t: Tensor) -> Tensor:
    """Per-sample Euclidean norm over all non-batch dims, shaped to broadcast against ``t``."""
    n = t.reshape(t.shape[0], -1).norm(dim=1)
    return n.reshape((t.shape[0],) + (1,) * (t.dim() - 1))


@torch.no_grad()
def project_to_norm(t: Tensor, norms: Tensor) -> None:
    """In place: rescale each sample of ``t`` to the given per-sample norm (spherical projection)."""
    t.mul_(norms / batch_norms(t).clamp_min(1e-12))


class BestTracker:
    """Keeps, per image, the iterate with the lowest measurement error seen so far.

    A batch may hold ``groups`` copies of each image (random restarts), laid out group-major:
    entry ``g * n + i`` is restart ``g`` of image ``i``. Everything stays on the iterates' device
    and the update is branch-free, so tracking costs no device-to-host synchronisation.
    """

    def __init__(self, n_images: int):
        self.n = n_images
        self.x: Tensor | None = None
        self.err = torch.full((n_images,), math.inf)
        self.round = torch.full((n_images,), -1, dtype=torch.long)
        self.restart = torch.zeros(n_images, dtype=torch.long)

    @torch.no_grad()
    def update(self, err: Tensor, x: Tensor, round_idx: int, floor: Tensor | None = None) -> None:
        """Offer a batch of iterates with their measurement errors.

        ``floor`` (per image): errors below it count as equal to it, so among iterates that fit
        the measurements to the noise level the earliest is kept (Morozov's discrepancy
        principle); ``None`` keeps the lowest error.
        """
        err = err.detach().float()
        groups = err.numel() // self.n
        if groups == 1:
            e, g, cand = err, torch.zeros_like(self.restart, device=err.device), x.detach()
        else:
            e, g = err.view(groups, self.n).min(dim=0)
            cand = x.detach().view(groups, self.n, *x.shape[1:])[g, torch.arange(self.n, device=x.device)]
        score = e if floor is None else torch.maximum(e, floor)
        if self.x is None:
            self.err, self.round, self.restart = (
                t.to(err.device) for t in (self.err, self.round, self.restart)
            )
            self.score = torch.full_like(self.err, math.inf)
            self.x = cand.clone()
        better = score < self.score
        self.score = torch.where(better, score, self.score)
        self.x = torch.where(better.view(-1, *([1] * (x.dim() - 1))), cand, self.x)
        self.err = torch.where(better, e, self.err)
        self.round = torch.where(better, torch.full_like(self.round, round_idx), self.round)
        self.restart = torch.where(better, g, self.restart)


@dataclass
class RunRecord:
    """What happened during a solve, for convergence plots and reports.

    Per-step lists hold one value per image (restarts: the best restart's value). During a solve
    the per-step values are buffered on the device; :meth:`finish` moves them to the lists in one
    transfer (solvers call it before returning).
    """

    method: str
    loss: list[list[float]] = field(default_factory=list)
    meas_err: list[list[float]] = field(default_factory=list)
    round_of_step: list[int] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    best_meas_err: list[float] = field(default_factory=list)
    best_round: list[int] = field(default_factory=list)
    time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    _steps: list[tuple[Tensor, Tensor, int, int]] = field(default_factory=list, repr=False)
    _extra_steps: dict[str, list[Any]] = field(default_factory=dict, repr=False)

    def log_step(self, loss: Tensor, err: Tensor, n_images: int, round_idx: int) -> None:
        self._steps.append((loss.detach(), err.detach(), n_images, round_idx))

    def log_extra(self, name: str, value: Tensor | float) -> None:
        """A per-step scalar (e.g. a loss term) kept in ``extra[name]``."""
        self._extra_steps.setdefault(name, []).append(value.detach() if isinstance(value, Tensor) else value)

    def finish(self) -> None:
        """Move the buffered per-step values into the lists."""
        if self._steps:
            n = self._steps[0][2]
            loss = torch.stack([s[0].float() for s in self._steps]).cpu()
            err = torch.stack([s[1].float() for s in self._steps]).cpu()
            steps = loss.shape[0]
            self.loss.extend(loss.view(steps, -1, n).min(1).values.tolist())
            self.meas_err.extend(err.view(steps, -1, n).min(1).values.tolist())
            self.round_of_step.extend(s[3] for s in self._steps)
            self._steps.clear()
        for name, values in self._extra_steps.items():
            self.extra.setdefault(name, []).extend(float(v) for v in values)
        self._extra_steps.clear()

    def to_dict(self) -> dict[str, Any]:
        self.finish()
        d = asdict(self)
        d.pop("_steps")
        d.pop("_extra_steps")
        return d


class GenerativeSolver(Reconstructor):
    """A deepinv ``Reconstructor`` driving a :class:`LayeredGenerator`: ``x_hat = solver(y, physics)``.

    Subclasses implement :meth:`solve`, which returns ``(x_hat, RunRecord)``; ``forward`` keeps the
    record in ``self.last_record``. Reconstructions are clamped to ``[0, 1]``.
    """

    method = "generative"

    def __init__(self, generator: LayeredGenerator, config: Any):
        super().__init__(device=generator.device)
        self.generator = generator.eval()
        for p in self.generator.parameters():
            p.requires_grad_(False)
        self.config = config
        self.last_record: RunRecord | None = None

    def forward(self, y: Tensor, physics: Any, **kwargs: Any) -> Tensor:
        x, rec = self.solve(y, physics, **kwargs)
        rec.finish()
        self.last_record = rec
        return x

    def solve(self, y: Tensor, physics: Any, progress: bool = False) -> tuple[Tensor, RunRecord]:
        raise NotImplementedError

    # helpers -----------------------------------------------------------------------------------
    def _check_y(self, y: Tensor) -> None:
        if not torch.isfinite(y).all():
            raise ValueError("measurements contain NaN or infinite values")

    def _init_inputs(self, batch: int, seed: int) -> Inputs:
        g = torch.Generator().manual_seed(seed)
        return self.generator.sample_inputs(batch, generator=g, device=self.generator.device)


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.elapsed = time.perf_counter() - self.t0
