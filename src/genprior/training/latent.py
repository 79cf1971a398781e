"""Train the latent diffusion model on Fashion-MNIST: first the autoencoder
(``genprior train autoencoder``), then the UNet on its latents (``genprior train ldm``).

Data: the 60,000 Fashion-MNIST training images padded to 32x32, as for the StyleGAN2 and the
pixel DDPM (the held-out images come from the test split).

* Autoencoder: the mean squared error of the decoded posterior draw plus ``kl_weight`` times the
  KL divergence to N(0, I) (both per entry); AdamW (no weight decay), warm-up, EMA.
* LDM: the exported autoencoder is frozen; the training latents (posterior means and standard
  deviations) are computed once, ``scale`` = 1 / their standard deviation, and every step draws
  ``z0 = scale (mean + std n)`` and DDPM's epsilon loss at uniform steps of the scaled-linear
  schedule (:class:`~genprior.diffusion.latent.LatentDiffusion`).

Both resume bit for bit (the batch order comes from ``(seed, epoch)``, every draw from
``(seed, step)``; :func:`~genprior.training.loop.train_resumable`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..diffusion.latent import T_STEPS, AEConfig, Autoencoder, LatentDiffusion
from ..diffusion.pixel import UNetConfig, frozen
from ..errors import UserError
from .ddpm import _gen, batch_of, fmnist_training_images
from .loop import CHECKPOINT_NAME, check_run_config, ema_file, export_ema, save_atomic, train_resumable

AE_TRAIN_FORMAT = "genprior-autoencoder-train-1"
LDM_TRAIN_FORMAT = "genprior-ldm-train-1"
DATA = "Fashion-MNIST training split, padded to 32x32"


@dataclass
class AETrainConfig:
    """Hyper-parameters of an autoencoder run (saved in every checkpoint)."""

    steps: int = 12000  # total optimiser steps to reach
    batch: int = 32  # images per step
    lr: float = 1e-3  # AdamW learning rate after the warm-up
    warmup: int = 200  # linear warm-up steps
    ema: float = 0.999  # decay of the exported moving average of the weights
    kl_weight: float = 1e-4  # weight of the KL term (per latent entry) against the per-pixel MSE
    seed: int = 0  # seeds the initialisation, the batch order and every step's noise
    ckpt_every: int = 500  # checkpoint interval in steps
    widths: tuple[int, ...] = (16, 32, 64)  # channels per level (three levels: 8x8 latents at 32 px)
    latent_channels: int = 4  # latent channels

    def __post_init__(self) -> None:
        check_run_config(self)
        if not (self.kl_weight >= 0 and math.isfinite(self.kl_weight)):
            raise UserError(f"AETrainConfig: kl_weight = {self.kl_weight}: give a number >= 0")
        self.widths = tuple(self.widths)
        self.ae_config()  # checks the shapes

    def ae_config(self, size: int = 32, channels: int = 1) -> AEConfig:
        return AEConfig(size, channels, self.widths, self.latent_channels)


def _ae_loss(model: Autoencoder, images: Tensor, cfg: AETrainConfig, step: int, device: Any) -> Tensor:
    x = batch_of(images, cfg, step).to(device)
    noise = torch.randn((len(x), *model.latent_shape), generator=_gen(cfg.seed, step)).to(device)
    return model.loss(x, noise, cfg.kl_weight)[0].mean()


def train_autoencoder(
    out: str | os.PathLike,
    config: AETrainConfig | None = None,
    *,
    resume: bool = False,
    images: Tensor | None = None,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Train (or continue) the KL autoencoder; checkpoints go to ``out/checkpoint.pt``.
    ``images``: ``(N, C, H, W)`` in ``[0, 1]`` (default: Fashion-MNIST's training split)."""
    if images is None:
        images = fmnist_training_images()
    return train_resumable(
        out,
        config,
        AETrainConfig,
        train_format=AE_TRAIN_FORMAT,
        what="autoencoder",
        resume=resume,
        new_model=lambda cfg: Autoencoder(cfg.ae_config(images.shape[-1], images.shape[1])),
        from_dict=Autoencoder.from_dict,
        trainable=lambda m: m.net.parameters(),
        loss_at=lambda m, cfg, s: _ae_loss(m, images, cfg, s, device),
        max_steps=max_steps,
        max_seconds=max_seconds,
        progress=progress,
        device=device,
    )


