"""StyleGAN2 (Karras et al. 2020) in one file of plain PyTorch, compatible with the checkpoints of
rosinality's ``stylegan2-pytorch``, and its layered wrapper for intermediate-layer solvers.

The network (written for this project; it follows the published architecture and reproduces the
outputs of the rosinality implementation, whose state-dict layout it shares key for key):

* ``style``: the mapping network ``z -> w``: ``PixelNorm`` then ``n_mlp`` equalised linear layers
  (learning-rate multiplier 0.01) with a biased leaky ReLU (slope 0.2, gain sqrt 2). Keys
  ``style.1.*`` .. ``style.{n_mlp}.*`` (index 0 is the parameter-free PixelNorm).
* ``input.input``: the learned constant ``(1, C4, 4, 4)``.
* ``conv1`` then, for every resolution ``8 .. size``, an upsampling ``convs.{2i}`` and a plain
  ``convs.{2i+1}``: modulated 3x3 convolutions with weight demodulation, per-layer noise
  (``noise.weight``) and a biased leaky ReLU (``activate.bias``). Upsampling is a stride-2
  transposed convolution followed by a FIR blur (``conv.blur.kernel``, ``[1, 3, 3, 1]`` by
  default).
* ``to_rgb1`` and ``to_rgbs.{i}``: modulated 1x1 convolutions (no demodulation) to RGB, added to
  the running skip image, which is upsampled with the same FIR kernel (``upsample.kernel``).
* ``noises.noise_{c}``: one fixed noise map per convolution, used when ``randomize_noise=False``.

Convolution ``c`` (``c = 0`` is ``conv1``, ``c >= 1`` is ``convs.{c-1}``) reads row ``c`` of the W+
code and noise ``c``; after every even ``c`` a ToRGB reads row ``c + 1``. Hence
``num_layers = 2 log2(size) - 3`` convolutions and ``n_latent = num_layers + 1`` rows of W+.

The FIR filtering (``upfirdn2d``) is pure PyTorch (zero insertion, padding, a depthwise
convolution), so everything runs on CPU or CUDA without a compiled extension.

:class:`StyleGAN2Layered` exposes the network as a :class:`~genprior.generators.base.LayeredGenerator`;
see its docstring for the inputs, the stages and the Gaussianised latent space of PULSE.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from ..io import atomic_path
from .base import Inputs, InputSpec, LayeredGenerator, State
from .checkpoint import safe_load
from .nvidia import convert_network_pickle, is_network_pickle

DEFAULT_BLUR_KERNEL = (1.0, 3.0, 3.0, 1.0)
SQRT2 = math.sqrt(2.0)


# ---------------------------------------------------------------------------------------------
# FIR filtering and activations
# ---------------------------------------------------------------------------------------------
def make_kernel(k: Sequence[float] | Tensor) -> Tensor:
    """A 2-D FIR kernel normalised to sum 1; a 1-D ``k`` gives the separable ``outer(k, k)``."""
    t = torch.as_tensor(k, dtype=torch.float32)
    if t.dim() == 1:
        t = t[:, None] * t[None, :]
    return t / t.sum()


def upfirdn2d(x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Tensor:
    """Upsample by zero insertion, pad, convolve with ``kernel`` (a true convolution), downsample.

    ``x`` is ``(B, C, H, W)``; every channel is filtered alike. ``pad = (before, after)`` applies to
    both spatial axes; a negative entry crops. Output side ``(H * up + before + after - kh + 1) / down``.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = int(pad[0]), int(pad[1])
    if p0 > 0 or p1 > 0:
        x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    if p0 < 0 or p1 < 0:
        x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), max(-p0, 0) : x.shape[3] - max(-p1, 0)]
    kh, kw = kernel.shape
    weight = torch.flip(kernel, [0, 1]).to(dtype=x.dtype, device=x.device)
    weight = weight.view(1, 1, kh, kw).expand(c, 1, kh, kw)
    x = F.conv2d(x, weight, groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def fused_leaky_relu(x: Tensor, bias: Tensor, negative_slope: float = 0.2, gain: float = SQRT2) -> Tensor:
    """``leaky_relu(x + bias) * gain`` with ``bias`` broadcast along dimension 1."""
    shape = (1, bias.shape[0]) + (1,) * (x.dim() - 2)
    return F.leaky_relu(x + bias.view(shape), negative_slope=negative_slope) * gain


class PixelNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + 1e-8)


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class Blur(nn.Module):
    """FIR low-pass filter (no resampling); the kernel is stored as the buffer ``kernel``."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1) -> None:
        super().__init__()
        k = make_kernel(kernel)
        if upsample_factor > 1:
            k = k * upsample_factor**2  # keeps the mean after zero insertion
        self.register_buffer("kernel", k)
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """x2 FIR upsampling of the RGB skip image."""

    def __init__(self, kernel: Sequence[float], factor: int = 2) -> None:
        super().__init__()
        self.factor = factor
        k = make_kernel(kernel) * factor**2
        self.register_buffer("kernel", k)
        p = k.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, pad=self.pad)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights stored as ``N(0, 1) / lr_mul``, scaled
    by ``lr_mul / sqrt(in_dim)`` at run time; the bias is scaled by ``lr_mul``."""

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activate: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:
        if self.activate:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class ModulatedConv2d(nn.Module):
    """Convolution whose input channels are scaled per sample by an affine map of the style, then
    (optionally) demodulated so each output channel has unit expected norm. One grouped
    convolution handles the whole batch. ``upsample=True``: stride-2 transposed conv + blur."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.demodulate, self.upsample = demodulate, upsample
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1.0)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        b, cin, h, w = x.shape
        cout, ks = self.out_channels, self.kernel_size
        s = self.modulation(style).view(b, 1, cin, 1, 1)
        weight = self.scale * self.weight * s  # (B, out, in, k, k)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.view(b, cout, 1, 1, 1)
        x = x.reshape(1, b * cin, h, w)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(b * cin, cout, ks, ks)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=b)
            out = out.view(b, cout, out.shape[2], out.shape[3])
            return self.blur(out)
        out = F.conv2d(x, weight.reshape(b * cout, cin, ks, ks), padding=self.padding, groups=b)
        return out.view(b, cout, out.shape[2], out.shape[3])


class NoiseInjection(nn.Module):
    """Adds ``weight * noise``; ``noise=None`` draws fresh N(0, 1) noise (one map per sample)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            b, _, h, w = x.shape
            noise = x.new_empty(b, 1, h, w).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.repeat(batch, 1, 1, 1)


