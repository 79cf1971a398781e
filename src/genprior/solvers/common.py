"""Pieces the solvers share: checked settings, the learning-rate schedule, the best-iterate
tracker, the run record and how a solve closes it, the progress bar, latent groups, projections of
latents, the deepinv ``Reconstructor`` bases (with and without a generator), and the result type
of posterior samplers."""

from __future__ import annotations

import copy
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, NamedTuple

import torch
from deepinv.models import Reconstructor
from torch import Tensor

from ..errors import UserError
from ..generators.base import Inputs, LayeredGenerator


# ==== settings ==================================================================================
class SolverConfig:
    """Base of the solvers' settings dataclasses: :meth:`validate` runs when a config is made (and
    on the copy :func:`dataclasses.replace` makes), and again when a solver is built from it, so a
    field set after construction is checked too. A bad value is a :class:`UserError` of one line
    naming the setting, the value and what is allowed."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`UserError` for the first invalid field."""


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """A copy of the dataclass ``config`` with ``overrides`` set (the caller's object is left
    alone), its settings checked; an unknown setting is a :class:`UserError` naming the allowed
    ones."""
    names = [f.name for f in fields(config)]
    for k in overrides:
        if k not in names:
            raise UserError(
                f"{type(config).__name__} has no setting {k!r}: its settings are {', '.join(names)}"
            )
    if overrides:
        return replace(config, **overrides)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


def _shown(value: Any, limit: int = 80) -> str:
    text = " ".join(repr(value).split())  # one line, whatever the repr
    return text if len(text) <= limit else text[: limit - 3] + "..."


def setting_error(config: Any, name: str, allowed: str) -> UserError:
    """The one-line error for a bad setting: ``CSGMConfig: restarts = 0: give an integer >= 1``."""
    return UserError(f"{type(config).__name__}: {name} = {_shown(getattr(config, name))}: {allowed}")