def export_autoencoder(checkpoint: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write the EMA autoencoder of a training checkpoint (what `train ldm --autoencoder` reads)."""
    return export_ema(checkpoint, out, AE_TRAIN_FORMAT, "autoencoder", data=DATA)


@dataclass
class LDMTrainConfig:
    """Hyper-parameters of a latent diffusion run (saved in every checkpoint)."""

    steps: int = 14261  # total optimiser steps (x batch: the pixel DDPM's budget)
    batch: int = 32  # latents per step
    lr: float = 2e-4  # AdamW learning rate after the warm-up
    warmup: int = 500  # linear warm-up steps
    ema: float = 0.999  # decay of the exported moving average of the weights
    seed: int = 0  # seeds the initialisation, the batch order and every step's noise
    ckpt_every: int = 500  # checkpoint interval in steps
    widths: tuple[int, ...] = (64, 128, 128)  # UNet channels per level (8x8, 4x4, 2x2 latents)
    attention: tuple[bool, ...] = (False, True, True)  # self-attention per level
    layers_per_block: int = 1  # UNet residual blocks per level

    def __post_init__(self) -> None:
        check_run_config(self, ("batch", "ckpt_every", "layers_per_block"))
        self.widths, self.attention = tuple(self.widths), tuple(bool(a) for a in self.attention)

    def unet_config(self, side: int, channels: int) -> UNetConfig:
        return UNetConfig(side, channels, self.widths, self.attention, self.layers_per_block)


@torch.no_grad()
def training_latents(ae: Autoencoder, images: Tensor, device: Any, chunk: int = 500) -> tuple[Tensor, Tensor]:
    """The posterior means and standard deviations of ``images``, on the CPU."""
    means, stds = [], []
    for i in range(0, len(images), chunk):
        m, lv = ae.posterior(images[i : i + chunk].to(device))
        means.append(m.cpu())
        stds.append((0.5 * lv).exp().cpu())
    return torch.cat(means), torch.cat(stds)


def _ldm_loss(model: LatentDiffusion, lat: Tensor, cfg: LDMTrainConfig, step: int, device: Any) -> Tensor:
    pair = batch_of(lat, cfg, step).to(device)  # (batch, 2, C, h, w): mean and std
    g = _gen(cfg.seed, step)
    n = torch.randn(pair[:, 0].shape, generator=g).to(device)
    t = torch.randint(0, T_STEPS, (len(pair),), generator=g).to(device)
    noise = torch.randn(pair[:, 0].shape, generator=g).to(device)
    z0 = model.scale * (pair[:, 0] + pair[:, 1] * n)
    return model.loss(z0, t, noise).mean()


def train_ldm(
    out: str | os.PathLike,
    autoencoder: str | os.PathLike | Autoencoder | None,
    config: LDMTrainConfig | None = None,
    *,
    resume: bool = False,
    images: Tensor | None = None,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Train (or continue) the UNet of a latent diffusion model on a frozen autoencoder (a file
    `train autoencoder --export` wrote, or the model; on ``resume`` the checkpoint's own)."""
    from ..generators.checkpoint import safe_load

    ck_path, ck = os.path.join(out, CHECKPOINT_NAME), None
    if resume:  # the checkpoint's own autoencoder (train_resumable checks the file)
        ck = safe_load(ck_path) if os.path.isfile(ck_path) else None
        ours = isinstance(ck, dict) and ck.get("format") == LDM_TRAIN_FORMAT
        ae = Autoencoder.from_dict(ck["ema"]["autoencoder"]) if ours else None
    elif autoencoder is None:
        raise UserError(
            "train ldm needs --autoencoder FILE (from `genprior train autoencoder --export FILE`)"
        )
    else:
        ae = autoencoder if isinstance(autoencoder, Autoencoder) else Autoencoder.load(autoencoder)
    if images is None and ae is not None:
        images = fmnist_training_images()
    state: dict[str, Any] = {}
    if ae is not None:
        ae = frozen(ae.to(device))
        means, stds = training_latents(ae, images, device)
        state["lat"] = torch.stack([means, stds], 1)
        state["scale"] = float(1 / means.std())

    def new_model(cfg: LDMTrainConfig) -> LatentDiffusion:
        c, h, _ = ae.latent_shape
        return LatentDiffusion(ae, cfg.unet_config(h, c), state["scale"])

    return train_resumable(
        out,
        config,
        LDMTrainConfig,
        train_format=LDM_TRAIN_FORMAT,
        what="LDM",
        resume=resume,
        new_model=new_model,
        from_dict=LatentDiffusion.from_dict,
        trainable=lambda m: m.unet.parameters(),
        loss_at=lambda m, cfg, s: _ldm_loss(m, state["lat"], cfg, s, device),
        loaded=ck,
        max_steps=max_steps,
        max_seconds=max_seconds,
        progress=progress,
        device=device,
    )


def _half(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}


def export_ldm(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    half: bool = True,
    images: Tensor | None = None,
    error_images: int = 128,
) -> dict[str, Any]:
    """Write the EMA latent diffusion model (with its autoencoder) as the file the zoo bundles;
    ``half``: its weights stored as float16 (half the size; loading casts them back to float32).
    The file keeps the autoencoder's errors (of the weights as stored) on the first
    ``error_images`` training images (``images``: those the model was trained on, Fashion-MNIST's
    by default), as float16: ``recon_errors``, from which ReSample takes the floor of its fits."""
    d = ema_file(checkpoint, LDM_TRAIN_FORMAT, "LDM", data=DATA)
    if half:
        d["state_dict"] = _half(d["state_dict"])
        d["autoencoder"] = {**d["autoencoder"], "state_dict": _half(d["autoencoder"]["state_dict"])}
        d["info"]["stored_as"] = "float16"
    if error_images > 0:
        model = LatentDiffusion.from_dict(d)
        images = fmnist_training_images() if images is None else images
        d["recon_errors"] = model.reconstruction_errors(images[:error_images]).half()
        d["info"]["recon_errors_of"] = f"the first {error_images} training images"
    return save_atomic(d, out)