def _clamp(x: Tensor, limit: float | None) -> Tensor:
    return x if limit is None else x.clamp(-limit, limit)


class StyledConv(nn.Module):
    """Modulated conv -> noise -> biased leaky ReLU (-> clamp to +-``clamp``, NVIDIA's
    ``conv_clamp``, when set)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
        clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channels, out_channels, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)
        self.clamp = clamp

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        return _clamp(self.activate(self.noise(self.conv(x, style), noise=noise)), self.clamp)


class ToRGB(nn.Module):
    """Modulated 1x1 conv (no demodulation) + bias (clamped to +-``clamp`` when set), plus the
    upsampled previous skip image."""

    def __init__(
        self,
        in_channels: int,
        style_dim: int,
        upsample: bool = True,
        blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
        img_channels: int = 3,
        clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.clamp = clamp
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channels, img_channels, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, img_channels, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = _clamp(self.conv(x, style) + self.bias, self.clamp)
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# ---------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------
def default_channels(size: int, channel_multiplier: int = 2) -> dict[int, int]:
    """The channel table of the official configs (config-f for ``channel_multiplier=2``)."""
    table = {
        4: 512,
        8: 512,
        16: 512,
        32: 512,
        64: 256 * channel_multiplier,
        128: 128 * channel_multiplier,
        256: 64 * channel_multiplier,
        512: 32 * channel_multiplier,
        1024: 16 * channel_multiplier,
    }
    return {r: table.get(r, max(1, 16 * channel_multiplier * 1024 // r)) for r in _resolutions(size)}


def _resolutions(size: int) -> list[int]:
    return [2**i for i in range(2, int(math.log2(size)) + 1)]


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 generator whose ``state_dict`` has the rosinality layout (see the module docstring).

    Args:
        size: output side, a power of two >= 4 (8 .. 1024 in practice).
        style_dim: dimension of z and w.
        n_mlp: layers of the mapping network.
        channels: channels per resolution ``{4: c4, 8: c8, ..., size: c}``; default: the official
            table scaled by ``channel_multiplier``.
        blur_kernel: 1-D FIR kernel of the up-sampling filters.
        lr_mlp: learning-rate multiplier of the mapping network (0.01 in every official model).
        img_channels: output channels (3 for RGB).
        conv_clamp: clamp every convolution's and ToRGB's output to +-this (NVIDIA's StyleGAN2-ADA
            layers; 256 in its training configs); None: no clamp (rosinality, the official TF models).

    ``forward`` returns ``(image, latent or None)`` with the image in the network's native range
    (about ``[-1, 1]``), exactly as the reference implementation.
    """

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channels: Mapping[int, int] | None = None,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
        lr_mlp: float = 0.01,
        img_channels: int = 3,
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        size = int(size)
        if size < 4 or size & (size - 1):
            raise ValueError(f"StyleGAN2 size must be a power of two >= 4, got {size}")
        self.size = size
        self.log_size = int(math.log2(size))
        self.style_dim = int(style_dim)
        self.n_mlp = int(n_mlp)
        self.lr_mlp = float(lr_mlp)
        self.img_channels = int(img_channels)
        self.conv_clamp = None if conv_clamp is None else float(conv_clamp)
        if self.conv_clamp is not None and not self.conv_clamp > 0:
            raise ValueError(f"conv_clamp must be positive or None, got {conv_clamp}")
        self.blur_kernel = tuple(float(v) for v in blur_kernel)
        if channels is None:
            channels = default_channels(size, channel_multiplier)
        missing = [r for r in _resolutions(size) if r not in channels]
        if missing:
            raise ValueError(f"channel table lacks resolutions {missing}")
        self.channels = {r: int(channels[r]) for r in _resolutions(size)}

        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True) for _ in range(n_mlp)],
        )
        c4 = self.channels[4]
        self.input = ConstantInput(c4)
        clamp = self.conv_clamp
        self.conv1 = StyledConv(c4, c4, 3, style_dim, blur_kernel=blur_kernel, clamp=clamp)
        self.to_rgb1 = ToRGB(c4, style_dim, upsample=False, img_channels=img_channels, clamp=clamp)
        self.num_layers = 2 * (self.log_size - 2) + 1
        self.n_latent = self.num_layers + 1
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for c in range(self.num_layers):
            r = self.noise_resolution(c)
            self.noises.register_buffer(f"noise_{c}", torch.randn(1, 1, r, r))
        cin = c4
        for i in range(3, self.log_size + 1):
            cout = self.channels[2**i]
            self.convs.append(
                StyledConv(cin, cout, 3, style_dim, upsample=True, blur_kernel=blur_kernel, clamp=clamp)
            )
            self.convs.append(StyledConv(cout, cout, 3, style_dim, blur_kernel=blur_kernel, clamp=clamp))
            self.to_rgbs.append(
                ToRGB(cout, style_dim, blur_kernel=blur_kernel, img_channels=img_channels, clamp=clamp)
            )
            cin = cout

    # ---- structure ----------------------------------------------------------------------------
    @staticmethod
    def noise_resolution(c: int) -> int:
        """Side of the feature map (and noise) of convolution ``c``."""
        return 2 ** ((c + 5) // 2)

    def conv_layer(self, c: int) -> StyledConv:
        return self.conv1 if c == 0 else self.convs[c - 1]  # type: ignore[return-value]

    def rgb_layer(self, c: int) -> ToRGB | None:
        """The ToRGB that runs after convolution ``c`` (even ``c`` only), reading W+ row ``c + 1``."""
        if c % 2:
            return None
        return self.to_rgb1 if c == 0 else self.to_rgbs[c // 2 - 1]  # type: ignore[return-value]

    def noise_buffer(self, c: int) -> Tensor:
        return getattr(self.noises, f"noise_{c}")

    def config(self) -> dict[str, Any]:
        return {
            "arch": "stylegan2",
            "size": self.size,
            "style_dim": self.style_dim,
            "n_mlp": self.n_mlp,
            "channels": dict(self.channels),
            "blur_kernel": list(self.blur_kernel),
            "lr_mlp": self.lr_mlp,
            "img_channels": self.img_channels,
            "conv_clamp": self.conv_clamp,
        }

    # ---- running ------------------------------------------------------------------------------
    def run_layers(
        self,
        c_from: int,
        c_to: int,
        feature: Tensor,
        skip: Tensor | None,
        latent_at: Callable[[int], Tensor],
        noise_at: Callable[[int], Tensor | None],
    ) -> tuple[Tensor, Tensor | None]:
        """Run convolutions ``c_from .. c_to - 1``, each followed by its ToRGB when it has one.

        ``latent_at(i)`` is W+ row ``i`` ``(B, style_dim)``; ``noise_at(c)`` the noise of conv ``c``
        (None: fresh random noise). Returns the feature map and the running skip image.
        """
        for c in range(c_from, c_to):
            feature = self.conv_layer(c)(feature, latent_at(c), noise=noise_at(c))
            rgb = self.rgb_layer(c)
            if rgb is not None:
                skip = rgb(feature, latent_at(c + 1), skip)
        return feature, skip

    def get_latent(self, z: Tensor) -> Tensor:
        """The mapping network: ``z (B, style_dim) -> w (B, style_dim)``."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int, generator: torch.Generator | None = None, batch_size: int = 8192) -> Tensor:
        """Mean of ``w`` over ``n`` random ``z``, shape ``(1, style_dim)`` (the truncation centre)."""
        dev = self.input.input.device
        total = torch.zeros(1, self.style_dim, dtype=torch.float64, device=dev)
        done = 0
        while done < n:
            m = min(batch_size, n - done)
            z = torch.randn(m, self.style_dim, generator=generator).to(dev)
            total += self.style(z).double().sum(0, keepdim=True)
            done += m
        return (total / max(n, 1)).to(self.input.input.dtype)

    def make_noise(self, generator: torch.Generator | None = None) -> list[Tensor]:
        """Fresh noise maps ``(1, 1, r, r)``, one per convolution."""
        dev = self.input.input.device
        return [
            torch.randn(1, 1, r, r, generator=generator).to(dev)
            for r in (self.noise_resolution(c) for c in range(self.num_layers))
        ]

    def forward(
        self,
        styles: Sequence[Tensor] | Tensor,
        return_latents: bool = False,
        inject_index: int | None = None,
        truncation: float = 1.0,
        truncation_latent: Tensor | None = None,
        input_is_latent: bool = False,
        noise: Sequence[Tensor | None] | None = None,
        randomize_noise: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Images for a list of one or two style inputs (z, or w / W+ with ``input_is_latent``).

        * two styles: rows ``0 .. inject_index - 1`` of W+ come from the first, the rest from the
          second (``inject_index=None``: uniform in ``1 .. n_latent - 1``);
        * ``truncation < 1``: every w moves towards ``truncation_latent``;
        * ``noise``: one map per convolution; ``None`` uses fresh noise when ``randomize_noise``,
          else the stored ``noises.noise_*`` buffers.
        """
        if isinstance(styles, Tensor):
            styles = [styles]
        styles = list(styles)
        if not 1 <= len(styles) <= 2:
            raise ValueError(f"StyleGAN2 takes one or two styles, got {len(styles)}")
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if noise is None:
            if randomize_noise:
                noise = [None] * self.num_layers
            else:
                noise = [self.noise_buffer(c) for c in range(self.num_layers)]
        elif len(noise) != self.num_layers:
            raise ValueError(f"noise must hold {self.num_layers} maps, got {len(noise)}")
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError(
                    "truncation < 1 needs truncation_latent (e.g. latent_avg or mean_latent(4096))"
                )
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]

        if len(styles) == 1:
            s = styles[0]
            latent = s if s.dim() == 3 else s.unsqueeze(1).repeat(1, self.n_latent, 1)
        else:
            if inject_index is None:
                inject_index = int(torch.randint(1, self.n_latent, (1,)).item())
            latent = torch.cat(
                [
                    styles[0].unsqueeze(1).repeat(1, inject_index, 1),
                    styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1),
                ],
                dim=1,
            )
        if latent.shape[1] != self.n_latent:
            raise ValueError(f"W+ input must have {self.n_latent} rows, got {latent.shape[1]}")

        feature = self.input(latent.shape[0])
        _, skip = self.run_layers(
            0, self.num_layers, feature, None, lambda i: latent[:, i], lambda c: noise[c]
        )
        return skip, (latent if return_latents else None)

    # ---- loading ------------------------------------------------------------------------------
    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, Tensor],
        lr_mlp: float = 0.01,
        source: str = "state dict",
        conv_clamp: float | None = None,
    ) -> StyleGAN2Generator:
        """Build a generator whose configuration is read from the tensors' shapes, then load
        ``state_dict`` strictly. Raises :class:`UserError` when it is not a rosinality StyleGAN2."""
        sd = dict(state_dict)
        if sd and all(k.startswith("module.") for k in sd):
            sd = {k[len("module.") :]: v for k, v in sd.items()}
        fix = "give a generator state dict in the rosinality stylegan2-pytorch layout"
        for key in ("input.input", "style.1.weight", "to_rgb1.bias", "conv1.conv.weight"):
            if key not in sd or not isinstance(sd[key], Tensor):
                raise UserError(f"{source} is not a StyleGAN2 generator (no tensor {key!r}): {fix}")
        mlp = sorted(int(m.group(1)) for k in sd if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
        n_mlp = len(mlp)
        if mlp != list(range(1, n_mlp + 1)):
            raise UserError(f"{source} has mapping layers {mlp}, expected style.1 .. style.{n_mlp}: {fix}")
        style_dim = int(sd["style.1.weight"].shape[0])
        n_rgbs = sum(1 for k in sd if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k))
        size = 2 ** (n_rgbs + 2)
        channels = {4: int(sd["input.input"].shape[1])}
        try:
            for i in range(n_rgbs):
                channels[2 ** (i + 3)] = int(sd[f"convs.{2 * i}.conv.weight"].shape[1])
        except KeyError as e:
            raise UserError(f"{source} lacks {e.args[0]!r} for a {size}x{size} StyleGAN2: {fix}") from None
        img_channels = int(sd["to_rgb1.bias"].shape[1])
        blur: Sequence[float] = DEFAULT_BLUR_KERNEL
        k2 = sd.get("convs.0.conv.blur.kernel")
        if isinstance(k2, Tensor) and k2.dim() == 2 and k2.shape[0] == k2.shape[1]:
            row = k2.double().sum(1)  # proportional to the 1-D kernel of the outer product
            nonzero = row[row.abs() > 1e-12]
            if len(nonzero):
                row = row / nonzero.abs().min()  # [1, 3, 3, 1] rather than [1/8, 3/8, 3/8, 1/8]
                rounded = row.round()
                blur = (rounded if (row - rounded).abs().max() < 1e-4 else row).tolist()
        gen = cls(
            size,
            style_dim=style_dim,
            n_mlp=n_mlp,
            channels=channels,
            blur_kernel=blur,
            lr_mlp=lr_mlp,
            img_channels=img_channels,
            conv_clamp=conv_clamp,
        )
        try:
            gen.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            lines = [s.strip() for s in str(e).splitlines() if s.strip()]
            detail = lines[1] if len(lines) > 1 else (lines[0] if lines else "mismatch")
            if len(detail) > 160:
                detail = detail[:157] + "..."
            raise UserError(f"{source} does not match the StyleGAN2 layout ({detail}): {fix}") from None
        return gen.eval()


