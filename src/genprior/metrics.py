"""Per-image quality metrics. Every function takes ``(B, C, H, W)`` batches and returns ``(B,)``.

* :func:`mse`: mean over all pixels and channels of ``(x - y)^2`` (raw values, no clamping).
* :func:`psnr`: ``10 log10(max_val^2 / MSE)`` in dB after clamping both images to
  ``[0, max_val]``. Identical images have zero error; their PSNR is reported as
  :data:`PSNR_MAX` (100 dB) instead of ``inf``, so that averages stay finite and JSON stays
  valid. Any PSNR is capped at that value.
* :func:`ssim`: structural similarity (Gaussian window 11, sigma 1.5, data range 1, as in
  Wang et al. 2004 and scikit-image's ``gaussian_weights=True``) via deepinv's ``SSIM`` metric,
  after clamping to [0, 1]; works for 1- or 3-channel images down to a few pixels (the window
  is reflect-padded). Identical images give 1.
* :func:`measurement_error`: mean over measurement entries of ``(A x - y)^2`` with the
  noise-free operator ``physics.A``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["PSNR_MAX", "mse", "psnr", "ssim", "measurement_error"]

#: PSNR reported for identical images (and the cap of every PSNR), in dB.
PSNR_MAX = 100.0


def _check_pair(x: Tensor, y: Tensor, name: str) -> None:
    if x.shape != y.shape:
        raise ValueError(f"{name}: images of different shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dim() < 2:
        raise ValueError(f"{name} needs batched images (B, ...), got shape {tuple(x.shape)}")


def mse(x: Tensor, y: Tensor) -> Tensor:
    """Per-image mean squared error, ``(B,)``."""
    _check_pair(x, y, "mse")
    y = y.to(device=x.device)
    return (x - y).pow(2).reshape(x.shape[0], -1).mean(dim=1)


def psnr(x: Tensor, y: Tensor, max_val: float = 1.0) -> Tensor:
    """Per-image PSNR in dB, ``(B,)``, capped at :data:`PSNR_MAX` (identical images)."""
    _check_pair(x, y, "psnr")
    if not max_val > 0:
        raise ValueError(f"psnr: max_val must be > 0, got {max_val}")
    x = x.clamp(0, max_val)
    y = y.to(device=x.device).clamp(0, max_val)
    err = (x - y).to(torch.float64).pow(2).reshape(x.shape[0], -1).mean(dim=1)
    floor = max_val**2 * 10.0 ** (-PSNR_MAX / 10.0)
    val = 10.0 * torch.log10(max_val**2 / err.clamp_min(floor))
    return val.clamp_max(PSNR_MAX).to(x.dtype if x.is_floating_point() else torch.float32)


_SSIM = None


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Per-image SSIM in [-1, 1], ``(B,)``; inputs are clamped to [0, 1]."""
    _check_pair(x, y, "ssim")
    if x.dim() != 4:
        raise ValueError(f"ssim needs (B, C, H, W) images, got shape {tuple(x.shape)}")
    global _SSIM
    if _SSIM is None:
        from deepinv.loss.metric import SSIM

        _SSIM = SSIM(max_pixel=1.0, min_pixel=0.0)
    x = x.clamp(0, 1)
    y = y.to(device=x.device, dtype=x.dtype).clamp(0, 1)
    return _SSIM(x, y).reshape(x.shape[0])


def measurement_error(x: Tensor, y: Tensor, physics: Any) -> Tensor:
    """Per-sample mean over measurement entries of ``(physics.A(x) - y)^2``, ``(B,)``."""
    ax = physics.A(x)
    if ax.shape != y.shape:
        raise ValueError(f"measurement_error: A(x) has shape {tuple(ax.shape)} but y has {tuple(y.shape)}")
    return (ax - y.to(ax.device)).pow(2).reshape(ax.shape[0], -1).mean(dim=1)


def observed(y: Tensor) -> Tensor:
    """The measurement entries taken as observed: the non-zero ones (an inpainting's masked
    pixels are zero in ``y``, its noise included), as a float mask shaped like ``y``."""
    return (y != 0).to(y.dtype)


def observed_share(y: Tensor) -> Tensor:
    """Per image, the share of measurement entries that are :func:`observed`: what a noise
    floor of the mean over all entries (:func:`measurement_error`) scales by."""
    return observed(y).reshape(y.shape[0], -1).mean(1)


def unobserved(physics: Any, shape: tuple[int, ...]) -> Tensor:
    """Boolean map ``shape`` of the pixels the measurements do not observe directly: the masked
    pixels of an inpainting operator, every pixel for any other operator."""
    mask = getattr(physics, "mask", None)
    if type(physics).__name__ == "Inpainting" and isinstance(mask, Tensor):
        return torch.broadcast_to(mask.detach() == 0, shape)
    return torch.ones(shape, dtype=torch.bool)


def coverage(truth: Tensor, mean: Tensor, std: Tensor, where: Tensor | None = None, k: float = 2.0) -> Tensor:
    """Per image, the share of true pixels inside ``mean +- k std`` (among ``where``, default all),
    ``(B,)``: a posterior sampler's calibration (0.95 for a Gaussian posterior at ``k = 2``)."""
    inside = ((truth - mean).abs() <= k * std).float()
    if where is None:
        return inside.flatten(1).mean(1)
    w = where.to(inside.device).expand_as(inside).float()
    return (inside * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1)
