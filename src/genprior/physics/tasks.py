"""The inverse problems genprior solves, as deepinv physics, built from a task name.

========== ======================================================================================
task       operator
========== ======================================================================================
inpaint    :class:`deepinv.physics.Inpainting`: ``y = mask * x``; the mask has 1 = observed,
           0 = missing, and is shared by all channels. Give exactly one of ``mask`` (tensor
           ``(H, W)`` or ``(1, H, W)``, or a PNG path: white = observed), ``mask_ratio`` (fraction
           of pixels MISSING, ``0 <= mask_ratio < 1``: exactly ``round(mask_ratio * H * W)`` random
           pixels are dropped) or ``box=(x0, y0, x1, y1)`` (the missing rectangle: columns
           ``x0 <= x < x1``, rows ``y0 <= y < y1``).
superres   :class:`deepinv.physics.Downsampling` with a bicubic anti-aliasing filter and circular
           padding, factor ``scale`` (2..16, dividing H and W): ``y`` is ``(B, C, H/s, W/s)``.
denoise    :class:`deepinv.physics.Denoising` with Gaussian noise ``noise_std`` (> 0).
cs         compressed sensing with ``measurements`` rows: ``cs_operator="gaussian"`` is deepinv's
           dense :class:`~deepinv.physics.CompressedSensing` (entries ``N(0, 1/m)``; small images
           only) as :class:`~genprior.physics.GaussianCS`, which computes ``A^+`` only when asked
           for; ``"circulant"`` the FFT-based :class:`~genprior.physics.PartialCirculant` (any
           size). ``y`` is ``(B, m)``.
colorize   :class:`deepinv.physics.Decolorize` (Rec.601 weights): RGB -> grey ``(B, 1, H, W)``.
========== ======================================================================================

``noise_std`` adds deepinv ``GaussianNoise`` (standard deviation in image units, [0, 1] range)
to any task. Everything random is drawn from ``seed``: masks and operators with a CPU generator
(so a seed gives the same operator on every device), the noise with a generator on ``device``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from deepinv.physics import (
    CompressedSensing,
    Decolorize,
    Denoising,
    Downsampling,
    GaussianNoise,
    Inpainting,
    Physics,
)
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..errors import UserError
from .circulant import PartialCirculant
from .gaussian import GaussianCS

__all__ = [
    "TASKS",
    "CS_OPERATORS",
    "make_physics",
    "load_mask",
    "measurement_preview",
    "MAX_DENSE_CS_ENTRIES",
]

TASKS: tuple[str, ...] = ("inpaint", "superres", "denoise", "cs", "colorize")
CS_OPERATORS: tuple[str, ...] = ("gaussian", "circulant")

#: Largest ``m * n`` for the dense Gaussian CS matrix (it is stored three times: A, A^T, A^+).
MAX_DENSE_CS_ENTRIES = 100_000_000


def image_shape3(image_shape: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` from a ``(C, H, W)`` or ``(B, C, H, W)`` shape; a UserError when invalid."""
    shape = tuple(image_shape)
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3 or any(isinstance(s, bool) or int(s) != s or int(s) < 1 for s in shape):
        raise UserError(f"image shape {tuple(image_shape)} is invalid: give (C, H, W) with positive sizes")
    return tuple(int(s) for s in shape)  # type: ignore[return-value]


def _noise_seed(seed: int) -> int:
    # a stream unrelated to the one that draws the operator
    return (int(seed) * 2654435761 + 0x5DEECE66D) % (2**63)


def _check_noise(noise_std: Any) -> float:
    try:
        s = float(noise_std)
    except (TypeError, ValueError):
        raise UserError(
            f"noise_std {noise_std!r} is not a number: give a noise level >= 0 such as 0.05"
        ) from None
    if not math.isfinite(s) or s < 0:
        raise UserError(f"noise_std {noise_std!r} is invalid: give a finite noise level >= 0 such as 0.05")
    return s


def _check_int(name: str, value: Any, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float)) or int(value) != value:
        raise UserError(f"{name} {value!r} is not a whole number: {hint}")
    return int(value)


def _mask_from_tensor(mask: Any, h: int, w: int) -> Tensor:
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if not isinstance(mask, Tensor):
        raise UserError(
            f"mask of type {type(mask).__name__} is not supported: give a tensor (H, W) or a PNG path"
        )
    mask = mask.detach().cpu()
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    elif mask.dim() == 4 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.dim() != 3 or mask.shape[0] != 1:
        raise UserError(
            f"mask has shape {tuple(mask.shape)}: give one (H, W) or (1, H, W) mask, it is shared by all channels"
        )
    if tuple(mask.shape[1:]) != (h, w):
        raise UserError(
            f"mask is {mask.shape[2]}x{mask.shape[1]} but the image is {w}x{h}: give a mask of the image's size"
        )
    mask = mask.to(torch.float32)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise UserError(
            "mask holds values other than 0 and 1: give a binary mask (1 = observed, 0 = missing)"
        )
    return mask