def is_int(v: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """A real number (an int counts; Python or numpy), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def is_sequence(v: Any) -> bool:
    """A list, tuple or other sequence, but not a string."""
    return isinstance(v, Sequence) and not isinstance(v, (str, bytes))


def _int_ok(v: Any, lo: int | None) -> bool:
    return is_int(v) and (lo is None or v >= lo)


def _number_ok(v: Any, lo: float | None, above: bool, inf: bool) -> bool:
    if not is_number(v) or math.isnan(v) or (math.isinf(v) and not (inf and v > 0)):
        return False
    return lo is None or (v > lo if above else v >= lo)


def _int_text(lo: int | None) -> str:
    return "an integer" + (f" >= {lo}" if lo is not None else "")


def _number_text(lo: float | None, above: bool, inf: bool) -> str:
    text = "a number" + ("" if lo is None else f" {'>' if above else '>='} {lo:g}")
    return text + (" (inf allowed)" if inf else "")


def check_int(config: Any, name: str, lo: int | None = None, none: bool = False) -> None:
    """``config.name`` is an integer ``>= lo`` (a bool is not), or None when ``none``."""
    v = getattr(config, name)
    if not ((none and v is None) or _int_ok(v, lo)):
        raise setting_error(config, name, ("give None or " if none else "give ") + _int_text(lo))


def check_number(
    config: Any, name: str, lo: float | None = 0.0, above: bool = False, inf: bool = False
) -> None:
    """``config.name`` is a number ``>= lo`` (``> lo`` when ``above``), finite unless ``inf``."""
    if not _number_ok(getattr(config, name), lo, above, inf):
        raise setting_error(config, name, "give " + _number_text(lo, above, inf))


#: the share of the measurements a posterior sampler holds out by default (with two chains or
#: more) to calibrate its std map
HOLDOUT = 0.1


def holdout_share(holdout: float | None, chains: int) -> float:
    """A ``holdout`` setting resolved: where it is ``None`` (the default), ``HOLDOUT`` with two
    chains or more, 0 with one (one sample has no spread to scale)."""
    if holdout is None:
        return HOLDOUT if chains >= 2 else 0.0
    return float(holdout)


def check_holdout(config: Any) -> None:
    """``config.holdout``: ``None`` (the default) or a share in [0, 1) of the observed entries held
    out to scale the std map, which needs ``config.chains >= 2`` (one sample has no spread to
    scale)."""
    if config.holdout is not None:
        check_number(config, "holdout", 0.0)
        if config.holdout >= 1:
            raise setting_error(config, "holdout", "give a share in [0, 1): the solve needs measurements")
        if config.holdout and config.chains < 2:
            raise setting_error(config, "holdout", "give 0 or set chains >= 2: it scales the chains' spread")


def check_bool(config: Any, name: str) -> None:
    if not isinstance(getattr(config, name), bool):
        raise setting_error(config, name, "give True or False")


def check_choice(config: Any, name: str, choices: Sequence[str]) -> None:
    v = getattr(config, name)
    if not (isinstance(v, str) and v in choices):
        raise setting_error(config, name, f"use one of {', '.join(repr(c) for c in choices)}")


def per_round(value: Any, n: int) -> list[Any]:
    """A per-round setting as ``n`` values: a scalar repeated, a sequence padded with its last."""
    if not is_sequence(value):
        return [value] * n
    seq = list(value)
    if not seq:
        raise UserError("empty per-round setting: give a value, or a non-empty list of values")
    return (seq + [seq[-1]] * n)[:n]


def check_stages(config: Any, name: str) -> None:
    """``None`` or increasing integers >= 1 (the stages of ILO's rounds, of SGILO's refinement)."""
    st = getattr(config, name)
    if st is not None and not (
        is_sequence(st) and all(is_int(s) and s >= 1 for s in st) and all(b > a for a, b in zip(st, st[1:]))
    ):
        raise setting_error(config, name, "give None or increasing integers >= 1, e.g. (1, 2, 3)")


def check_per_round(config: Any, name: str, item_ok: Callable[[Any], bool], what: str) -> None:
    """``config.name`` is one value, or a non-empty sequence of values, each passing ``item_ok``."""
    v = getattr(config, name)
    ok = (is_sequence(v) and len(v) > 0 and all(item_ok(e) for e in v)) or (not is_sequence(v) and item_ok(v))
    if not ok:
        raise setting_error(config, name, f"give {what}, or a non-empty list of them (one per round)")


def check_seed(config: Any, name: str = "seed") -> None:
    v = getattr(config, name)
    if not (is_int(v) and -(2**63) <= v < 2**64):
        raise setting_error(config, name, "give an integer (a 64-bit seed)")


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
    #: a posterior sampler's samples, their mean and per-pixel std (not in :meth:`to_dict`)
    posterior: PosteriorSamples | None = field(default=None, repr=False)
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
        skip = ("posterior", "_steps", "_extra_steps")
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in skip}


# ==== the solvers ================================================================================
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
        self._image_seeds: list[int] | None = None

    def forward(self, y: Tensor, physics: Any, seeds: Sequence[int] | None = None, **kwargs: Any) -> Tensor:
        """``seeds``: one per image of the batch; each image's starting inputs are then drawn from
        its own seed, whatever else shares its batch (a folder solve seeds them from the file names).
        None: the batch's draw from ``config.seed``."""
        if seeds is not None and len(seeds) != y.shape[0]:
            raise ValueError(f"seeds has {len(seeds)} entries for a batch of {y.shape[0]}")
        self._image_seeds = None if seeds is None else [int(s) for s in seeds]
        try:
            x, rec = self.solve(y, physics, **kwargs)
        finally:
            self._image_seeds = None
        rec.finish()
        self.last_record = rec
        return x

    def solve(self, y: Tensor, physics: Any, progress: bool = False) -> tuple[Tensor, RunRecord]:
        raise NotImplementedError

    # helpers -----------------------------------------------------------------------------------
    def _check_y(self, y: Tensor) -> None:
        if not torch.isfinite(y).all():
            raise UserError("measurements contain NaN or infinite values: give finite measurements")

    def _init_inputs(self, batch: int, seed: int) -> Inputs:
        """``batch`` starting inputs from ``seed``, or, during a call given per-image ``seeds``,
        ``batch / len(seeds)`` from each image's seed (laid out restart-major, as restarts are)."""
        G = self.generator
        if self._image_seeds is None:
            return G.sample_inputs(batch, generator=torch.Generator().manual_seed(seed), device=G.device)
        n = len(self._image_seeds)
        if batch % n:
            raise ValueError(f"{batch} starting inputs are not a whole number per image for {n} images")
        draws = [
            G.sample_inputs(batch // n, generator=torch.Generator().manual_seed(s), device=G.device)
            for s in self._image_seeds
        ]
        return {k: torch.stack([d[k] for d in draws], dim=1).flatten(0, 1) for k in draws[0]}


class Timer:
    def __enter__(self) -> Timer:
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.elapsed = time.perf_counter() - self.t0


class GeneratorFreeSolver(Reconstructor):
    """A deepinv ``Reconstructor`` with no generator: ``x_hat = solver(y, physics)``.

    The same shape as :class:`GenerativeSolver`: subclasses implement :meth:`solve` returning
    ``(x_hat, RunRecord)``; ``forward`` keeps the record in ``self.last_record``. The image shape
    ``(C, H, W)`` of the unknown is given to the constructor (nothing else says what ``x`` looks
    like when ``y`` is, say, a vector of CS measurements). Solvers work on the device of ``y``.
    """

    method = "generator-free"

    def __init__(self, image_shape: Sequence[int], config: Any, device: torch.device | str = "cpu"):
        from ..physics.tasks import image_shape3

        super().__init__(device=device)
        self.image_shape = image_shape3(image_shape)
        self.config = config
        self.last_record: RunRecord | None = None

    def forward(self, y: Tensor, physics: Any, **kwargs: Any) -> Tensor:
        x, rec = self.solve(y, physics, **kwargs)
        self.last_record = rec
        return x

    def solve(self, y: Tensor, physics: Any, progress: bool = False) -> tuple[Tensor, RunRecord]:
        raise NotImplementedError

    def _check_y(self, y: Tensor) -> None:
        if not isinstance(y, Tensor) or y.dim() < 1:
            raise UserError("measurements must be a tensor with a leading batch dimension")
        if not torch.isfinite(y).all():
            raise UserError("measurements contain NaN or infinite values: give finite measurements")


# ==== pieces of a solve ===========================================================================
def progress_bar(total: int, enabled: bool, desc: str) -> Any:
    """A tqdm progress bar of ``total`` steps, shown only when ``enabled``, gone when closed."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, leave=False, dynamic_ncols=True)


def latent_groups(generator: LayeredGenerator) -> dict[str, list[str]]:
    """The generator's grouped latents (e.g. StyleGAN's W+ rows): group name -> member names, in
    ``input_specs`` order; ungrouped latents and noise inputs are left out."""
    groups: dict[str, list[str]] = {}
    for spec in generator.input_specs:
        if spec.kind == "latent" and spec.group is not None:
            groups.setdefault(spec.group, []).append(spec.name)
    return groups


class Best(NamedTuple):
    """A solve's output per image: the images ``x``, their measurement errors ``err`` (B,) and the
    round each came from, ``round`` (B,). :class:`BestTracker` has the same three attributes."""

    x: Tensor
    err: Tensor
    round: Tensor


def finish_run(
    rec: RunRecord,
    best: BestTracker | Best,
    timer: Timer,
    round_steps: int | None = None,
    best_round: list[int] | None = None,
    **extra: Any,
) -> tuple[Tensor, RunRecord]:
    """Close the record of a solve and return ``(x_hat, rec)``, ``x_hat`` being ``best.x`` clamped
    to ``[0, 1]``: the time, the buffered per-step values (:meth:`RunRecord.finish`), per image the
    best measurement error and its round (``best_round`` instead of ``best.round`` if given), then
    ``extra`` into ``rec.extra``. ``round_steps``, for a solver of one round, adds that round's
    entry (with this many steps) to ``rec.rounds``."""
    rec.time_s = timer.elapsed
    rec.finish()
    rec.best_meas_err = best.err.tolist()
    rec.best_round = best.round.tolist() if best_round is None else best_round
    rec.extra.update(extra)
    if round_steps is not None:
        rec.rounds.append({"round": 0, "stage": 0, "steps": round_steps, "best_meas_err": best.err.tolist()})
    assert best.x is not None
    return best.x.clamp(0, 1), rec


# ==== results of posterior samplers ===============================================================
#: the largest std a pixel in [0, 1] can have (Popoviciu: half the range)
STD_MAX = 0.5


@dataclass
class PosteriorSamples:
    """Samples of a posterior sampler and their per-pixel summary.

    Attributes:
        samples: ``(S, B, C, H, W)``: ``S`` samples of each of the ``B`` images (any shape
            ``(S, B, ...)`` works).
        mean: ``(B, C, H, W)``, the mean over the samples.
        std: ``(B, C, H, W)``, the per-pixel standard deviation over the samples, unbiased
            (divided by ``S - 1``); with a single sample (``S == 1``) there is no estimate of the
            spread and it is NaN everywhere (as numpy's and torch's unbiased std give).
    """

    samples: Tensor
    mean: Tensor
    std: Tensor

    def __post_init__(self) -> None:
        if self.samples.dim() < 2 or self.samples.shape[0] < 1:
            raise ValueError(
                f"samples must be (S, B, ...) with S >= 1: got shape {tuple(self.samples.shape)}"
            )
        for name in ("mean", "std"):
            if getattr(self, name).shape != self.samples.shape[1:]:
                raise ValueError(
                    f"{name} has shape {tuple(getattr(self, name).shape)}, not {tuple(self.samples.shape[1:])}"
                )

    @classmethod
    def from_samples(cls, samples: Tensor) -> PosteriorSamples:
        """The summary of ``samples`` ``(S, B, ...)``: their mean and unbiased std over ``S``."""
        if samples.dim() < 2 or samples.shape[0] < 1:
            raise ValueError(f"samples must be (S, B, ...) with S >= 1: got shape {tuple(samples.shape)}")
        mean = samples.mean(dim=0)
        if samples.shape[0] == 1:
            std = torch.full_like(mean, math.nan)
        else:
            std = samples.std(dim=0, correction=1)
        return cls(samples=samples, mean=mean, std=std)

    def std_scaled(self, factor: Tensor) -> PosteriorSamples:
        """The same samples and mean with the std map of image ``i`` multiplied by ``factor[i]``
        (``(B,)``): a std map calibrated on held-out measurements (``holdout``). Each std is then
        at most ``STD_MAX`` (Popoviciu's bound for pixels in ``[0, 1]``): a large factor times a
        wide spread cannot claim more uncertainty than any distribution on ``[0, 1]`` has, and
        ``mean +- 2 STD_MAX`` already covers the whole range, so the cap changes no coverage."""
        f = factor.to(self.std).view(-1, *([1] * (self.std.dim() - 1)))
        return PosteriorSamples(self.samples, self.mean, (self.std * f).clamp(max=STD_MAX))

    @property
    def std_raw(self) -> Tensor:
        """The std map as the samples drew it (before :meth:`std_scaled`)."""
        return PosteriorSamples.from_samples(self.samples).std

    @property
    def num_samples(self) -> int:
        return self.samples.shape[0]
