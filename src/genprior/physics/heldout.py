"""A physics with some of its measurement entries held out, for calibrating std maps.

A posterior sampler's spread is checked on measurements it did not see: solve once without a
share of the entries, then compare the samples' measurements there with the held-out values
(:func:`genprior.solvers.sgilo.holdout_scale`). :class:`HeldOut` is that smaller problem for any
linear deepinv physics: ``A'(x) = keep * A(x)``, ``A'^T(v) = A^T(keep * v)``, so a held-out entry
reads 0, as an inpainting's missing pixel does. It is a deepinv ``LinearPhysics``: ``A'^T``, the
pseudo-inverse and ``prox_l2`` (deepinv's conjugate gradients) are those of the smaller problem,
so every solver runs it unchanged (DiffPIR's proximal steps, PSLD's projections, ReSample's
floor, which applies ``A'`` to a batch of another size).
"""

from __future__ import annotations

from typing import Any

from deepinv.physics import LinearPhysics
from torch import Tensor


class HeldOut(LinearPhysics):
    """``physics`` with the measurement entries where ``keep`` is 0 held out (``A'(x)`` is 0 there).

    Args:
        physics: a deepinv physics (linear for ``A_adjoint`` and ``prox_l2``; ``A`` alone needs
            only ``physics.A``).
        keep: 1 where an entry is kept, 0 where held out, shaped like one batch of measurements:
            batch 1 (one draw for every image, any batch size) or batch ``B`` (one per image;
            then a batch of ``K * B``, ``K`` copies of the ``B`` images, image-minor, as
            ``y.repeat(K, ...)`` makes, takes the same entries for every copy).

    The noise model is ``physics``'s (the same object).
    """

    def __init__(self, physics: Any, keep: Tensor):
        super().__init__(noise_model=physics.noise_model, device=keep.device)
        self.physics = physics
        self.keep = keep

    def _keep_for(self, v: Tensor) -> Tensor:
        keep = self.keep.to(v)
        n, b = v.shape[0], keep.shape[0]
        if b == 1 or n == b:
            return keep
        if n % b:
            raise ValueError(f"HeldOut: a batch of {n} is not a multiple of the {b} images the mask is for")
        return keep.repeat(n // b, *([1] * (keep.dim() - 1)))

    def A(self, x: Tensor, **kwargs: Any) -> Tensor:
        ax = self.physics.A(x)
        return ax * self._keep_for(ax)

    def A_adjoint(self, y: Tensor, **kwargs: Any) -> Tensor:
        return self.physics.A_adjoint(y * self._keep_for(y))