def _inpaint_mask(
    shape: tuple[int, int, int], mask: Any, mask_ratio: Any, box: Any, gen: torch.Generator
) -> Tensor:
    _, h, w = shape
    given = [name for name, v in (("mask", mask), ("mask_ratio", mask_ratio), ("box", box)) if v is not None]
    if not given:
        raise UserError("inpaint needs the missing pixels: pass a mask, a mask_ratio or a box")
    if len(given) > 1:
        raise UserError(f"inpaint got {' and '.join(given)}: give only one of mask, mask_ratio and box")
    if mask is not None:
        if isinstance(mask, (str, os.PathLike)):
            m = load_mask(mask, shape)
        else:
            m = _mask_from_tensor(mask, h, w)
    elif mask_ratio is not None:
        try:
            r = float(mask_ratio)
        except (TypeError, ValueError):
            raise UserError(
                f"mask_ratio {mask_ratio!r} is not a number: give the fraction of missing pixels in [0, 1)"
            ) from None
        if not (0.0 <= r < 1.0):
            raise UserError(
                f"mask_ratio {mask_ratio!r} is out of range: give the fraction of missing pixels in [0, 1)"
            )
        k = int(round(r * h * w))
        flat = torch.ones(h * w)
        flat[torch.randperm(h * w, generator=gen)[:k]] = 0.0
        m = flat.reshape(1, h, w)
    else:
        try:
            x0, y0, x1, y1 = (int(v) for v in box)
            if any(int(v) != v for v in box):
                raise ValueError
        except (TypeError, ValueError):
            raise UserError(
                f"box {box!r} is invalid: give four whole numbers x0,y0,x1,y1 (missing columns x0..x1-1, rows y0..y1-1)"
            ) from None
        if not (0 <= x0 <= w and 0 <= x1 <= w and 0 <= y0 <= h and 0 <= y1 <= h):
            raise UserError(
                f"box {tuple(box)} lies outside the {w}x{h} image: give 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h}"
            )
        if x1 <= x0 or y1 <= y0:
            raise UserError(
                f"box {tuple(box)} is empty: give x0 < x1 and y0 < y1 (missing columns x0..x1-1, rows y0..y1-1)"
            )
        m = torch.ones(1, h, w)
        m[:, y0:y1, x0:x1] = 0.0
    if not bool(m.any()):
        raise UserError("the inpainting mask observes no pixel: keep some pixels (mask 1 = observed)")
    return m


