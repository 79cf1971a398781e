"""Train a score model of a generator's state at one stage (``genprior train score``).

The data are the generator's own samples: every step draws fresh inputs from the generator's own
input distribution (``G.sample_native_inputs``, seeded by ``(seed, step)``; for StyleGAN2 one
``w`` in every W+ row) and takes ``state = G.head(stage, inputs)``, with the latent the tail
shares with the head where there is one (StyleGAN2's ``w``; at stage 0, round 0's search space,
that latent is all there is to model: ``--stage 0``). The network
(:class:`genprior.score.model.StateScoreNet`) learns ``eps`` of the VP SDE on the normalised state
(denoising score matching, times ``t ~ U(t_min, 1)``), with Adam (AdamW without weight decay) and
an exponential moving average of its weights (the EMA is what is exported).

Runs resume bit for bit: a step's data, times and noise come from generators seeded by the step
number, so a checkpoint needs only the weights, the EMA, the optimiser and the step; a run stopped
and resumed anywhere gives the same weights as one that never stopped (tested). Checkpoints are
written atomically to ``OUT/checkpoint.pt`` every ``ckpt_every`` steps and when stopping
(:func:`~genprior.training.loop.train_resumable`, as for the other trainers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from ..generators.base import LayeredGenerator
from ..generators.checkpoint import safe_load
from ..score.model import StateScoreModel, StateScoreNet, modelled_tensors, weights_fingerprint
from ..score.sde import VPSDE
from .loop import CHECKPOINT_NAME, check_run_config, export_ema, train_resumable

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
        check_run_config(self, ("batch", "width", "depth", "heads", "norm_samples", "ckpt_every"))
        if self.stage < 0:
            raise UserError(f"ScoreTrainConfig: stage = {self.stage}: give an integer >= 0")
        if self.width % self.heads or self.width % 2:
            raise UserError(
                f"ScoreTrainConfig: width = {self.width}: give an even multiple of heads = {self.heads}"
            )
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
    ``out/checkpoint.pt`` (:func:`~genprior.training.loop.train_resumable`, which also keeps the
    generator's fingerprint: a run resumes only on the generator it started on). Returns the last
    checkpoint. ``max_steps`` / ``max_seconds`` stop early (with a checkpoint) for tests and
    time-boxed runs. ``device`` is where the generator and the network run (``G`` is moved
    there); every random draw is made on the CPU, so a run sees the same data on any device (the
    weights agree up to the devices' float arithmetic), and a checkpoint resumes on any device."""
    G = G.to(device)
    sha = weights_fingerprint(G)
    ck_path = Path(out) / CHECKPOINT_NAME
    loaded = safe_load(ck_path) if resume and ck_path.is_file() else None
    if (
        isinstance(loaded, dict)
        and loaded.get("format") == TRAIN_FORMAT
        and loaded.get("generator_sha") != sha
    ):
        raise UserError(f"{ck_path} was trained on another generator: resume with the same --model")

    def new_model(cfg: ScoreTrainConfig) -> StateScoreModel:
        G.check_stage(cfg.stage)
        latents = G.shared_tail_latents(cfg.stage)
        if cfg.stage < 1 and not latents:
            raise UserError(
                "stage 0 of this generator has nothing to learn (no state, and its inputs' prior is "
                "N(0, I) already): give a stage >= 1"
            )
        mean, scale = _normalisation(G, cfg, latents, device)
        torch.manual_seed(cfg.seed)  # the network's initialisation only (after the generator ran)
        net = StateScoreNet(tuple(tuple(m.shape) for m in mean), cfg.width, cfg.depth, cfg.heads)
        info = {"generator": generator_name, "trained_on": "generator samples"}
        return StateScoreModel(net, mean, scale, cfg.stage, sha, VPSDE(), info, latents)

    return train_resumable(
        out,
        config,
        ScoreTrainConfig,
        train_format=TRAIN_FORMAT,
        what="score",
        resume=resume,
        new_model=new_model,
        from_dict=StateScoreModel.from_dict,
        trainable=lambda m: m.net.parameters(),
        loss_at=lambda m, cfg, s: _batch_loss(m, G, cfg, s, device),
        loaded=loaded,
        extra={"generator_sha": sha, "generator": generator_name},
        max_steps=max_steps,
        max_seconds=max_seconds,
        progress=progress,
        device=device,
    )


def export_score(checkpoint: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write the EMA model of a training checkpoint as the inference-only file the zoo bundles."""
    return export_ema(checkpoint, out, TRAIN_FORMAT, "score")
