"""A StyleGAN2 residual discriminator (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN", config E/F "resnet" D), written for genprior's small training runs.

Structure (input ``size x size`` with ``img_channels`` channels):

* ``from_rgb``: 1x1 equalised conv to ``channels[size]``, leaky ReLU.
* one residual block per resolution ``size -> size/2 -> ... -> 4``: 3x3 conv, then a blurred
  stride-2 3x3 conv; the skip path is a blurred stride-2 1x1 conv without bias or activation; the
  two are summed and divided by sqrt(2).
* minibatch standard deviation (groups of up to 4, one feature map), a 3x3 conv at 4x4, then two
  equalised linear layers down to one logit.

Every weight uses the equalised learning rate (stored as N(0, 1), scaled by ``1/sqrt(fan_in)`` at
run time) and every activation is ``sqrt(2) * leaky_relu(x + b, 0.2)``, as in the paper.
Down-sampling blurs with the ``[1, 3, 3, 1]`` binomial filter before striding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["StyleGAN2Discriminator", "DEFAULT_DISC_CHANNELS"]

#: default channels per resolution (small, for CPU training on 32x32 images)
DEFAULT_DISC_CHANNELS = {4: 64, 8: 64, 16: 32, 32: 32}

_ACT_GAIN = math.sqrt(2.0)


def _act(x: Tensor, bias: Tensor | None) -> Tensor:
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.dim() - 2)))
    return F.leaky_relu(x, 0.2) * _ACT_GAIN


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate; optional blur + stride-2 down-sampling and activation."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        *,
        downsample: bool = False,
        bias: bool = True,
        activate: bool = True,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.kernel = kernel
        self.downsample = downsample
        self.activate = activate
        if downsample:
            k = torch.tensor([1.0, 3.0, 3.0, 1.0])
            k2 = torch.outer(k, k)
            self.register_buffer("blur_kernel", (k2 / k2.sum()).view(1, 1, 4, 4), persistent=False)
            # pad so that blur (4 taps) then a stride-2 conv of size `kernel` halves the size
            p = (4 - 2) + (kernel - 1)
            self.blur_pad = ((p + 1) // 2, p // 2)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight * self.scale
        if self.downsample:
            c = x.shape[1]
            p0, p1 = self.blur_pad
            x = F.pad(x, (p0, p1, p0, p1))
            x = F.conv2d(x, self.blur_kernel.expand(c, 1, 4, 4), groups=c)
            x = F.conv2d(x, w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.kernel // 2)
        if self.activate:
            return _act(x, self.bias)
        if self.bias is not None:
            x = x + self.bias.view(1, -1, 1, 1)
        return x


class EqualLinear(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, *, activate: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = 1.0 / math.sqrt(in_dim)
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:
        if self.activate:
            return _act(F.linear(x, self.weight * self.scale), self.bias)
        return F.linear(x, self.weight * self.scale, self.bias)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = EqualConv2d(in_ch, in_ch, 3)
        self.conv2 = EqualConv2d(in_ch, out_ch, 3, downsample=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, downsample=True, bias=False, activate=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2.0)


class StyleGAN2Discriminator(nn.Module):
    """Residual StyleGAN2 discriminator: images in ``[-1, 1]`` -> one logit per image."""

    def __init__(
        self,
        size: int = 32,
        channels: dict[int, int] | None = None,
        img_channels: int = 1,
        stddev_group: int = 4,
    ) -> None:
        super().__init__()
        if size < 4 or size & (size - 1):
            raise ValueError(f"size must be a power of two >= 4, got {size}")
        channels = {int(k): int(v) for k, v in (channels or DEFAULT_DISC_CHANNELS).items()}
        missing = [r for r in _resolutions(size) if r not in channels]
        if missing:
            raise ValueError(f"channels has no entry for resolutions {missing}")
        self.size = size
        self.img_channels = img_channels
        self.stddev_group = stddev_group
        self.from_rgb = EqualConv2d(img_channels, channels[size], 1)
        blocks = []
        res = size
        while res > 4:
            blocks.append(ResBlock(channels[res], channels[res // 2]))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        c4 = channels[4]
        self.final_conv = EqualConv2d(c4 + 1, c4, 3)
        self.final_linear = EqualLinear(c4 * 4 * 4, c4)
        self.out = EqualLinear(c4, 1, activate=False)

    def minibatch_stddev(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        group = min(b, self.stddev_group)
        while b % group:  # a group size that divides the batch
            group -= 1
        y = x.view(group, -1, 1, c, h, w)
        y = torch.sqrt(y.var(0, unbiased=False) + 1e-8)
        y = y.mean(dim=(2, 3, 4), keepdim=True).squeeze(2)  # (b/group, 1, 1, 1)
        y = y.repeat(group, 1, h, w)
        return torch.cat([x, y], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.from_rgb(x)
        x = self.blocks(x)
        x = self.minibatch_stddev(x)
        x = self.final_conv(x)
        x = self.final_linear(x.flatten(1))
        return self.out(x)


def _resolutions(size: int) -> list[int]:
    out, r = [], size
    while r >= 4:
        out.append(r)
        r //= 2
    return out
