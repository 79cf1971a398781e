"""A latent diffusion model: a KL-regularised autoencoder and an epsilon-prediction UNet on its
latents (Rombach et al. 2022), the prior ReSample, Latent-DPS and PSLD run on.

* :class:`Autoencoder`: diffusers' ``AutoencoderKL`` built from arguments (:class:`AEConfig`;
  nothing comes from a hub). Images in ``[0, 1]``; the network sees and returns ``2 x - 1``.
  ``posterior(x)`` gives the Gaussian's mean and log-variance; ``decode(z)`` returns images
  (not clamped, so that gradients reach every pixel).
* :class:`LatentDiffusion`: the autoencoder, a diffusers ``UNet2DModel`` on the latents and LDM's
  "scaled linear" schedule (1000 steps, ``sqrt(beta)`` linear from ``sqrt(0.00085)`` to
  ``sqrt(0.012)``). Latents are scaled to unit standard deviation: ``encode(x) = scale *
  mean(x)`` and ``decode(z) = decoder(z / scale)``, with ``scale`` measured on the training
  latents when the UNet's training starts. ``recon_errors`` holds the autoencoder's own errors
  ``decode(encode(x)) - x`` on a few training images, kept when the model is exported:
  :meth:`LatentDiffusion.recon_floor` shows them through a physics, and ReSample stops its fits
  there rather than bending the latent to explain what the autoencoder cannot represent.

Files are plain dicts that ``torch.load(weights_only=True)`` reads: ``{"format":
"genprior-autoencoder-1", "ae_config", "state_dict", "info"}`` and ``{"format":
"genprior-ldm-1", "autoencoder": <the autoencoder's dict>, "unet_config", "state_dict",
"scale", "recon_errors", "info"}`` (one self-contained file; ``recon_errors`` float16, or None).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UserError
from ..io import config_dict, config_from
from .pixel import UNetConfig, ddim_sample, load_frozen

AE_FORMAT = "genprior-autoencoder-1"
LDM_FORMAT = "genprior-ldm-1"
T_STEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012  # LDM's scaled-linear schedule


@dataclass(frozen=True)
class AEConfig:
    """diffusers ``AutoencoderKL`` arguments (one comment per field)."""

    size: int = 32  # image side
    channels: int = 1  # image channels
    widths: tuple[int, ...] = (16, 32, 64)  # channels per level; the latent is size / 2^(levels - 1)
    latent_channels: int = 4  # channels of the latent
    layers_per_block: int = 1  # residual blocks per level (the decoder has one more)
    groups: int = 8  # group-norm groups

    def __post_init__(self) -> None:
        if not self.widths or any(w % self.groups for w in self.widths):
            raise UserError(f"AEConfig: give widths that are multiples of groups = {self.groups}")
        if self.size % 2 ** (len(self.widths) - 1):
            raise UserError(f"AEConfig: size {self.size} is not divisible by 2^(levels - 1)")
        if self.latent_channels < 1 or self.layers_per_block < 1:
            raise UserError("AEConfig: latent_channels and layers_per_block must be >= 1")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.size // 2 ** (len(self.widths) - 1)
        return (self.latent_channels, side, side)

    def build(self) -> nn.Module:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # built from arguments: nothing comes from a hub
        from diffusers import AutoencoderKL

        levels = len(self.widths)
        return AutoencoderKL(
            in_channels=self.channels,
            out_channels=self.channels,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(self.widths),
            layers_per_block=self.layers_per_block,
            latent_channels=self.latent_channels,
            norm_num_groups=self.groups,
            sample_size=self.size,
            mid_block_add_attention=False,
        )


def _check_format(d: Any, fmt: str, source: str, hint: str) -> None:
    if not isinstance(d, dict) or d.get("format") != fmt:
        raise UserError(f"{source} is not a genprior {hint}")


class Autoencoder(nn.Module):
    """A KL autoencoder of images in ``[0, 1]``."""

    def __init__(self, config: AEConfig | None = None) -> None:
        super().__init__()
        self.config = config or AEConfig()
        self.net = self.config.build()
        self.info: dict[str, Any] = {}

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.config.latent_shape

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of the encoder's Gaussian for images ``x`` in ``[0, 1]``."""
        d = self.net.encode(2 * x - 1).latent_dist
        return d.mean, d.logvar

    def decode(self, z: Tensor) -> Tensor:
        """Images (about ``[0, 1]``, not clamped) of latents ``z``."""
        return (self.net.decode(z).sample + 1) / 2

    def loss(self, x: Tensor, noise: Tensor, kl_weight: float) -> tuple[Tensor, Tensor]:
        """Per-image mean squared reconstruction error of a posterior draw (``noise`` standard
        normal, the latent's shape) and the KL divergence to N(0, I) per latent entry."""
        mean, logvar = self.posterior(x)
        z = mean + (0.5 * logvar).exp() * noise
        rec = (self.decode(z) - x).pow(2).flatten(1).mean(1)
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).flatten(1).mean(1)
        return rec + kl_weight * kl, rec

    def to_dict(self, info: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "format": AE_FORMAT,
            "ae_config": config_dict(self.config),
            "state_dict": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
            "info": dict(info if info is not None else self.info),
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "the autoencoder") -> Autoencoder:
        _check_format(d, AE_FORMAT, source, "autoencoder: train one with `genprior train autoencoder`")
        model = cls(config_from(AEConfig, d["ae_config"]))
        model.net.load_state_dict(d["state_dict"])
        model.info = dict(d.get("info", {}))
        return model.eval()

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> Autoencoder:
        return load_frozen(cls, path, device)


