"""Dense Gaussian compressed sensing whose pseudo-inverse is computed when first asked for.

deepinv's :class:`~deepinv.physics.CompressedSensing` computes ``pinv(A)`` (an SVD of the
``m x n`` matrix) when it is built: 15 s on one core of the development machine for the demo's
1228 x 12288 face matrix, twice the time ILO then takes to solve the problem, and no generative
solver of genprior ever applies ``A^+``. :class:`GaussianCS` is the same operator (the same matrix
from the same generator: ``torch.randn(m, n, generator=rng) / sqrt(m)``, the same products) with
``A^+`` computed on the first call of :meth:`A_dagger`. It is a ``CompressedSensing``, so code that
checks for deepinv's class still recognises it; ``tests/test_physics.py`` checks that both give
the same ``A``, ``A^T`` and ``A^+`` bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from deepinv.physics import CompressedSensing, LinearPhysics
from torch import Tensor


class GaussianCS(CompressedSensing):
    """``y = A x``, ``A`` of shape ``(m, C*H*W)`` with entries ``N(0, 1/m)`` drawn from ``rng``.

    Args:
        m: number of measurements.
        img_size: ``(C, H, W)``.
        rng: the generator the matrix is drawn from (on ``device``; a fresh one if None).
        device: where the matrix is drawn and kept.
        **kwargs: for :class:`deepinv.physics.LinearPhysics` (e.g. ``noise_model``).
    """

    def __init__(
        self,
        m: int,
        img_size: Sequence[int],
        rng: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        **kwargs,
    ) -> None:
        LinearPhysics.__init__(self, device=device, **kwargs)  # not CompressedSensing's: no pinv here
        self.name = f"CS_m{m}"
        self.img_size = tuple(img_size)
        self.channelwise = False
        self.dtype = torch.float
        self.rng = rng if rng is not None else torch.Generator(device=device)
        self.register_buffer("initial_random_state", self.rng.get_state())
        n = math.prod(self.img_size)
        a = torch.randn((m, n), device=device, dtype=self.dtype, generator=self.rng) / math.sqrt(m)
        self.register_buffer("_A", a)
        self.register_buffer("_A_adjoint", a.T)
        self._A_dagger: Tensor | None = None

    def rescale(self, c: float) -> None:
        """Multiply the matrix by ``c`` (out of place: ``A^T`` is a view of ``A``)."""
        self._A = self._A * c
        self._A_adjoint = self._A.T
        if self._A_dagger is not None:
            self._A_dagger = self._A_dagger / c

    def A(self, x: Tensor, **kwargs) -> Tensor:
        return torch.einsum("in, mn->im", x.reshape(x.shape[0], -1), self._A)

    def A_adjoint(self, y: Tensor, **kwargs) -> Tensor:
        x = torch.einsum("im, nm->in", y.type(self.dtype), self._A_adjoint)
        return x.view(y.shape[0], *self.img_size)

    def A_dagger(self, y: Tensor, **kwargs) -> Tensor:
        if self._A_dagger is None or self._A_dagger.device != self._A.device:
            self._A_dagger = torch.linalg.pinv(self._A)
        x = torch.einsum("im, nm->in", y.type(self.dtype), self._A_dagger)
        return x.reshape(y.shape[0], *self.img_size)
