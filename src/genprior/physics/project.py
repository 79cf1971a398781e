"""The pseudo-inverse ``A^+`` of a linear physics, and the point of the measurement-consistent set
``{x : A x = y}`` nearest a given image.

PSLD's gluing term (Rout et al. 2023) writes that point as ``A^T y + (I - A^T A) x``, which is the
orthogonal projection only where ``A A^T = I`` (inpainting, and the SVD-based operators the paper
uses). For the other linear tasks ``A A^T`` is far from ``I`` (on 32x32 images its eigenvalues are
0.004-0.016 at super-resolution x8 with deepinv's bicubic filter, 13-30 for deepinv's Gaussian
compressed sensing with 50 measurements: ``benchmarks/aat_spectrum.py``), so that formula moves
an image almost nowhere, or far past the set. The projection itself is ``x + A^+ (y - A x)``,
``A^+ = A^T (A A^T)^{-1}`` for ``A`` of full row rank; ``(A A^T) u = r`` is solved by conjugate
gradients in the measurement space (deepinv's), which needs only ``A`` and ``A^T``.
"""

from __future__ import annotations

from typing import Any

import torch
from deepinv.optim.linear import conjugate_gradient
from torch import Tensor


def _solve_aat(physics: Any, r: Tensor, max_iter: int, tol: float) -> Tensor:
    """``u`` with ``(A A^T) u = r``, each image on its own (CG from 0, so that where ``A A^T`` is
    singular, as at an inpainting's missing pixels, the iterates stay in its range)."""
    return conjugate_gradient(
        lambda v: physics.A(physics.A_adjoint(v)), r, max_iter=max_iter, tol=tol, eps=1e-30, parallel_dim=0
    )


class _PInv(torch.autograd.Function):
    """``A^+ r`` with the backward ``(A^+)^T g = (A A^T)^{-1} A g``: two CG solves, no graph
    through the iterations."""

    @staticmethod
    def forward(ctx, r: Tensor, physics: Any, max_iter: int, tol: float) -> Tensor:  # type: ignore[override]
        ctx.physics, ctx.max_iter, ctx.tol = physics, max_iter, tol
        with torch.no_grad():
            return physics.A_adjoint(_solve_aat(physics, r, max_iter, tol))

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        with torch.no_grad():
            return _solve_aat(ctx.physics, ctx.physics.A(g), ctx.max_iter, ctx.tol), None, None, None


def pinv(physics: Any, r: Tensor, max_iter: int = 100, tol: float = 1e-5) -> Tensor:
    """``A^+ r`` for measurements ``r`` (batch first), to a relative CG residual ``tol``;
    differentiable in ``r``."""
    return _PInv.apply(r, physics, max_iter, tol)


def project_onto_measurements(
    physics: Any, x: Tensor, y: Tensor, max_iter: int = 100, tol: float = 1e-5
) -> Tensor:
    """Per image, the image nearest ``x`` (in l2) with ``A(image) = y``: ``x + A^+ (y - A x)``;
    differentiable in ``x`` (its Jacobian is ``I - A^+ A``, the projection onto ``A``'s null space)."""
    return x + pinv(physics, y - physics.A(x), max_iter, tol)


def adjoint_glue_point(physics: Any, x: Tensor, y: Tensor) -> Tensor:
    """PSLD's formula as the paper writes it, ``A^T y + (I - A^T A) x``: the projection of
    :func:`project_onto_measurements` only where ``A A^T = I``."""
    return x + physics.A_adjoint(y - physics.A(x))
