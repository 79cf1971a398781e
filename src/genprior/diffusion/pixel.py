"""A pixel-space diffusion model (DDPM, epsilon prediction) and its deepinv denoiser.

The network is diffusers' ``UNet2DModel`` built from arguments (:class:`UNetConfig`; nothing is
loaded from a hub); the noise schedule is DDPM's linear one (1000 steps, betas 1e-4 .. 0.02),
the schedule deepinv's :class:`~deepinv.sampling.DPS` and :class:`~deepinv.sampling.DiffPIR`
assume. Images live in ``[0, 1]``; the network sees ``2 x - 1``.

:class:`PixelDiffusion` holds the network and its schedule and gives

* :meth:`PixelDiffusion.denoiser`: the model as a deepinv ``Denoiser`` ``D(x, sigma)`` through
  deepinv's own :class:`~deepinv.models.wrapper.ScoreModelWrapper` (``x = x0 + sigma * n`` with
  ``x0`` in ``[0, 1]``; the wrapper maps ``sigma`` to the model's step through its
  ``alphas_cumprod``), which deepinv's DPS and DiffPIR drive;
* :meth:`PixelDiffusion.sample`: DDIM sampling (eta 0 by default) from the prior.

Bundled weights are a plain dict (``{"format", "unet_config", "state_dict", "info"}``) that
``torch.load(weights_only=True)`` reads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..io import config_dict, config_from

FORMAT = "genprior-ddpm-1"
T_STEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02


@dataclass(frozen=True)
class UNetConfig:
    """diffusers ``UNet2DModel`` arguments (one comment per field)."""

    size: int = 32  # image side
    channels: int = 1  # image channels
    widths: tuple[int, ...] = (16, 32, 64)  # channels per resolution level (block_out_channels)
    attention: tuple[bool, ...] = (False, False, True)  # self-attention at each level
    layers_per_block: int = 1  # residual blocks per level
    groups: int = 8  # group-norm groups

    def __post_init__(self) -> None:
        if len(self.widths) != len(self.attention) or not self.widths:
            raise UserError("UNetConfig: widths and attention need one entry per level")
        if any(w % self.groups for w in self.widths):
            raise UserError(f"UNetConfig: every width must be a multiple of groups = {self.groups}")
        if self.size % 2 ** (len(self.widths) - 1):
            raise UserError(f"UNetConfig: size {self.size} is not divisible by 2^(levels - 1)")

    def build(self) -> nn.Module:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # built from arguments: nothing comes from a hub
        from diffusers import UNet2DModel

        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in self.attention)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(self.attention))
        return UNet2DModel(
            sample_size=self.size,
            in_channels=self.channels,
            out_channels=self.channels,
            block_out_channels=tuple(self.widths),
            down_block_types=down,
            up_block_types=up,
            layers_per_block=self.layers_per_block,
            norm_num_groups=self.groups,
            attention_head_dim=8,
        )


def linear_alphas_cumprod(steps: int = T_STEPS) -> Tensor:
    """``alpha_bar_t`` of DDPM's linear schedule, float64, ``(steps,)``."""
    betas = torch.linspace(BETA_START, BETA_END, steps, dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


class PixelDiffusion(nn.Module):
    """An epsilon-prediction UNet on ``2 x - 1`` with DDPM's linear schedule."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or UNetConfig()
        self.unet = self.config.build()
        self.info: dict[str, Any] = {}
        self.register_buffer("alphas_cumprod", linear_alphas_cumprod().float(), persistent=False)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.config.channels, self.config.size, self.config.size)

    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    def eps(self, z: Tensor, t: Tensor) -> Tensor:
        """The predicted noise of ``z = sqrt(a_t) (2 x - 1) + sqrt(1 - a_t) eps`` at integer steps ``t``."""
        return self.unet(z, t, return_dict=False)[0]

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        return self.eps(z, t)

    def loss(self, x: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Per-sample mean squared error of the predicted noise; ``x`` in ``[0, 1]``."""
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        z = a.sqrt() * (2 * x - 1) + (1 - a).sqrt() * noise
        return (self.eps(z, t) - noise).pow(2).flatten(1).mean(1)

    def denoiser(self) -> nn.Module:
        """The model as a deepinv ``Denoiser`` (deepinv's ScoreModelWrapper on this schedule)."""
        from deepinv.models.wrapper import ScoreModelWrapper

        return ScoreModelWrapper(
            self,
            prediction_type="epsilon",
            scale_t=self.alphas_cumprod.sqrt(),
            variance_preserving=True,
            takes_integer_time=True,
            n_timesteps=T_STEPS,
            device=self.device,
        )

    @torch.no_grad()
    def sample(self, n: int, steps: int = 100, seed: int = 0, eta: float = 0.0) -> Tensor:
        """``n`` images in ``[0, 1]`` by DDIM with ``steps`` uniform steps (``eta = 1``: DDPM-like)."""
        z = ddim_sample(self.eps, (n, *self.image_shape), self.alphas_cumprod, steps, seed, eta, clip=1.0)
        return (z.clamp(-1, 1) + 1) / 2

    # ---- files ------------------------------------------------------------------------------
    def to_dict(self, info: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "unet_config": config_dict(self.config),
            "state_dict": {k: v.detach().cpu() for k, v in self.unet.state_dict().items()},
            "info": dict(info or {}),
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "the diffusion model") -> PixelDiffusion:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise UserError(
                f"{source} is not a genprior pixel diffusion model: train one with `genprior train ddpm`"
            )
        model = cls(config_from(UNetConfig, d["unet_config"]))
        model.unet.load_state_dict(d["state_dict"])
        model.info = dict(d.get("info", {}))
        return model.eval()

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> PixelDiffusion:
        return load_frozen(cls, path, device)


def frozen(model: nn.Module) -> Any:
    """``model`` in eval mode with its parameters frozen."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def load_frozen(cls: Any, path: str | os.PathLike, device: torch.device | str = "cpu") -> Any:
    """``cls.from_dict`` of the file at ``path`` (read with ``torch.load(weights_only=True)``),
    on ``device``, frozen."""
    from ..generators.checkpoint import safe_load

    return frozen(cls.from_dict(safe_load(path), source=str(path)).to(device))


def ddim_times(steps: int, total: int = T_STEPS) -> list[int]:
    """``steps`` integer steps from ``total - 1`` down to 0, uniformly spaced."""
    return torch.linspace(total - 1, 0, steps).round().long().tolist()


def ddim_sample(
    eps: Callable[[Tensor, Tensor], Tensor],
    shape: tuple[int, ...],
    alphas_cumprod: Tensor,
    steps: int,
    seed: int,
    eta: float = 0.0,
    clip: float | None = None,
) -> Tensor:
    """DDIM from ``N(0, I)`` of ``shape`` with the noise predictor ``eps(z, t)`` on the integer
    steps of ``alphas_cumprod`` (``steps`` uniform ones); Tweedie's ``x0`` is clamped to
    ``[-clip, clip]`` when ``clip`` is given. Every draw comes from ``seed`` (on the CPU)."""
    g = torch.Generator().manual_seed(seed)
    dev = alphas_cumprod.device
    z = torch.randn(shape, generator=g).to(dev)
    ts = ddim_times(steps, len(alphas_cumprod))
    for i, t in enumerate(ts):
        a = alphas_cumprod[t]
        a_prev = alphas_cumprod[ts[i + 1]] if i + 1 < len(ts) else torch.ones_like(a)
        e = eps(z, torch.full((shape[0],), t, device=dev, dtype=torch.long))
        x0 = (z - (1 - a).sqrt() * e) / a.sqrt()
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        z = ddim_step(x0, e, a, a_prev, eta, torch.randn(z.shape, generator=g).to(dev))
    return z


def ddim_step(x0: Tensor, eps: Tensor, a: Tensor, a_prev: Tensor, eta: float, noise: Tensor) -> Tensor:
    """One DDIM step from ``(x0, eps)`` at ``alpha_bar = a`` to ``a_prev`` (Song et al. 2021,
    eq. 12): ``sqrt(a_prev) x0 + sqrt(1 - a_prev - s^2) eps + s noise`` with
    ``s = eta sqrt((1 - a_prev) / (1 - a) (1 - a / a_prev))``."""
    s = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp_min(0).sqrt()
    return a_prev.sqrt() * x0 + (1 - a_prev - s**2).clamp_min(0).sqrt() * eps + s * noise