def load_stylegan2(
    path_or_dict: str | os.PathLike | Mapping[str, Any],
    device: torch.device | str = "cpu",
    prefer: str = "g_ema",
    lr_mlp: float | None = None,
) -> tuple[StyleGAN2Generator, Tensor | None]:
    """Load a rosinality StyleGAN2 checkpoint: ``(generator in eval mode, latent_avg or None)``.
    An NVIDIA network pickle is read with :func:`~genprior.generators.nvidia.convert_network_pickle`.

    Accepted layouts: ``{"g_ema": state_dict, "latent_avg": w}`` (converted official models) and
    the training script's ``{"g": ..., "d": ..., "g_ema": ..., "args": Namespace, ...}``.
    ``prefer="g"`` takes the raw generator instead of its moving average when present. A bare
    generator state dict (with ``input.input``, ``style.1.weight``, ...) is accepted too.
    Extra keys are ignored. The mapping network's learning-rate multiplier is not visible in the
    tensors: ``lr_mlp=None`` reads ``lr_mlp`` from the checkpoint's ``config`` or ``args`` when
    present, else uses 0.01 (every official and rosinality model). ``config["conv_clamp"]``, which
    ``genprior convert`` writes from an NVIDIA pickle, sets the layers' clamp.
    """
    if prefer not in ("g_ema", "g"):
        raise ValueError(f"prefer must be 'g_ema' or 'g', got {prefer!r}")
    if isinstance(path_or_dict, Mapping):
        ckpt, source = path_or_dict, "the checkpoint dict"
    elif is_network_pickle(path_or_dict):
        ckpt, source = convert_network_pickle(path_or_dict), str(path_or_dict)
    else:
        ckpt, source = safe_load(path_or_dict, map_location="cpu"), str(path_or_dict)
    if not isinstance(ckpt, Mapping):
        raise UserError(
            f"unknown checkpoint layout in {source} (a {type(ckpt).__name__}, not a dict): "
            "give a rosinality stylegan2-pytorch checkpoint holding 'g_ema'"
        )
    sd = None
    for key in (prefer, "g_ema"):
        if isinstance(ckpt.get(key), Mapping):
            sd = ckpt[key]
            source_key = f"{source}[{key!r}]"
            break
    if sd is None:
        if "input.input" in ckpt and "style.1.weight" in ckpt:
            sd, source_key = ckpt, source
        else:
            keys = ", ".join(sorted(map(str, ckpt.keys()))[:8]) or "none"
            raise UserError(
                f"unknown checkpoint layout in {source} (keys: {keys}): give a rosinality "
                "stylegan2-pytorch checkpoint holding 'g_ema' (and optionally 'latent_avg')"
            )
    if lr_mlp is None:
        lr_mlp = _lr_mlp_of(ckpt)
    gen = StyleGAN2Generator.from_state_dict(
        sd, lr_mlp=lr_mlp, source=source_key, conv_clamp=_conv_clamp_of(ckpt)
    )
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None:
        if not isinstance(latent_avg, Tensor) or latent_avg.numel() != gen.style_dim:
            raise UserError(
                f"{source} has a latent_avg that is not a {gen.style_dim}-vector: "
                f"re-save it with latent_avg of shape ({gen.style_dim},)"
            )
        latent_avg = latent_avg.detach().reshape(gen.style_dim).float().to(device)
    return gen.to(device), latent_avg


