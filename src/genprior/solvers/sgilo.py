"""Score-Guided Intermediate Layer Optimization (Daras, Dagan, Dimakis, Daskalakis, ICML 2022),
as a calibrated posterior sampler.

SGILO replaces ILO's l1 ball around the generator's range by a score model trained on the
generator's intermediate layer (:mod:`genprior.score`), and samples the posterior of that layer:

1. **Round 0** (a warm start): ILO's first round, Adam on the generator's inputs (with geocross
   and the spherical projection), which finds the region of the posterior.
2. **The score round** at the score model's stage ``k``: the state ``u`` (normalised, with the
   latent the tail shares with the head where the score model covers it: StyleGAN2's ``w`` of
   the later W+ rows) and the latents ``w`` the tail reads that the generator draws independently
   of the state (prior ``N(0, I)``) follow Langevin dynamics on
   ``log p(y | u, w) + log p_theta(u) + log N(w)``, ``K`` chains per image in one batch, each
   starting from round 0's answer plus its own noise of std ``sigma_max``. ``w`` includes the
   tail's noise maps (StyleGAN2's), whose prior ``N(0, 1)`` is exact too. Where the score model
   covers the tail's shared latent, round 0's answer with the mean of its rows is first fitted
   again to the measurements (``fit_steps`` Adam steps). ``p(y | u, w)`` is
   Gaussian with the physics' noise level (``noise_sigma``, default 0.01, where the physics has
   none).
   Annealed over noise levels ``sigma_max -> sigma_min`` of the prior (Song & Ermon 2019;
   Jalal et al. 2021 for the likelihood): at level ``sigma_i`` the score of the blurred prior,
   the likelihood with variance ``noise_sigma^2 + step_scale sigma_i^2 L`` (``L`` the top
   eigenvalue of ``J^T A^T A J``, measured per chain by power iteration) and the step
   ``step_scale sigma_i^2``. Then ``final_steps`` of plain Langevin on the exact likelihood and
   the prior at ``sigma_min``, with the step ``step_scale / (L / noise_sigma^2 + L_prior)`` tied
   to the posterior's curvature (both measured by power iteration): small enough that the
   discretisation bias is a fraction ``~ step_scale / 2`` of the variance.
3. **Refinement** (``refine_steps``): each chain goes on as ILO from where it ended (its deeper
   stages, relative l1 balls), under the discrepancy principle at the noise level: a chain the
   prior's range explains keeps its sample, one it cannot leaves the range only as far as the
   measurements ask.
4. **Output**: the mean of the chains' last points (default), or one chain's; the record keeps
   the samples (:class:`~genprior.solvers.common.PosteriorSamples`, with the per-pixel standard
   deviation) and each chain's measurement error. Nothing here sees the ground truth.

Where genprior differs from the official code (giannisdaras/sgilo), see ``docs/sgilo.md``: the
official update (``update="official"``) is Adam on the measurement loss plus a score "nudge" at a
fixed ``t = 0.01`` with a step of ``1e-10`` and noise of ``0.025`` unrelated to the step, one
chain, and metrics chosen by an oracle over iterations; genprior anneals, ties the steps to the
noise, runs several chains, keeps the RGB skip, and never selects by the truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..generators.base import LayeredGenerator
from ..metrics import measurement_error
from ..physics.heldout import HeldOut
from ..score.model import InputPrior, modelled_tensors, split_modelled
from .common import (
    Best,
    GenerativeSolver,
    PosteriorSamples,
    RunRecord,
    SolverConfig,
    Timer,
    apply_overrides,
    check_bool,
    check_choice,
    check_holdout,
    check_int,
    check_number,
    check_seed,
    check_stages,
    finish_run,
    holdout_share,
    progress_bar,
    setting_error,
)

UPDATES = ("langevin", "official")
OUTPUTS = ("mean", "sample")


@dataclass
class SGILOConfig(SolverConfig):
    """Settings of :class:`SGILO`.

    Attributes:
        score: path of a score model file (``genprior train score``); ``None``: the zoo's score
            model for this generator (refused if there is none).
        score_stage: the stage of the score model to use (``None``: the shallowest available, the
            exact input prior where the generator's inputs are all ``N(0, I)``;
            :func:`genprior.zoo.load_score_model`); with ``score``, the stage that file must model.
        warm_steps: Adam steps of round 0 (the warm start on the generator's inputs).
        lr: round 0's Adam learning rate; ``geocross_weight``: its geocross weight.
        fit_steps, fit_lr: where the score model covers a latent the tail shares (StyleGAN2's later
            W+ rows as one ``w``), the start is round 0's state with the mean of those rows, and
            ``fit_steps`` Adam steps (learning rate ``fit_lr``, in the normalised units) on the
            measurement error bring it back to the measurements before the chains start.
        chains: Langevin chains per image (``K``), run as one batch.
        levels: annealing levels, geometric from ``sigma_max`` to ``sigma_min``.
        steps_per_level: Langevin steps per annealing level.
        final_steps: Langevin steps on the exact likelihood at ``sigma_min`` after the annealing.
        sigma_max, sigma_min: noise levels of the prior's score (in units of the normalised state,
            whose spread is 1).
        step_scale: the step's fraction of what stability allows (``epsilon`` of annealed Langevin).
        noise_sigma: the measurement noise std of the likelihood when the physics has no Gaussian
            noise model (a physics with one uses its own ``sigma``).
        update: ``"langevin"`` (the calibrated sampler) or ``"official"`` (the reference code's
            rule: Adam lr ``official_lr`` on the measurement loss, a score step of ``1e-10`` at
            ``t = 0.01`` and noise ``0.025``; no annealing).
        output: ``"mean"`` (the posterior mean over the chains) or ``"sample"`` (chain 0).
        power_iters: power iterations that measure the curvature ``L``.
        refine_steps: Adam steps of each refinement round (0: no refinement). After the chains,
            every chain goes on as ILO from where it ended: rounds at ``refine_stages``, each in an
            l1 ball of relative radius ``refine_radius`` around what the earlier layers produce
            from the chain's point, under the discrepancy principle with the floor
            ``refine_tolerance * sigma^2`` per observed measurement: a chain that explains the
            measurements to that level keeps its sample, one the prior's range cannot explain
            (a real image pinned down by many measurements) leaves the range only as far as the
            measurements ask. This is where SGILO meets ILO: the chains decide where the
            measurements say little, ILO's deeper rounds where they say much.
        refine_stages: the refinement's stages (deeper than the score model's; ``None``: ILO's
            default stages deeper than it).
        refine_radius: the refinement rounds' relative l1 radius (ILO's ``radius``; 0.4, ILO's
            default, since 2026-12-05, before which it was 0.2: on the face DCGAN 0.4 gains 0.2-1.7
            dB on its samples and 0.3-3.3 dB on the astronaut, which the 0.2 balls cannot reach;
            on Fashion-MNIST the two are level within 0.2 dB on shared seeds; docs/sgilo.md).
        refine_tolerance: the discrepancy floor's multiple of the noise variance (Morozov's
            ``tau >= 1``).
        refine_randomize: randomise-then-optimise (Bardsley et al. 2014; perturb-and-MAP): each
            chain's refinement fits its own copy of the measurements, with fresh noise of the
            likelihood's std added to the entries the floor counts as observed (the non-zero
            ones: an inpainting's missing pixels are zero), and stops at that copy's noise level
            (twice the variance: the truth misses it by the noise twice over). The optimisation
            then carries the noise's uncertainty into the chains' spread as a sampler would. Off
            (the default until 2026-12-05), every chain is refined to the same measurements and
            the chains agree where the noise, not the prior, leaves the image open: at denoising
            (sigma 0.2, 12 held-out Fashion-MNIST images) the calibration is 0.81 off and 0.94
            on, at 0.5 dB of the mean's PSNR; at noise 0.01 the two are level (docs/sgilo.md).
        holdout: the share of each image's observed measurement entries held out of a solve to
            calibrate the std map (``None``, the default since 2026-12-06: ``HOLDOUT`` = 0.1 with two
            chains or more, 0 with one, which has no spread to scale; 0: none, the default before).
            That solve sees the other entries only; then, per image, the std map is scaled up
            (never down) until the chains' ``mean +- 2 std`` (with the noise) covers 95 % of the
            held-out entries (:func:`holdout_scale`, split conformal calibration). The chains are
            then calibrated against what the data say, not only against the prior: where the
            generator cannot make the image (a real photo the face DCGAN does not make), they
            agree on something wrong and the std map is too narrow without it (calibration
            0.74-0.85 on the astronaut, 0.90-0.99 with it; docs/sgilo.md). The samples keep their
            own spread; the record holds the scale per image (``holdout_scale``).
        holdout_refit: with a held-out share, solve a second time on all the measurements (the
            same seeds) and return that solve's mean and samples, its std map scaled by the
            held-out solve's factor: the estimate of a solve without ``holdout``, to every digit,
            with the calibrated std map, at twice the time. ``None`` (the default): on wherever a
            share is held out; ``False``: the held-out solve's own estimate, which lacks the
            held-out measurements (0.2-0.9 dB of the mean's PSNR on Fashion-MNIST), in half the
            time. The factor then stands for a solve that saw 1/(1 - holdout) times its
            measurements, whose spread and misses both shrink with them (docs/sgilo.md measures
            the calibration it gives).
        tail_latents: let the latents the tail still reads that the generator draws independently
            of the state (``G.independent_tail_latents``) follow the Langevin dynamics too, with
            their exact ``N(0, I)`` prior; off, they stay at round 0's values. (StyleGAN2 has none:
            its later W+ rows repeat the ``w`` that made the state, which the score model covers
            with the state and the chains always sample.)
        tail_noise: let the noise maps the tail reads (StyleGAN2's ``noise_k ..``, drawn ``N(0, 1)``
            independently of the state by the generator) follow the dynamics too, with that exact
            prior; off, every chain keeps round 0's draw, which removes their share of the
            posterior's spread (the std map is then too narrow where the noise reaches the pixels).
        seed: seed of round 0's inputs and of the Langevin noise.
    """

    score: str | None = None
    score_stage: int | None = None
    warm_steps: int = 150
    lr: float = 0.1
    fit_steps: int = 100
    fit_lr: float = 0.03
    geocross_weight: float = 1e-4
    chains: int = 8
    levels: int = 10
    steps_per_level: int = 10
    final_steps: int = 60
    sigma_max: float = 1.0
    sigma_min: float = 0.05
    step_scale: float = 0.1
    noise_sigma: float = 0.01
    update: str = "langevin"
    official_lr: float = 0.05
    output: str = "mean"
    power_iters: int = 8
    refine_steps: int = 100
    refine_stages: Sequence[int] | None = None
    refine_radius: float = 0.4
    refine_tolerance: float = 1.0
    refine_randomize: bool = True
    holdout: float | None = None
    holdout_refit: bool | None = None
    tail_latents: bool = True
    tail_noise: bool = True
    seed: int = 0

    def validate(self) -> None:
        if self.score is not None and not isinstance(self.score, str):
            raise setting_error(self, "score", "give None or the path of a score model file")
        check_int(self, "score_stage", 0, none=True)
        for name in ("warm_steps", "fit_steps", "levels", "steps_per_level", "final_steps", "refine_steps"):
            check_int(self, name, 0)
        check_int(self, "chains", 1)
        check_int(self, "power_iters", 1)
        check_bool(self, "tail_latents")
        check_bool(self, "tail_noise")
        check_bool(self, "refine_randomize")
        if self.holdout_refit is not None:
            check_bool(self, "holdout_refit")
        for name in ("lr", "fit_lr", "official_lr", "geocross_weight"):
            check_number(self, name)
        for name in ("sigma_max", "sigma_min", "step_scale", "noise_sigma"):
            check_number(self, name, 0.0, above=True)
        if self.sigma_min > self.sigma_max:
            raise setting_error(self, "sigma_min", f"give a level <= sigma_max = {self.sigma_max}")
        check_stages(self, "refine_stages")
        check_number(self, "refine_radius")
        check_number(self, "refine_tolerance", 1.0)
        check_holdout(self)
        if self.holdout_refit and not self.holdout_share:
            raise setting_error(
                self,
                "holdout_refit",
                "give a share `holdout` > 0 and chains >= 2 too: the factor comes from them",
            )
        if self.step_scale > 1:
            raise setting_error(self, "step_scale", "give a number in (0, 1]")
        check_choice(self, "update", UPDATES)
        check_choice(self, "output", OUTPUTS)
        check_seed(self)

    @property
    def holdout_share(self) -> float:
        """``holdout`` resolved: where it is ``None``, ``HOLDOUT`` with two chains or more, else 0."""
        return holdout_share(self.holdout, self.chains)

    @property
    def refit(self) -> bool:
        """Whether a solve with a held-out share solves again on all the measurements."""
        return bool(self.holdout_share) and self.holdout_refit is not False


def _per_chain(x: Tensor, K: int) -> Tensor:
    """``K`` copies of a batch, chain-major: entry ``k * B + i`` is chain ``k`` of image ``i``."""
    return x.repeat(K, *([1] * (x.dim() - 1)))


def _per_sample(t: Tensor, like: Tensor) -> Tensor:
    """A per-sample ``(n,)`` tensor shaped to broadcast over ``like`` ``(n, ...)``, on its device."""
    return t.to(like.device).view(-1, *([1] * (like.dim() - 1)))


def holdout_scale(
    ax: Tensor, y: Tensor, held: Tensor, sigma: float, k: float = 2.0, level: float = 0.95
) -> Tensor:
    """Per image, the factor (at least 1) by which the chains' spread must grow for ``mean +- k
    std`` to cover a share ``level`` of the held-out measurements (split conformal calibration):
    ``ax`` ``(K, B, ...)`` the chains' measurements, ``y`` ``(B, ...)`` the measurements, ``held``
    the held-out entries (1), ``sigma`` the noise std. An entry ``j`` is covered at scale ``s``
    when ``(m_j - y_j)^2 <= k^2 (s^2 v_j + sigma^2)``, ``m`` and ``v`` the chains' mean and
    variance there (``v`` times ``1 + 1/K``: the mean's own Monte-Carlo error): the factor is the
    ``s`` the held-out entry of rank ``ceil((n + 1) level)`` needs (of ``n``; the largest where
    ``n < 1 / (1 - level) - 1``), split conformal prediction's finite-sample quantile. Where the
    chains agree exactly (all clamped at 0 or 1) and the mean misses, no scale covers the entry;
    when more than ``1 - level`` of the entries are such, the rank is taken among the others (so
    the factor stays finite: an untrained generator's saturated pixels). A quantile,
    not a ratio of sums: the misses are heavier-tailed than a Gaussian's where the generator
    cannot make the image (on the astronaut at 90 % missing pixels a ratio of sums left the
    calibration at 0.755 while a quarter of the pixels fell outside ``mean +- 2 std``).

    Where the entry at that rank has less spread than the noise (``v_j < sigma^2``), the noise,
    not the samples, picked it: the coverage of noisy measurements hardly depends on ``s`` there,
    and the rank's need, a difference of noise-sized terms over a small ``v_j``, made std maps
    wider than ``[0, 1]`` at denoising 0.2 (docs/diffusion.md). There the
    factor is at most :func:`gaussian_upper`'s, the largest that a Gaussian model of all the
    held-out misses (spread ``s^2 v + sigma^2``) does not reject at ``level``. Without noise
    the rule is the quantile's alone."""
    K = ax.shape[0]
    v = ax.var(0, correction=1) * (1 + 1 / K)
    miss2 = (ax.mean(0) - y).pow(2)
    excess = (miss2 / k**2 - sigma**2).clamp_min(0)
    need = torch.where(v > 0, excess / v.clamp_min(1e-30), torch.where(excess > 0, math.inf, 0.0))
    out = torch.ones(y.shape[0], dtype=y.dtype, device=y.device)
    for i in range(y.shape[0]):
        h = held[i] > 0
        vh = v[i][h]
        e, order = need[i][h].sort()
        if not e.numel():
            continue
        r = min(e.numel(), math.ceil((e.numel() + 1) * level))  # the conformal rank ceil((n + 1) level),
        if math.isinf(e[r - 1]):  # the largest where n is too small for it; where no scale covers that
            fin = e.isfinite()  # many, the rank among the entries some scale covers
            e, order = e[fin], order[fin]
            r = min(e.numel(), math.ceil((e.numel() + 1) * level))
            if not e.numel():
                continue
        out[i] = e[r - 1].sqrt().clamp_min(1)
        if vh[order[r - 1]] < sigma**2:  # that entry's spread is below the noise: the noise picked it
            out[i] = out[i].clamp_max(gaussian_upper(vh, miss2[i][h], sigma, level))
    return out


def gaussian_upper(v: Tensor, r2: Tensor, sigma: float, level: float = 0.95) -> float:
    """The largest factor ``s >= 1`` (inf if none) that a Gaussian model of held-out misses does
    not reject at ``level``: ``r2`` the squared misses of the chains' mean, ``v`` the chains'
    variance at those entries, the model ``r_j ~ N(0, s^2 v_j + sigma^2)``; the upper end of the
    profile likelihood's interval for ``t = s^2`` (a drop of ``chi2_1(level) / 2`` from its top
    over ``t >= 1``). The top is sought on a logarithmic grid from 1 to ten times the largest
    entry's own best ``t`` (beyond it every term falls), the end by bisection. Entries without
    spread say nothing of ``s``."""
    keep = v > 0
    v, r2 = v[keep].cpu().double(), r2[keep].cpu().double()  # a few vectors: on the CPU, any device
    if not v.numel():
        return math.inf

    def loglik(t: Tensor) -> Tensor:  # at each t, in chunks: (points, entries) stays small
        out = []
        for c in t.split(32):
            var = c[:, None] * v + sigma**2
            out.append(-0.5 * (var.log() + r2 / var).sum(1))
        return torch.cat(out)

    top = max(float(((r2 - sigma**2) / v).max()), 1.0)
    t = torch.logspace(0, math.log10(top) + 1, 401, dtype=torch.float64)
    ll = loglik(t)
    z = float(torch.special.ndtri(torch.tensor((1 + level) / 2, dtype=torch.float64)))
    bar = float(ll.max()) - z**2 / 2  # chi2_1(level) / 2 below the top
    last = int(torch.nonzero(ll >= bar).max())
    if last == len(t) - 1:
        return math.inf
    lo, hi = t[last].log(), t[last + 1].log()  # ll(lo) >= bar > ll(hi)
    for _ in range(40):
        mid = (lo + hi) / 2
        if float(loglik(mid.exp().view(1))) >= bar:
            lo = mid
        else:
            hi = mid
    return float(lo.exp().sqrt())


def _power_top(apply: Any, like: tuple[Tensor, ...], n: int, iters: int, g: torch.Generator) -> Tensor:
    """Per-sample top eigenvalue ``(n,)`` of the symmetric PSD map ``v -> apply(v)`` on tuples
    shaped like ``like`` (on its device and dtype; the start is drawn from the CPU generator
    ``g``, so it is the same on every device)."""
    v = tuple(torch.randn(x.shape, generator=g).to(x) for x in like)
    lam = torch.zeros(n, device=like[0].device)
    for _ in range(iters):
        nv = torch.sqrt(sum(x.flatten(1).pow(2).sum(1) for x in v)).clamp_min(1e-30)
        v = tuple(x / _per_sample(nv, x) for x in v)
        w = apply(v)
        lam = sum((a * b).flatten(1).sum(1) for a, b in zip(w, v))
        v = w
    return lam.abs().detach()


class SGILO(GenerativeSolver):
    """SGILO as a deepinv ``Reconstructor``: ``x_hat = SGILO(G, SGILOConfig(...))(y, physics)``.

    ``solver.last_samples`` holds the :class:`PosteriorSamples` of the last solve (also
    ``last_record.posterior``). ``score_model`` may be given directly (any object with
    ``stage``, ``shapes``, ``normalize``, ``denormalize``, ``score(u, sigma)``,
    ``check_generator`` and, if it covers the tail's shared latent, ``latents``)."""

    method = "sgilo"

    def __init__(
        self,
        generator: LayeredGenerator,
        config: SGILOConfig | None = None,
        score_model: Any = None,
        **overrides: Any,
    ):
        config = apply_overrides(config or SGILOConfig(), overrides)
        super().__init__(generator, config)
        if score_model is None:
            from ..zoo import load_score_model

            score_model = load_score_model(generator, config.score, config.score_stage)
        score_model.check_generator(generator)
        generator.check_stage(score_model.stage)
        if (
            score_model.stage < 1
            and not tuple(getattr(score_model, "latents", ()))
            and not InputPrior.fits(generator)
        ):
            raise UserError(
                "a score model of stage 0 must model the generator's latent (its `latents`): give one "
                "trained with `genprior train score --stage 0` or of a stage >= 1"
            )
        self.score_model = score_model.eval() if hasattr(score_model, "eval") else score_model
        for p in getattr(self.score_model, "parameters", lambda: [])():
            p.requires_grad_(False)
        self.last_samples: PosteriorSamples | None = None
        self.last_holdout: Tensor | None = None  # the last solve's held-out entries (1), shaped as y

    # ---- pieces -------------------------------------------------------------------------------
    def _sigma_y(self, physics: Any) -> float:
        model = getattr(physics, "noise_model", None)
        sigma = getattr(model, "sigma", None)
        if model is None or type(model).__name__ == "ZeroNoise" or sigma is None:
            return float(self.config.noise_sigma)
        s = float(torch.as_tensor(sigma).float().max())
        return s if s > 0 else float(self.config.noise_sigma)

    def _warm_start(self, y: Tensor, physics: Any) -> tuple[dict[str, Tensor], RunRecord]:
        from .ilo import ILO, ILOConfig

        cfg: SGILOConfig = self.config
        ilo = ILO(
            self.generator,
            ILOConfig(
                stages=(), steps=cfg.warm_steps, lr=cfg.lr, geocross_weight=cfg.geocross_weight, seed=cfg.seed
            ),
        )
        ilo(y, physics)
        assert ilo.last_inputs is not None and ilo.last_record is not None
        return ilo.last_inputs, ilo.last_record

    # ---- the solve ----------------------------------------------------------------------------
    def solve(self, y: Tensor, physics: Any, progress: bool = False) -> tuple[Tensor, RunRecord]:
        cfg: SGILOConfig = self.config
        self._check_y(y)
        self.last_holdout = None
        if not cfg.holdout_share:
            return self._solve(y, physics, progress)
        from ..metrics import observed

        g = torch.Generator().manual_seed(cfg.seed + 3)
        held = observed(y) * (torch.rand(y.shape, generator=g) < cfg.holdout_share).to(y)
        x, rec = self._solve(y * (1 - held), HeldOut(physics, 1 - held), progress)
        post = self.last_samples
        assert post is not None
        K = post.num_samples
        with torch.no_grad():
            ax = physics.A(post.samples.flatten(0, 1)).view(K, *y.shape)
            scale = holdout_scale(ax, y, held, rec.extra["noise_sigma"])
        if cfg.refit:  # the estimate from all the measurements, the factor from the held-out solve
            first = rec.time_s
            x, rec = self._solve(y, physics, progress)
            rec.time_s += first
            post = self.last_samples
            assert post is not None
        self.last_samples = rec.posterior = post.std_scaled(scale)
        self.last_holdout = held
        rec.extra["holdout_scale"] = scale.tolist()
        rec.extra["holdout_entries"] = held.flatten(1).sum(1).tolist()
        rec.extra["posterior_std_mean"] = rec.posterior.std.flatten(1).mean(1).tolist()  # K >= 2: validated
        return x, rec

    def _solve(self, y: Tensor, physics: Any, progress: bool) -> tuple[Tensor, RunRecord]:
        cfg: SGILOConfig = self.config
        G, S = self.generator, self.score_model
        B, K, stage = y.shape[0], cfg.chains, S.stage
        sigma_y = self._sigma_y(physics)
        rec = RunRecord(method=self.method)
        rec.extra["noise_sigma"] = sigma_y
        with Timer() as timer:
            inputs, rec0 = self._warm_start(y, physics)
            rec.rounds.extend(rec0.rounds)
            rec.loss.extend(rec0.loss)
            rec.meas_err.extend(rec0.meas_err)
            rec.round_of_step.extend(rec0.round_of_step)
            # K chains per image, chain-major: entry k * B + i is chain k of image i
            # the variables: the normalised state, with the tail's shared latent where the score
            # model covers it (StyleGAN2's later W+ rows: one w, started at the mean of round 0's
            # rows, then fitted again) (prior: the score model), and the latents the tail reads that
            # the generator draws independently of the state (prior: N(0, I), exact)
            shared = tuple(getattr(S, "latents", ()))
            with torch.no_grad():
                u0 = S.normalize(modelled_tensors(G, stage, inputs, shared))
            if shared and cfg.fit_steps:
                u0 = self._refit(u0, inputs, y, physics, shared, rec)
            inputs = {k: _per_chain(v.detach(), K) for k, v in inputs.items()}
            yk = _per_chain(y, K)
            lat = (
                [k for k in G.independent_tail_latents(stage) if k not in shared] if cfg.tail_latents else []
            )
            if cfg.tail_noise:
                lat += [k for k in G.tail_inputs(stage) if G.spec(k).kind == "noise"]
            n_state = len(S.shapes)
            g = torch.Generator().manual_seed(cfg.seed + 1)
            with torch.no_grad():
                u = tuple(_per_chain(x, K) for x in u0)
                u = u + tuple(inputs[k].detach().clone() for k in lat)
                if cfg.update == "langevin":  # each chain starts from its own draw of the blur at sigma_max
                    u = tuple(x + cfg.sigma_max * torch.randn(x.shape, generator=g).to(x) for x in u)

            def image(uu: tuple[Tensor, ...]) -> Tensor:
                cur = {**inputs, **dict(zip(lat, uu[n_state:]))}
                return G.tail(stage, *split_modelled(S.denormalize(uu[:n_state]), cur, shared))

            def prior_score(uu: tuple[Tensor, ...], sigma: float) -> tuple[Tensor, ...]:
                return S.score(uu[:n_state], sigma) + tuple(-x / (1 + sigma**2) for x in uu[n_state:])

            def residual(uu: tuple[Tensor, ...]) -> Tensor:
                ax = physics.A(image(uu))
                if ax.shape != yk.shape:
                    raise UserError(
                        f"the physics maps {K * B} images to {tuple(ax.shape)}, not {tuple(yk.shape)}: "
                        "its operator must not depend on the batch (use chains=1)"
                    )
                return ax - yk

            def data_grad(uu: tuple[Tensor, ...], var: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
                """grad of -||A x - y||^2 / (2 var) per chain, and the per-chain squared error."""
                uu = tuple(x.detach().requires_grad_(True) for x in uu)
                r = residual(uu)
                sq = r.flatten(1).pow(2).sum(1)
                grads = torch.autograd.grad((sq / (2 * var)).sum(), uu)
                return tuple(-gr for gr in grads), sq.detach()

            def lik_curvature(uu: tuple[Tensor, ...]) -> Tensor:
                """Top eigenvalue of J^T A^T A J per chain (finite-difference J v, exact J^T w)."""
                h = 1e-3
                base = tuple(x.detach().requires_grad_(True) for x in uu)
                r0 = residual(base)

                def apply(v: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
                    with torch.no_grad():
                        jv = (residual(tuple(a + h * b for a, b in zip(uu, v))) - r0.detach()) / h
                    return torch.autograd.grad(r0, base, jv, retain_graph=True)

                return _power_top(apply, uu, K * B, cfg.power_iters, g)

            def prior_curvature(uu: tuple[Tensor, ...], sigma: float) -> Tensor:
                h = 1e-3 * max(sigma, 1e-3)
                with torch.no_grad():
                    s0 = prior_score(uu, sigma)

                    def apply(v: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
                        s1 = prior_score(tuple(a + h * b for a, b in zip(uu, v)), sigma)
                        return tuple(-(a - b) / h for a, b in zip(s1, s0))

                    return _power_top(apply, uu, K * B, cfg.power_iters, g)

            total = cfg.levels * cfg.steps_per_level + cfg.final_steps
            bar = progress_bar(total, progress, "SGILO")
            L = lik_curvature(u)
            rec.extra["lik_curvature"] = L.view(K, B).max(0).values.tolist()
            levels: list[dict[str, Any]] = []
            if cfg.update == "official":
                u = self._official(u, n_state, data_grad, total, bar)
            else:
                sigmas = (
                    torch.logspace(math.log10(cfg.sigma_max), math.log10(cfg.sigma_min), cfg.levels).tolist()
                    if cfg.levels > 1
                    else [cfg.sigma_min] * cfg.levels
                )
                for sig in sigmas:
                    var = sigma_y**2 + cfg.step_scale * sig**2 * L
                    eta = cfg.step_scale * sig**2
                    for _ in range(cfg.steps_per_level):
                        u, sq = self._langevin_step(
                            u, data_grad, var, lambda uu, s=sig: prior_score(uu, s), eta, g
                        )
                        rec.log_step(sq.view(K, B).mean(0), sq.view(K, B).mean(0), B, 1)
                        bar.update(1)
                    levels.append({"sigma": sig, "step": eta, "meas_err": sq.view(K, B).mean(0).tolist()})
                if cfg.final_steps:
                    Lp = prior_curvature(u, cfg.sigma_min)
                    eta_f = cfg.step_scale / (L / sigma_y**2 + Lp)
                    var = torch.full_like(L, sigma_y**2)
                    rec.extra["prior_curvature"] = Lp.view(K, B).max(0).values.tolist()
                    rec.extra["final_step"] = eta_f.view(K, B).min(0).values.tolist()
                    eta_b = [_per_sample(eta_f, x) for x in u]
                    for _ in range(cfg.final_steps):
                        u, sq = self._langevin_step(
                            u, data_grad, var, lambda uu: prior_score(uu, cfg.sigma_min), eta_b, g
                        )
                        rec.log_step(sq.view(K, B).mean(0), sq.view(K, B).mean(0), B, 1)
                        bar.update(1)
            bar.close()
            with torch.no_grad():
                x = image(u).clamp(0, 1)
                err = residual(u).flatten(1).pow(2).mean(1)
            lang_err = err.view(K, B)  # where the chains ended
            refine_rounds: list[dict[str, Any]] = []
            if cfg.refine_steps:
                x, refine_rounds = self._refine(
                    u, n_state, lat, inputs, shared, yk, physics, sigma_y, rec, progress, g
                )
                with torch.no_grad():
                    err = measurement_error(x, yk, physics)
            post = PosteriorSamples.from_samples(x.view(K, B, *x.shape[1:]))
            chain_err = err.view(K, B)
            out = post.mean if cfg.output == "mean" else post.samples[0]
            with torch.no_grad():
                out_err = measurement_error(out, y, physics)
        rec.rounds.append(
            {
                "round": len(rec.rounds),
                "stage": stage,
                "steps": total,
                "chains": K,
                "update": cfg.update,
                "levels": levels,
                "final_meas_err": lang_err.mean(0).tolist(),
            }
        )
        for rd in refine_rounds:
            rec.rounds.append({**rd, "round": len(rec.rounds)})
        self.last_samples = rec.posterior = post
        best = Best(out, out_err, torch.full((B,), len(rec.rounds) - 1, dtype=torch.long))
        return finish_run(
            rec,
            best,
            timer,
            chain_meas_err=chain_err.tolist(),
            posterior_std_mean=post.std.flatten(1).mean(1).tolist() if K > 1 else None,
        )

    def _refit(self, u0, inputs, y, physics, shared, rec):
        """Adam on the measurement error of the modelled tensors (state and shared latent, one
        copy per image): replacing round 0's separate tail rows by their mean moves the image far
        from the measurements (compressed sensing m = 50 on six of the Fashion-MNIST StyleGAN2's
        samples: from at most 0.021 to 0.13-1.0 per measurement, ``benchmarks/sgilo_start_check.py``),
        and the chains should start where the measurements are explained."""
        cfg: SGILOConfig = self.config
        G, S = self.generator, self.score_model
        v = tuple(x.detach().clone().requires_grad_(True) for x in u0)
        opt = torch.optim.Adam(v, lr=cfg.fit_lr)
        for i in range(cfg.fit_steps + 1):
            x = G.tail(S.stage, *split_modelled(S.denormalize(v), inputs, shared))
            err = (physics.A(x) - y).flatten(1).pow(2).mean(1)
            if i == 0:
                rec.extra["start_meas_err"] = err.tolist()
            if i == cfg.fit_steps:
                rec.extra["fit_meas_err"] = err.tolist()
                break
            rec.log_step(err.detach(), err.detach(), y.shape[0], len(rec.rounds))
            opt.zero_grad(set_to_none=True)
            err.sum().backward()
            opt.step()
        return tuple(x.detach() for x in v)

    def _refine(self, u, n_state, lat, inputs, shared, yk, physics, sigma_y, rec, progress, g):
        """Each chain goes on as ILO from its last point (see ``SGILOConfig.refine_steps``): the
        chains' images (clamped) and the refinement's rounds for the record."""
        from ..metrics import observed, observed_share
        from .ilo import ILO, ILOConfig, Start

        cfg: SGILOConfig = self.config
        G, S = self.generator, self.score_model
        state, ins = split_modelled(
            S.denormalize(u[:n_state]), {**inputs, **dict(zip(lat, u[n_state:]))}, shared
        )
        # with randomised targets the truth misses each chain's copy by noise of variance 2 sigma^2
        noise_var = (2 if cfg.refine_randomize else 1) * sigma_y**2
        floor = cfg.refine_tolerance * noise_var * float(observed_share(yk).mean())
        ilo = ILO(
            G,
            ILOConfig(
                stages=cfg.refine_stages,
                steps=cfg.refine_steps,
                radius=cfg.refine_radius,
                noise_floor=floor,
                geocross_weight=cfg.geocross_weight,
                seed=cfg.seed,
            ),
        )
        target = yk
        if cfg.refine_randomize:  # each chain fits its own copy of the measurements, fresh noise added
            e = torch.randn(yk.shape, generator=g).to(yk)
            target = yk + sigma_y * e * observed(yk)
        x, r = ilo.solve(target, physics, progress, start=Start(S.stage, state, ins))
        K = cfg.chains
        B = yk.shape[0] // K
        rec.extra["refine_floor"] = floor
        # per image, the share of its chains whose output left the chain's own sample
        rec.extra["refined_share"] = (torch.tensor(r.best_round).view(K, B) > 0).float().mean(0).tolist()
        return x, [{**rd, "refine": True} for rd in r.rounds[1:]]

    @staticmethod
    def _langevin_step(u, data_grad, var, score, eta, g):
        """One unadjusted Langevin step ``u + eta (grad log p(y|u) + score(u)) + sqrt(2 eta) xi``;
        ``eta`` a number or per-tensor broadcastable tensors."""
        dg, sq = data_grad(u, var.view(-1) if isinstance(var, Tensor) else var)
        with torch.no_grad():
            sc = score(u)
            etas = eta if isinstance(eta, list) else [eta] * len(u)
            new = tuple(
                x + e * (a + b) + torch.sqrt(2 * torch.as_tensor(e)) * torch.randn(x.shape, generator=g).to(x)
                for x, a, b, e in zip(u, dg, sc, etas, strict=True)
            )
        return new, sq

    def _official(self, u, n_state, data_grad, total, bar):
        """The reference code's rule: Adam on the measurement loss, a 1e-10 score step at t=0.01
        and noise of 0.025 (in the normalised state), one update per step."""
        cfg: SGILOConfig = self.config
        S = self.score_model
        sigma_t = S.sde.sigma_of_t(0.01) if hasattr(S, "sde") else 0.045
        u = tuple(x.detach().clone().requires_grad_(True) for x in u)
        opt = torch.optim.Adam(u, lr=cfg.official_lr)
        g = torch.Generator().manual_seed(cfg.seed + 2)
        for _ in range(total):
            dg, _ = data_grad(u, 1.0)
            opt.zero_grad(set_to_none=True)
            for x, d in zip(u, dg):
                x.grad = -d
            opt.step()
            with torch.no_grad():
                sc = S.score(tuple(x.detach() for x in u[:n_state]), sigma_t)
                for x, s in zip(u, sc):  # the score nudges the state only
                    x.add_(1e-10 * s + 0.025 * torch.randn(x.shape, generator=g).to(x))
            bar.update(1)
        return tuple(x.detach() for x in u)