def scaled_linear_alphas_cumprod(steps: int = T_STEPS) -> Tensor:
    """``alpha_bar_t`` of LDM's scaled-linear schedule, float64, ``(steps,)``."""
    betas = torch.linspace(BETA_START**0.5, BETA_END**0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)


class LatentDiffusion(nn.Module):
    """An epsilon-prediction UNet on the autoencoder's latents scaled to unit std."""

    def __init__(
        self,
        autoencoder: Autoencoder,
        config: UNetConfig | None = None,
        scale: float = 1.0,
        recon_errors: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.ae = autoencoder
        c, h, _ = autoencoder.latent_shape
        self.config = config or UNetConfig(size=h, channels=c, widths=(64, 128), attention=(False, True))
        if (self.config.channels, self.config.size) != (c, h):
            raise UserError(
                f"the UNet is for {self.config.channels}x{self.config.size}x{self.config.size} latents, "
                f"the autoencoder's are {c}x{h}x{h}"
            )
        self.unet = self.config.build()
        self.scale = float(scale)
        # the autoencoder's errors on K training images, (K, C, H, W), or None where unknown
        self.recon_errors = None if recon_errors is None else recon_errors.detach().float().cpu()
        self.info: dict[str, Any] = {}
        self.register_buffer("alphas_cumprod", scaled_linear_alphas_cumprod().float(), persistent=False)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.ae.latent_shape

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.ae.config.channels, self.ae.config.size, self.ae.config.size)

    @property
    def device(self) -> torch.device:
        return self.alphas_cumprod.device

    def encode(self, x: Tensor) -> Tensor:
        """The scaled latent (the posterior mean) of images ``x`` in ``[0, 1]``."""
        return self.scale * self.ae.posterior(x)[0]

    def decode(self, z: Tensor) -> Tensor:
        """Images (not clamped) of scaled latents ``z``."""
        return self.ae.decode(z / self.scale)

    def eps(self, z: Tensor, t: Tensor) -> Tensor:
        """The predicted noise of ``z_t = sqrt(a_t) z0 + sqrt(1 - a_t) eps`` at integer steps ``t``."""
        return self.unet(z, t, return_dict=False)[0]

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        return self.eps(z, t)

    def loss(self, z0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Per-sample mean squared error of the predicted noise on scaled latents ``z0``."""
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (self.eps(a.sqrt() * z0 + (1 - a).sqrt() * noise, t) - noise).pow(2).flatten(1).mean(1)

    @torch.no_grad()
    def sample_latents(self, n: int, steps: int = 100, seed: int = 0, eta: float = 0.0) -> Tensor:
        """``n`` scaled latents by DDIM with ``steps`` uniform steps."""
        return ddim_sample(self.eps, (n, *self.latent_shape), self.alphas_cumprod, steps, seed, eta)

    @torch.no_grad()
    def reconstruction_errors(self, images: Tensor) -> Tensor:
        """``decode(encode(x)).clamp(0, 1) - x`` for ``images``, on the CPU."""
        x = images.to(self.device)
        return (self.decode(self.encode(x)).clamp(0, 1) - x).cpu()

    @torch.no_grad()
    def recon_floor(self, physics: Any) -> float:
        """The residual per measurement entry that the autoencoder's own error leaves under a
        linear ``physics`` once a latent has absorbed what it can: the median over the stored
        errors ``e`` of ``mean(A(e)^2)``, times ``1 - d / m`` for ``d`` latent entries and ``m``
        informative measurements (the entries of ``A(w)`` not zero for a random ``w``), as least
        squares with ``d`` parameters leaves ``(m - d) / m`` of white errors. 0 when ``m <= d``
        (the latent can explain the measurements exactly) or when the file stores no errors. A
        latent that explains ``y`` better than this explains the autoencoder's error rather than
        the image."""
        if self.recon_errors is None:
            return 0.0
        e = self.recon_errors.to(self.device)
        g = torch.Generator().manual_seed(0)
        m = int((physics.A(torch.randn(e[:1].shape, generator=g).to(self.device)) != 0).sum())
        d = math.prod(self.latent_shape)
        if m <= d:
            return 0.0
        return float(physics.A(e).pow(2).reshape(len(e), -1).mean(1).median()) * (1 - d / m)

    @torch.no_grad()
    def sample(self, n: int, steps: int = 100, seed: int = 0, eta: float = 0.0) -> Tensor:
        """``n`` images in ``[0, 1]``: DDIM latents, decoded."""
        return self.decode(self.sample_latents(n, steps, seed, eta)).clamp(0, 1)

    # ---- files ------------------------------------------------------------------------------
    def to_dict(self, info: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "format": LDM_FORMAT,
            "autoencoder": self.ae.to_dict(),
            "unet_config": config_dict(self.config),
            "state_dict": {k: v.detach().cpu() for k, v in self.unet.state_dict().items()},
            "scale": self.scale,
            "recon_errors": self.recon_errors,
            "info": dict(info if info is not None else self.info),
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "the latent diffusion model") -> LatentDiffusion:
        _check_format(d, LDM_FORMAT, source, "latent diffusion model: train one with `genprior train ldm`")
        ae = Autoencoder.from_dict(d["autoencoder"], source)
        errors = d.get("recon_errors")
        if errors is not None and not isinstance(errors, Tensor):
            raise UserError(
                f"{source}: recon_errors is not a tensor: export the model again with `genprior train ldm`"
            )
        model = cls(ae, config_from(UNetConfig, d["unet_config"]), float(d["scale"]), errors)
        model.unet.load_state_dict(d["state_dict"])
        model.info = dict(d.get("info", {}))
        return model.eval()

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> LatentDiffusion:
        return load_frozen(cls, path, device)
