"""Partial circulant compressed-sensing operator (as used for CS in the ILO paper).

For a signal ``x`` with ``n = prod(img_size)`` entries the operator is

.. math::

    A x = \\frac{1}{\\sqrt{m}} \\, P_\\Omega \\, C_g \\, D_s \\, \\mathrm{vec}(x)

* ``D_s``: multiplication by ``n`` independent random signs ``s_j = ±1`` (Rademacher),
* ``C_g``: circular convolution with a filter ``g`` of ``n`` i.i.d. standard Gaussian taps,
  ``(C_g z)_i = sum_j g_{(i - j) mod n} z_j``, computed with ``torch.fft.rfft``/``irfft``,
* ``P_Omega``: keeps the rows in a random set ``Omega`` of ``m`` distinct indices (sorted),
* ``1/sqrt(m)``: scaling. Every row of ``C_g`` is a cyclic shift of ``g``, so for any fixed
  ``z`` each ``(C_g z)_i`` is ``N(0, ||z||^2)``; with ``||D_s x|| = ||x||`` this gives
  ``E ||A x||^2 = (m / m) ||x||^2 = ||x||^2`` over the draw of the operator. This is the same
  normalisation as deepinv's dense :class:`~deepinv.physics.CompressedSensing` (entries
  ``N(0, 1/m)``), so the two operators are interchangeable in a solver. The drawn filter is
  then rescaled to ``||g||^2 = n`` exactly, which makes ``||A||_F^2 = n`` for every draw, i.e.
  ``E_x ||A x||^2 = ||x||^2`` also holds for a *fixed* operator and isotropic random ``x``.

Storage is ``O(n)``: the signs, the filter's real FFT (``n//2 + 1`` complex numbers) and the
``m`` kept indices; no matrix is ever formed, and ``A``/``A_adjoint`` cost one FFT pair each, so
the operator is usable at 3x1024x1024. ``A_adjoint`` is the exact transpose
(``(1/sqrt(m)) D_s C_g^T P_Omega^T``, where ``C_g^T`` is a circular correlation, i.e. multiplication
by the conjugate spectrum). ``A_dagger`` falls back on deepinv's iterative least-squares solver.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from deepinv.physics import LinearPhysics
from torch import Tensor

from ..errors import UserError

__all__ = ["PartialCirculant"]


def _complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


class PartialCirculant(LinearPhysics):
    """Partial circulant CS operator ``y = A x`` with ``y`` of shape ``(B, m)``.

    Args:
        m: number of measurements, ``1 <= m <= n``.
        img_size: shape of one signal, e.g. ``(C, H, W)``; inputs are ``(B, *img_size)``.
        device: device of the stored operator (it also follows ``.to(...)``).
        rng: generator that draws the operator (on any device; the result is moved to ``device``).
        seed: used when ``rng`` is None: draws with a fresh CPU generator seeded with it, so
            the same seed gives the same operator on every device. With neither, the global
            torch RNG is used.
        noise_model: a deepinv noise model (default: no noise).
    """

    def __init__(
        self,
        m: int,
        img_size: Sequence[int],
        device: torch.device | str = "cpu",
        rng: torch.Generator | None = None,
        seed: int | None = None,
        noise_model=None,
        **kwargs,
    ):
        img_size = tuple(int(s) for s in img_size)
        if not img_size or any(s < 1 for s in img_size):
            raise UserError(f"image size {img_size} is invalid: give positive dimensions such as (C, H, W)")
        n = math.prod(img_size)
        if isinstance(m, bool) or int(m) != m or not 1 <= int(m) <= n:
            raise UserError(
                f"{m} measurements is out of range for a signal of {n} entries: give 1 <= m <= {n}"
            )
        m = int(m)
        super().__init__(img_size=img_size, noise_model=noise_model, device=device, **kwargs)
        self.m = m
        self.n = n
        self.name = f"PartialCirculant_m{m}"

        if rng is None:
            rng = torch.Generator("cpu")
            if seed is not None:
                rng.manual_seed(int(seed))
            else:
                rng.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        gdev = rng.device
        signs = torch.randint(0, 2, (n,), generator=rng, device=gdev).mul_(2).sub_(1).to(torch.float32)
        filt = torch.randn(n, generator=rng, device=gdev, dtype=torch.float64)
        filt = filt * (math.sqrt(n) / filt.norm().clamp_min(1e-300))  # ||g||^2 = n exactly
        idx = torch.randperm(n, generator=rng, device=gdev)[:m].sort().values

        # Filter spectrum computed in float64 and stored in complex64 (it is cast to the input's
        # precision at use); the rounded spectrum still defines one real circulant operator, and
        # A_adjoint uses the very same numbers, so adjointness is exact up to FFT round-off.
        self.register_buffer("signs", signs)
        self.register_buffer("filter_fft", torch.fft.rfft(filt).to(torch.complex64))
        self.register_buffer("indices", idx)
        self.scale = 1.0 / math.sqrt(m)
        self.to(device)

    def _flat(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != self.img_size:
            raise ValueError(
                f"PartialCirculant expects inputs of shape (B, {self.img_size}), got {tuple(x.shape)}"
            )
        return x.reshape(x.shape[0], self.n)

    def A(self, x: Tensor, **kwargs) -> Tensor:
        z = self._flat(x)
        dtype = z.dtype if z.dtype in (torch.float32, torch.float64) else torch.float32
        z = z.to(dtype) * self.signs.to(dtype)
        spec = torch.fft.rfft(z, dim=-1) * self.filter_fft.to(_complex_dtype(dtype))
        conv = torch.fft.irfft(spec, n=self.n, dim=-1)
        return conv[:, self.indices] * self.scale

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        if y.dim() != 2 or y.shape[1] != self.m:
            raise ValueError(
                f"PartialCirculant expects measurements of shape (B, {self.m}), got {tuple(y.shape)}"
            )
        dtype = y.dtype if y.dtype in (torch.float32, torch.float64) else torch.float32
        w = torch.zeros(y.shape[0], self.n, dtype=dtype, device=y.device).index_copy(
            1, self.indices, y.to(dtype)
        )
        spec = torch.fft.rfft(w, dim=-1) * self.filter_fft.to(_complex_dtype(dtype)).conj()
        z = torch.fft.irfft(spec, n=self.n, dim=-1) * self.signs.to(dtype)
        return (z * self.scale).reshape(y.shape[0], *self.img_size)