def _conv_clamp_of(ckpt: Mapping[str, Any]) -> float | None:
    """``config["conv_clamp"]`` (written by ``genprior convert`` from an NVIDIA pickle), else None."""
    meta = ckpt.get("config")
    value = meta.get("conv_clamp") if isinstance(meta, Mapping) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def _lr_mlp_of(ckpt: Mapping[str, Any]) -> float:
    for key in ("config", "args"):
        meta = ckpt.get(key)
        value = meta.get("lr_mlp") if isinstance(meta, Mapping) else getattr(meta, "lr_mlp", None)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return 0.01


# ---------------------------------------------------------------------------------------------
# PULSE's Gaussianised W space
# ---------------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``$GENPRIOR_CACHE`` or ``~/.cache/genprior``."""
    env = os.environ.get("GENPRIOR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "genprior"


def state_dict_sha256(module_or_sd: nn.Module | Mapping[str, Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict, in key order."""
    sd = module_or_sd.state_dict() if isinstance(module_or_sd, nn.Module) else module_or_sd
    h = hashlib.sha256()
    for key in sorted(sd):
        t = sd[key]
        h.update(key.encode("utf-8"))
        if not isinstance(t, Tensor):
            h.update(repr(t).encode("utf-8"))
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def fit_gaussian(
    generator: StyleGAN2Generator, n: int = 100_000, seed: int = 0, batch_size: int = 8192
) -> dict[str, Tensor]:
    """PULSE's Gaussian fit: per-dimension mean and (unbiased) std of ``leaky_relu(w, 5)`` over
    ``n`` mapped ``z ~ N(0, I)`` (seeded). ``leaky_relu(., 5)`` inverts the mapping network's last
    ``leaky_relu(., 0.2)``, so ``w = leaky_relu(v * std + mean, 0.2)`` with ``v ~ N(0, I)``
    is a Gaussian model of W. Returns float32 CPU tensors ``{"mean": (d,), "std": (d,)}``."""
    if n < 2:
        raise ValueError("fit_gaussian needs n >= 2")
    g = torch.Generator().manual_seed(int(seed))
    dev = generator.input.input.device
    d = generator.style_dim
    s1 = torch.zeros(d, dtype=torch.float64)
    s2 = torch.zeros(d, dtype=torch.float64)
    done = 0
    while done < n:
        m = min(batch_size, n - done)
        z = torch.randn(m, d, generator=g).to(dev)
        x = F.leaky_relu(generator.style(z), negative_slope=5.0).double().cpu()
        s1 += x.sum(0)
        s2 += (x * x).sum(0)
        done += m
    mean = s1 / n
    var = ((s2 - n * mean * mean) / (n - 1)).clamp_min(0)
    return {"mean": mean.float(), "std": var.sqrt().float()}


def cached_gaussian_fit(
    generator: StyleGAN2Generator,
    n: int = 100_000,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, Tensor]:
    """:func:`fit_gaussian`, cached on disk under ``cache_dir/gaussian_fit/`` keyed by the sha256
    of the generator's state dict, ``n`` and ``seed``; written atomically. An unreadable cache
    entry is recomputed; an unwritable cache directory only costs the recomputation next time."""
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    digest = state_dict_sha256(generator)
    path = folder / "gaussian_fit" / f"stylegan2-{digest[:40]}-n{int(n)}-seed{int(seed)}.pt"
    d = generator.style_dim
    if path.is_file():
        try:
            fit = safe_load(path)
            if (
                isinstance(fit, Mapping)
                and fit.get("sha256") == digest
                and all(isinstance(fit.get(k), Tensor) and fit[k].shape == (d,) for k in ("mean", "std"))
            ):
                return {"mean": fit["mean"].float(), "std": fit["std"].float()}
        except UserError:
            pass
    fit = fit_gaussian(generator, n=n, seed=seed)
    try:
        with atomic_path(path) as tmp:
            torch.save({**fit, "n": int(n), "seed": int(seed), "sha256": digest}, tmp)
    except OSError:
        pass
    return fit


# ---------------------------------------------------------------------------------------------
# The layered wrapper
# ---------------------------------------------------------------------------------------------
LATENT_SPACES = ("gaussian", "w")


class StyleGAN2Layered(LayeredGenerator):
    """A :class:`StyleGAN2Generator` as a layered generator.

    Inputs (``L = num_layers`` convolutions, ``n_latent = L + 1``):

    * ``w0 .. w{n_latent-1}``: latent, group ``"wplus"``, shape ``(style_dim,)``: the rows of W+.
      With ``latent_space="gaussian"`` (default; PULSE's Gaussianised W) an input ``v`` is mapped
      to ``w = leaky_relu(v * std + mean, 0.2)`` (see :func:`fit_gaussian`), so ``v ~ N(0, I)`` is
      the prior; with ``latent_space="w"`` the inputs are the rows of W+ themselves.
    * ``noise0 .. noise{L-1}``: noise, shape ``(1, r, r)``; a missing key uses the stored buffer.

    Stages: ``num_stages = L``; stage ``k`` is "after the ``k``-th convolution" together with the
    ToRGB that follows it, if any. ``head(0, .)`` is ``()``; for ``k >= 1`` the state is
    ``(feature, skip)``: the feature map ``(B, C, r, r)`` after convolution ``k - 1`` (0-based)
    and the running RGB skip image (the RGB of the last completed resolution; at odd ``k`` it is
    at the feature's resolution, at even ``k`` at half of it). ``tail_inputs(k)`` is
    ``w_k .. w_{n_latent-1}`` and ``noise_k .. noise_{L-1}`` for ``1 <= k < L``, everything for
    ``k = 0`` and nothing for ``k = L`` (the tail then only maps the skip image to ``[0, 1]``).

    Output: ``(img + 1) / 2``, not clamped.
    """

    def __init__(
        self,
        generator: StyleGAN2Generator,
        latent_space: str = "gaussian",
        gaussian_fit: Mapping[str, Tensor] | None = None,
        cache_dir: str | os.PathLike | None = None,
        fit_samples: int = 100_000,
        fit_seed: int = 0,
        latent_avg: Tensor | None = None,
        freeze: bool = True,
    ) -> None:
        super().__init__()
        if latent_space not in LATENT_SPACES:
            raise UserError(
                f"unknown StyleGAN2 latent space {latent_space!r}: use one of {', '.join(LATENT_SPACES)}"
            )
        self.net = generator
        self.latent_space = latent_space
        if freeze:
            for p in generator.parameters():
                p.requires_grad_(False)
        g = generator
        self.style_dim, self.n_latent, self.num_stages = g.style_dim, g.n_latent, g.num_layers
        self.image_shape = (g.img_channels, g.size, g.size)
        self.input_specs = tuple(
            InputSpec(f"w{i}", (g.style_dim,), "latent", "wplus") for i in range(g.n_latent)
        ) + tuple(
            InputSpec(f"noise{c}", (1, g.noise_resolution(c), g.noise_resolution(c)), "noise")
            for c in range(g.num_layers)
        )
        dev = g.input.input.device
        mean = std = None
        if latent_space == "gaussian":
            if gaussian_fit is None:
                gaussian_fit = cached_gaussian_fit(g, n=fit_samples, seed=fit_seed, cache_dir=cache_dir)
            mean = torch.as_tensor(gaussian_fit["mean"], dtype=torch.float32).reshape(-1)
            std = torch.as_tensor(gaussian_fit["std"], dtype=torch.float32).reshape(-1)
            if mean.numel() != g.style_dim or std.numel() != g.style_dim:
                raise UserError(
                    f"the Gaussian fit has {mean.numel()} dimensions but the generator's W has {g.style_dim}: "
                    "give the fit of this generator (or none, to compute it)"
                )
            mean, std = mean.to(dev), std.to(dev)
        self.register_buffer("gauss_mean", mean, persistent=False)
        self.register_buffer("gauss_std", std, persistent=False)
        if latent_avg is not None:
            latent_avg = latent_avg.detach().reshape(-1).float().to(dev)
        self.register_buffer("latent_avg", latent_avg, persistent=False)
        self.eval()

    @classmethod
    def from_checkpoint(
        cls,
        path_or_dict: str | os.PathLike | Mapping[str, Any],
        device: torch.device | str = "cpu",
        prefer: str = "g_ema",
        **kwargs: Any,
    ) -> StyleGAN2Layered:
        """:func:`load_stylegan2` then wrap (keyword arguments go to the constructor)."""
        gen, latent_avg = load_stylegan2(path_or_dict, device=device, prefer=prefer)
        kwargs.setdefault("latent_avg", latent_avg)
        return cls(gen, **kwargs)

    def config(self) -> dict[str, Any]:
        return {**self.net.config(), "latent_space": self.latent_space}

    @property
    def gaussian_fit(self) -> dict[str, Tensor] | None:
        if self.gauss_mean is None:
            return None
        return {"mean": self.gauss_mean.detach().cpu(), "std": self.gauss_std.detach().cpu()}

    # ---- inputs -------------------------------------------------------------------------------
    def sample_inputs(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Inputs:
        """``latent_space="gaussian"``: every ``w_i`` and noise ~ N(0, 1) independently.
        ``latent_space="w"``: one ``z ~ N(0, I)`` per sample mapped to ``w``, copied to every row
        (a sample of the generator itself), then noise ~ N(0, 1)."""
        if self.latent_space == "gaussian":
            return super().sample_inputs(batch_size, generator=generator, device=device)
        return self.sample_native_inputs(batch_size, generator=generator, device=device)

    def sample_native_inputs(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Inputs:
        """The generator's own samples: one ``z ~ N(0, I)`` per sample mapped to ``w`` and written
        into every row of W+ (in the Gaussianised space: ``(lrelu_5(w) - mean) / std``, which
        :meth:`to_w` maps back to ``w``), then noise ~ N(0, 1)."""
        device = self.device if device is None else torch.device(device)
        z = torch.randn(batch_size, self.style_dim, generator=generator)
        with torch.no_grad():
            w = self.net.style(z.to(self.device))
            if self.latent_space == "gaussian":
                w = (F.leaky_relu(w, negative_slope=5.0) - self.gauss_mean) / self.gauss_std
        w = w.to(device)
        out: Inputs = {f"w{i}": w.clone() for i in range(self.n_latent)}
        for name in self.noise_names():
            shape = self.spec(name).shape
            out[name] = torch.randn((batch_size, *shape), generator=generator).to(device)
        return out

    def shared_tail_latents(self, k: int) -> tuple[str, ...]:
        # every W+ row of a sample is the same w: the tail's rows repeat the w that made the state
        return tuple(n for n in self.tail_inputs(k) if self.spec(n).kind == "latent")

    def to_w(self, v: Tensor) -> Tensor:
        """One latent input -> the ``w`` the network reads."""
        if self.latent_space == "w":
            return v
        return F.leaky_relu(v * self.gauss_std + self.gauss_mean, negative_slope=0.2)

    def wplus(self, inputs: Inputs) -> Tensor:
        """The W+ code ``(B, n_latent, style_dim)`` that ``inputs`` give."""
        return torch.stack([self.to_w(inputs[f"w{i}"]) for i in range(self.n_latent)], dim=1)

    def _latent_at(self, inputs: Inputs) -> Callable[[int], Tensor]:
        cache: dict[int, Tensor] = {}

        def at(i: int) -> Tensor:
            if i not in cache:
                cache[i] = self.to_w(inputs[f"w{i}"])
            return cache[i]

        return at

    def _noise_at(self, inputs: Inputs) -> Callable[[int], Tensor]:
        def at(c: int) -> Tensor:
            t = inputs.get(f"noise{c}")
            if t is None:
                return self.net.noise_buffer(c)
            return t.unsqueeze(1) if t.dim() == 3 else t

        return at

    def _batch(self, inputs: Inputs) -> int:
        return int(inputs["w0"].shape[0])

    # ---- the split ----------------------------------------------------------------------------
    def tail_inputs(self, k: int) -> tuple[str, ...]:
        self.check_stage(k)
        if k == 0:
            return tuple(s.name for s in self.input_specs)
        if k == self.num_stages:
            return ()
        return tuple(f"w{i}" for i in range(k, self.n_latent)) + tuple(
            f"noise{c}" for c in range(k, self.num_stages)
        )

    def head(self, k: int, inputs: Inputs) -> State:
        self.check_stage(k)
        return self.advance(0, k, (), inputs)

    def advance(self, k_from: int, k_to: int, state: State, inputs: Inputs) -> State:
        self.check_span(k_from, k_to)
        if k_from == 0:
            if len(state) != 0:
                raise ValueError(f"the stage-0 state of StyleGAN2 is empty, got {len(state)} tensors")
            if k_to == 0:
                return ()
            feature, skip = self.net.input(self._batch(inputs)), None
        else:
            if len(state) != 2:
                raise ValueError(f"a StyleGAN2 state is (feature, skip), got {len(state)} tensors")
            feature, skip = state
        feature, skip = self.net.run_layers(
            k_from, k_to, feature, skip, self._latent_at(inputs), self._noise_at(inputs)
        )
        assert skip is not None
        return (feature, skip)

    def tail(self, k: int, state: State, inputs: Inputs) -> Tensor:
        self.check_stage(k)
        _, skip = self.advance(k, self.num_stages, state, inputs)
        return (skip + 1) / 2
