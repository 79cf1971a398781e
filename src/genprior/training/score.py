"""Train a score model of a generator's state at one stage (``genprior train score``).

The data are the generator's own samples: every step draws fresh inputs from the generator's own
input distribution (``G.sample_native_inputs``, seeded by ``(seed, step)``; for StyleGAN2 one
``w`` in every W+ row) and takes ``state = G.head(stage, inputs)``, with the latent the tail
shares with the head where there is one (StyleGAN2's ``w``; at stage 0, round 0's search space,
that latent is all there is to model: ``--stage 0``). The network
(:class:`genprior.score.model.StateScoreNet`) learns ``eps`` of the VP SDE on the normalised state
(denoising score matching, times ``t ~ U(t_min, 1)``), with Adam and an exponential moving average
of its weights (the EMA is what is exported).

Runs resume bit for bit: a step's data, times and noise come from generators seeded by the step
number, so a checkpoint needs only the weights, the EMA, the optimiser and the step; a run stopped
and resumed anywhere gives the same weights as one that never stopped (tested). Checkpoints are
written atomically to ``OUT/checkpoint.pt`` every ``ckpt_every`` steps and when stopping.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..generators.base import LayeredGenerator
from ..generators.checkpoint import safe_load
from ..io import atomic_path
from ..score.model import StateScoreModel, StateScoreNet, modelled_tensors, weights_fingerprint
from ..score.sde import VPSDE
from .loop import run_steps

CHECKPOINT_NAME = "checkpoint.pt"
TRAIN_FORMAT = "genprior-score-train-1"


@dataclass
class ScoreTrainConfig:
    """Hyper-parameters of a run (saved in every checkpoint)."""

    stage: int = 2  # the generator stage whose state is modelled (0: only the latent the tail shares)
    steps: int = 3000  # total optimiser steps to reach
    batch: int = 64  # generator samples per step
    lr: float = 5e-4  # Adam learning rate (after a linear warm-up of `warmup` steps)
    warmup: int = 200  # warm-up steps
    width: int = 96  # token width of the transformer
    depth: int = 3  # transformer layers
    heads: int = 4  # attention heads
    ema: float = 0.999  # decay of the exported moving average of the weights
    t_min: float = 1e-4  # smallest diffusion time trained on (noise level ~0.003)
    norm_samples: int = 2048  # generator samples that fix the state's normalisation
    seed: int = 0  # seeds the network's initialisation and every step's data
    ckpt_every: int = 250  # checkpoint interval in steps

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", int) and (not isinstance(v, int) or isinstance(v, bool)):
                raise UserError(f"ScoreTrainConfig: {f.name} = {v!r}: give an integer")
        if self.stage < 0:
            raise UserError(f"ScoreTrainConfig: stage = {self.stage}: give an integer >= 0")
        for name in ("batch", "width", "depth", "heads", "norm_samples", "ckpt_every"):
            if getattr(self, name) < 1:
                raise UserError(f"ScoreTrainConfig: {name} = {getattr(self, name)}: give an integer >= 1")
        if self.steps < 0 or self.warmup < 0 or self.seed < 0:
            raise UserError("ScoreTrainConfig: steps, warmup and seed must be >= 0")
        if self.width % self.heads or self.width % 2:
            raise UserError(
                f"ScoreTrainConfig: width = {self.width}: give an even multiple of heads = {self.heads}"
            )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"ScoreTrainConfig: lr = {self.lr}: give a number > 0")
        if not 0 <= self.ema < 1:
            raise UserError(f"ScoreTrainConfig: ema = {self.ema}: give a number in [0, 1)")
        if not 0 < self.t_min < 1:
            raise UserError(f"ScoreTrainConfig: t_min = {self.t_min}: give a number in (0, 1)")


def _gen(seed: int, step: int, what: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 16 + what) % (2**63))


@torch.no_grad()
def generator_states(
    G: LayeredGenerator,
    stage: int,
    n: int,
    generator: torch.Generator,
    latents: tuple[str, ...] = (),
    device: torch.device | str = "cpu",
) -> tuple[Tensor, ...]:
    """``n`` states at ``stage`` of the generator's own samples (fresh inputs from ``generator``:
    :meth:`~genprior.generators.base.LayeredGenerator.sample_native_inputs`, so StyleGAN2's W+
    rows are one ``w``, not the independent rows of the space ILO searches), followed by the
    shared tail latent when ``latents`` names its inputs (:func:`modelled_tensors`). The inputs
    are drawn on the CPU (``generator`` is a CPU generator) and moved to ``device``, where ``G``
    runs: the same draws on every device."""
    inputs = {k: v.to(device) for k, v in G.sample_native_inputs(n, generator=generator).items()}
    return modelled_tensors(G, stage, inputs, latents)


def _normalisation(
    G: LayeredGenerator, cfg: ScoreTrainConfig, latents: tuple[str, ...], device: torch.device | str = "cpu"
) -> tuple[list[Tensor], list[float]]:
    states = generator_states(G, cfg.stage, cfg.norm_samples, _gen(cfg.seed, 0, 15), latents, device)
    mean = [s.mean(0) for s in states]
    scale = [max(float((s - m).pow(2).mean().sqrt()), 1e-8) for s, m in zip(states, mean)]
    return mean, scale


def denoising_loss(
    model: StateScoreModel, u: tuple[Tensor, ...], t: Tensor, eps: tuple[Tensor, ...]
) -> Tensor:
    """Per-sample mean squared error of the predicted noise, ``(B,)``."""
    xt = tuple(model.sde.perturb(x, t, e) for x, e in zip(u, eps))
    pred = model.eps(xt, t)
    n = sum(e[0].numel() for e in eps)
    return sum((p - e).pow(2).flatten(1).sum(1) for p, e in zip(pred, eps)) / n


def _batch_loss(
    model: StateScoreModel, G: LayeredGenerator, cfg: ScoreTrainConfig, step: int, device: torch.device | str
) -> Tensor:
    gen = _gen(cfg.seed, step, 1)
    u = model.normalize(generator_states(G, cfg.stage, cfg.batch, gen, model.latents, device))
    g = _gen(cfg.seed, step, 2)  # times and noise drawn on the CPU: the same on every device
    t = (cfg.t_min + (1 - cfg.t_min) * torch.rand(cfg.batch, generator=g)).to(device)
    eps = tuple(torch.randn(x.shape, generator=g).to(device) for x in u)
    return denoising_loss(model, u, t, eps).mean()


@torch.no_grad()
def loss_by_level(
    model: StateScoreModel,
    G: LayeredGenerator,
    n: int = 512,
    seed: int = 12345,
    times: tuple[float, ...] = (),
) -> list[dict[str, float]]:
    """Denoising loss on ``n`` held-out generator states (a seed training never uses) at fixed
    times, with the noise level ``sigma`` each time stands for (on the device of ``model``, where
    ``G`` must be too)."""
    times = times or (1e-3, 0.01, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0)
    dev = model.scale.device
    gen = torch.Generator().manual_seed(seed)
    u = model.normalize(generator_states(G, model.stage, n, gen, model.latents, dev))
    out = []
    for tv in times:
        g = torch.Generator().manual_seed(seed + 1)
        eps = tuple(torch.randn(x.shape, generator=g).to(dev) for x in u)
        t = torch.full((n,), float(tv), device=dev)
        out.append(
            {
                "t": tv,
                "sigma": model.sde.sigma_of_t(tv),
                "loss": float(denoising_loss(model, u, t, eps).mean()),
            }
        )
    return out


def train_score(
    G: LayeredGenerator,
    out: str | os.PathLike,
    config: ScoreTrainConfig | None = None,
    *,
    resume: bool = False,
    generator_name: str = "",
    max_steps: int | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Train (or continue) a score model of ``G``'s state at ``config.stage``; checkpoints go to
    ``out/checkpoint.pt``. Returns the last checkpoint. ``max_steps`` / ``max_seconds`` stop early
    (with a checkpoint) for tests and time-boxed runs. ``device`` is where the generator and the
    network run (``G`` is moved there); every random draw is made on the CPU, so a run sees the
    same data on any device (the weights agree up to the devices' float arithmetic), and a
    checkpoint resumes on any device."""
    out = Path(out)
    G = G.to(device)
    ck_path = out / CHECKPOINT_NAME
    sha = weights_fingerprint(G)
    if resume:
        if not ck_path.is_file():
            raise UserError(f"cannot resume: {ck_path} does not exist; drop --resume to start a new run")
        ck = safe_load(ck_path)
        if not isinstance(ck, dict) or ck.get("format") != TRAIN_FORMAT:
            raise UserError(f"{ck_path} is not a score training checkpoint: give another --out")
        if ck["generator_sha"] != sha:
            raise UserError(f"{ck_path} was trained on another generator: resume with the same --model")
        saved = dict(ck["config"])
        saved["steps"] = config.steps if config is not None else saved["steps"]
        cfg = ScoreTrainConfig(**saved)
        model = StateScoreModel.from_dict(ck["model"])
        ema = StateScoreModel.from_dict(ck["ema"])
        step, history, elapsed = int(ck["step"]), list(ck["history"]), float(ck["elapsed_s"])
    else:
        cfg = config or ScoreTrainConfig()
        G.check_stage(cfg.stage)
        latents = G.shared_tail_latents(cfg.stage)
        if cfg.stage < 1 and not latents:
            raise UserError(
                "stage 0 of this generator has nothing to learn (no state, and its inputs' prior is "
                "N(0, I) already): give a stage >= 1"
            )
        if ck_path.exists():
            raise UserError(f"{ck_path} already exists: pass --resume to continue it, or give another --out")
        mean, scale = _normalisation(G, cfg, latents, device)
        torch.manual_seed(cfg.seed)  # the network's initialisation only
        net = StateScoreNet(tuple(tuple(m.shape) for m in mean), cfg.width, cfg.depth, cfg.heads)
        info = {"generator": generator_name, "trained_on": "generator samples"}
        model = StateScoreModel(net, mean, scale, cfg.stage, sha, VPSDE(), info, latents)
        ema = copy.deepcopy(model)
        step, history, elapsed = 0, [], 0.0
        ck = None
    model, ema = model.to(device), ema.to(device)
    opt = torch.optim.Adam(model.net.parameters(), lr=cfg.lr)
    if resume:
        opt.load_state_dict(ck["opt"])
    for p in ema.parameters():
        p.requires_grad_(False)
    stop_at = cfg.steps if max_steps is None else min(cfg.steps, max_steps)

    def checkpoint(step: int, elapsed: float) -> dict[str, Any]:
        d = {
            "format": TRAIN_FORMAT,
            "config": asdict(cfg),
            "model": model.to_dict(),
            "ema": ema.to_dict(),
            "opt": opt.state_dict(),
            "step": step,
            "history": history,
            "elapsed_s": elapsed,
            "generator_sha": sha,
            "generator": generator_name,
        }
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(ck_path) as tmp:
            torch.save(d, tmp)
        return d

    return run_steps(
        step=step,
        stop_at=stop_at,
        elapsed=elapsed,
        history=history,
        opt=opt,
        params=model.net.parameters(),
        ema_params=ema.net.parameters(),
        lr=cfg.lr,
        warmup=cfg.warmup,
        ema=cfg.ema,
        ckpt_every=cfg.ckpt_every,
        loss_at=lambda s: _batch_loss(model, G, cfg, s, device),
        checkpoint=checkpoint,
        max_seconds=max_seconds,
        progress=progress,
        what="score",
    )


def export_score(checkpoint: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write the EMA model of a training checkpoint as the inference-only file the zoo bundles."""
    ck = safe_load(checkpoint)
    if not isinstance(ck, dict) or ck.get("format") != TRAIN_FORMAT:
        raise UserError(f"{checkpoint} is not a score training checkpoint")
    d = dict(ck["ema"])
    d["info"] = {
        **d.get("info", {}),
        "steps": ck["step"],
        "train_config": ck["config"],
        "elapsed_s": ck["elapsed_s"],
    }
    with atomic_path(out) as tmp:
        torch.save(d, tmp)
    return d