def make_physics(
    task: str,
    image_shape: Sequence[int],
    *,
    mask: Tensor | np.ndarray | str | os.PathLike | None = None,
    mask_ratio: float | None = None,
    box: Sequence[int] | None = None,
    scale: int = 4,
    measurements: int | None = None,
    cs_operator: str = "gaussian",
    noise_std: float = 0.0,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> Physics:
    """Build the deepinv physics of ``task`` for images of shape ``image_shape = (C, H, W)``.

    See the module docstring for the tasks and their arguments; arguments a task does not use
    are ignored. Every problem with the arguments is a :class:`~genprior.errors.UserError`.
    The returned physics has ``genprior_task`` set to the task name.
    """
    name = str(task).strip().lower()
    if name not in TASKS:
        raise UserError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    shape = image_shape3(image_shape)
    c, h, w = shape
    sigma = _check_noise(noise_std)
    seed = _check_int("seed", seed, "give an integer seed")
    device = torch.device(device)
    gen = torch.Generator("cpu").manual_seed(seed)

    physics: Physics
    if name == "inpaint":
        m = _inpaint_mask(shape, mask, mask_ratio, box, gen)
        physics = Inpainting(img_size=shape, mask=m.to(device), device=device)
    elif name == "superres":
        s = _check_int("scale", scale, "give an integer factor between 2 and 16")
        if not 2 <= s <= 16:
            raise UserError(f"super-resolution scale {s} is out of range: give a factor between 2 and 16")
        if h % s or w % s:
            raise UserError(
                f"super-resolution scale {s} does not divide the {w}x{h} image: pick a factor dividing both sides"
            )
        physics = Downsampling(img_size=shape, filter="bicubic", factor=s, device=device, padding="circular")
    elif name == "denoise":
        if sigma <= 0:
            raise UserError("denoise needs noise: pass a noise_std > 0 such as 0.1")
        physics = Denoising(noise_model=GaussianNoise(sigma=sigma), device=device)
    elif name == "cs":
        n = c * h * w
        if measurements is None:
            raise UserError(f"cs needs a number of measurements: pass measurements between 1 and {n}")
        m_ = _check_int("measurements", measurements, f"give a number of measurements between 1 and {n}")
        if not 1 <= m_ <= n:
            raise UserError(
                f"{m_} measurements is out of range for a {c}x{h}x{w} signal: give between 1 and {n}"
            )
        op = str(cs_operator).strip().lower()
        if op not in CS_OPERATORS:
            raise UserError(f"unknown cs_operator {cs_operator!r}: choose one of {', '.join(CS_OPERATORS)}")
        if op == "gaussian":
            if m_ * n > MAX_DENSE_CS_ENTRIES:
                raise UserError(
                    f"a dense Gaussian {m_}x{n} CS matrix is too large: use cs_operator='circulant' or fewer measurements"
                )
            # drawn on the CPU so that a seed gives the same matrix on every device
            physics = GaussianCS(m_, shape, rng=gen, device="cpu").to(device)
        else:
            physics = PartialCirculant(m_, shape, device=device, rng=gen)
    else:  # colorize
        if c != 3:
            raise UserError(
                f"colorize needs a colour image but this one has {c} channel(s): use a 3-channel (RGB) generator"
            )
        physics = Decolorize(channels=3, device=device)

    if sigma > 0:
        noise_gen = torch.Generator(device).manual_seed(_noise_seed(seed))
        physics.noise_model = GaussianNoise(sigma=sigma, rng=noise_gen)
    physics.genprior_task = name
    return physics


def load_mask(path: str | os.PathLike, image_shape: Sequence[int]) -> Tensor:
    """Read an inpainting mask image: white (>= 50% grey) = observed, black = missing.

    Returns a float ``(1, H, W)`` tensor of 0/1 on the CPU. ``image_shape`` is ``(C, H, W)``
    (or ``(H, W)``); the file must have that size.
    """
    path = Path(path)
    h, w = (int(s) for s in tuple(image_shape)[-2:])
    if not path.is_file():
        raise UserError(f"mask file {path} does not exist: give the path of a PNG mask (white = observed)")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
                im = Image.alpha_composite(bg, im)
            arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(
            f"mask {path} is not a readable image ({e.__class__.__name__}): give a PNG mask (white = observed)"
        ) from None
    if arr.shape != (h, w):
        raise UserError(
            f"mask {path} is {arr.shape[1]}x{arr.shape[0]} but the image is {w}x{h}: give a mask of the image's size"
        )
    return torch.from_numpy((arr >= 0.5).astype(np.float32)).unsqueeze(0)


def _minmax(t: Tensor) -> Tensor:
    flat = t.reshape(t.shape[0], -1)
    lo = flat.amin(dim=1).view(-1, *([1] * (t.dim() - 1)))
    hi = flat.amax(dim=1).view(-1, *([1] * (t.dim() - 1)))
    span = hi - lo
    out = (t - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, out, torch.full_like(t, 0.5))


@torch.no_grad()
def measurement_preview(y: Tensor, physics: Physics, image_shape: Sequence[int]) -> Tensor:
    """A human-viewable ``(B, C', H, W)`` picture in [0, 1] of the measurement ``y``.

    inpaint: the observed image with missing pixels grey (0.5); superres: the low-resolution
    image, nearest-neighbour upsampled to ``H x W``; denoise: ``y`` clamped; cs: ``A^T y``,
    min-max normalised per image; colorize: the grey image replicated to 3 channels.
    Other physics: ``y`` if it has the image's shape, else the normalised ``A^T y``.
    """
    c, h, w = image_shape3(image_shape)
    y = y.detach()
    if isinstance(physics, Inpainting):
        mask = physics.mask.to(y.device, y.dtype)
        return (y * mask + 0.5 * (1 - mask)).clamp(0, 1)
    if isinstance(physics, Downsampling):
        return F.interpolate(y, size=(h, w), mode="nearest").clamp(0, 1)
    if isinstance(physics, Decolorize):
        return y.clamp(0, 1).expand(y.shape[0], 3, *y.shape[2:]).contiguous()
    if isinstance(physics, Denoising):
        return y.clamp(0, 1)
    if isinstance(physics, (CompressedSensing, PartialCirculant)):
        return _minmax(physics.A_adjoint(y))
    if y.dim() == 4 and tuple(y.shape[1:]) == (c, h, w):
        return y.clamp(0, 1)
    return _minmax(physics.A_adjoint(y).reshape(y.shape[0], c, h, w))
