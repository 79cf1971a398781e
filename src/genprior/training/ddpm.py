"""Train the pixel-space diffusion model on Fashion-MNIST (``genprior train ddpm``).

Data: the 60,000 Fashion-MNIST training images padded to 32x32, as for the StyleGAN2 (the
held-out images come from the test split). Loss: DDPM's epsilon regression at uniform integer
steps of the linear schedule (:class:`~genprior.diffusion.pixel.PixelDiffusion`); AdamW (no
weight decay) with a linear warm-up; an exponential moving average of the weights, which is what
is exported.

Runs resume bit for bit: the batch order of an epoch is a permutation seeded by ``(seed, epoch)``
and a step's times and noise come from a generator seeded by ``(seed, step)``, so a checkpoint
needs only the weights, the EMA, the optimiser and the step; a run stopped and resumed anywhere
gives the weights of one that never stopped (tested). Checkpoints are written atomically to
``OUT/checkpoint.pt`` every ``ckpt_every`` steps and when stopping.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..diffusion.pixel import T_STEPS, PixelDiffusion, UNetConfig
from ..errors import UserError
from .loop import check_run_config, export_ema, train_resumable

TRAIN_FORMAT = "genprior-ddpm-train-1"


@dataclass
class DDPMTrainConfig:
    """Hyper-parameters of a run (saved in every checkpoint)."""

    steps: int = 20000  # total optimiser steps to reach
    batch: int = 32  # images per step
    lr: float = 2e-4  # AdamW learning rate after the warm-up
    warmup: int = 500  # linear warm-up steps
    ema: float = 0.999  # decay of the exported moving average of the weights
    seed: int = 0  # seeds the initialisation, the batch order and every step's noise
    ckpt_every: int = 500  # checkpoint interval in steps
    widths: tuple[int, ...] = (16, 32, 64)  # UNet channels per level
    attention: tuple[bool, ...] = (False, False, True)  # self-attention per level
    layers_per_block: int = 1  # UNet residual blocks per level

    def __post_init__(self) -> None:
        check_run_config(self, ("batch", "ckpt_every", "layers_per_block"))
        self.widths, self.attention = tuple(self.widths), tuple(bool(a) for a in self.attention)
        self.unet_config()  # checks the shapes

    def unet_config(self, size: int = 32, channels: int = 1) -> UNetConfig:
        return UNetConfig(size, channels, self.widths, self.attention, self.layers_per_block)


def _gen(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 16 + 7) % (2**63))


def fmnist_training_images(size: int = 32) -> Tensor:
    """The Fashion-MNIST training images, ``(N, 1, size, size)`` float in ``[0, 1]``."""
    from .stylegan2 import fmnist_training_images as uint8_images

    return uint8_images(size).float() / 255.0


def batch_of(images: Tensor, cfg: DDPMTrainConfig, step: int) -> Tensor:
    """The images of ``step``: batches of a per-epoch permutation seeded by ``(seed, epoch)``."""
    per_epoch = len(images) // cfg.batch
    if per_epoch < 1:
        raise UserError(f"batch {cfg.batch} is larger than the data set ({len(images)} images)")
    epoch, j = divmod(step, per_epoch)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
    return images[perm[j * cfg.batch : (j + 1) * cfg.batch]]


def _step_loss(model: PixelDiffusion, images: Tensor, cfg: DDPMTrainConfig, step: int, device: Any) -> Tensor:
    """The loss of ``step``: its batch, and times and noise drawn on the CPU (the same on every device)."""
    x = batch_of(images, cfg, step).to(device)
    g = _gen(cfg.seed, step)
    t = torch.randint(0, T_STEPS, (len(x),), generator=g).to(device)
    noise = torch.randn(x.shape, generator=g).to(device)
    return model.loss(x, t, noise).mean()


def train_ddpm(
    out: str | os.PathLike,
    config: DDPMTrainConfig | None = None,
    *,
    resume: bool = False,
    images: Tensor | None = None,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Train (or continue) the pixel diffusion model; checkpoints go to ``out/checkpoint.pt``.
    ``images``: ``(N, C, H, W)`` in ``[0, 1]`` (default: Fashion-MNIST's training split at 32x32).
    ``max_steps`` / ``max_seconds`` stop early, with a checkpoint. Returns the last checkpoint."""
    if images is None:
        images = fmnist_training_images()
    return train_resumable(
        out,
        config,
        DDPMTrainConfig,
        train_format=TRAIN_FORMAT,
        what="DDPM",
        resume=resume,
        new_model=lambda cfg: PixelDiffusion(cfg.unet_config(images.shape[-1], images.shape[1])),
        from_dict=PixelDiffusion.from_dict,
        trainable=lambda m: m.unet.parameters(),
        loss_at=lambda m, cfg, s: _step_loss(m, images, cfg, s, device),
        max_steps=max_steps,
        max_seconds=max_seconds,
        progress=progress,
        device=device,
    )


def export_ddpm(checkpoint: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write the EMA model of a training checkpoint as the inference file the zoo bundles."""
    return export_ema(
        checkpoint, out, TRAIN_FORMAT, "DDPM", data="Fashion-MNIST training split, padded to 32x32"
    )
