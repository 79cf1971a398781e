"""What the inversion algorithms of :mod:`genprior.theory` share: the generator ``G`` as a
:class:`~genprior.generators.random_relu.RandomReLUGenerator`, the measurement operator ``A``, the
error measure, and the local curvature of ``z -> A G(z)``.

Setting: ``x = G(z) = act_d(W_d act_{d-1}(... act_1(W_1 z + b_1) ...) + b_d)`` (see
:class:`genprior.generators.random_relu.RandomReLUGenerator`), observed as ``y = A x (+ noise)``.
The measurement operator ``A`` is given in one of three forms everywhere in :mod:`genprior.theory`:

* ``None``: the identity (``y`` is the output itself);
* a dense matrix ``(m, n)`` (numpy array or tensor);
* a deepinv :class:`~deepinv.physics.LinearPhysics`; it is called on ``x`` reshaped to
  ``x_shape`` (default ``(1, 1, n)``, the generator's output shape). The LP materialises it
  column by column (``n`` calls of ``A`` batched), which is meant for small ``n``; gradient
  descent and Langevin only call ``A`` (and autograd through it).

Every algorithm is seeded; nothing touches the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..generators.base import LayeredGenerator
from ..generators.random_relu import RandomReLUGenerator

WeightsBiases = Sequence[tuple[Any, Any]]


def as_generator(
    net: RandomReLUGenerator | WeightsBiases,
    activation: str = "relu",
    negative_slope: float = 0.2,
    output_activation: str | None = None,
) -> RandomReLUGenerator:
    """A :class:`RandomReLUGenerator` from itself or from a list of ``(W, b)`` layers."""
    if isinstance(net, RandomReLUGenerator):
        return net
    if isinstance(net, LayeredGenerator):
        raise UserError(
            f"{type(net).__name__} is not a fully connected ReLU network: wrap its weights with "
            "RandomReLUGenerator.from_weights"
        )
    return RandomReLUGenerator.from_weights(
        list(net), activation=activation, negative_slope=negative_slope, output_activation=output_activation
    )


def relative_error(z_hat: Any, z_true: Any) -> float:
    """``||z_hat - z_true|| / ||z_true||`` (inf when ``z_hat`` is None)."""
    if z_hat is None:
        return math.inf
    a = np.asarray(torch.as_tensor(z_hat).detach().cpu().double().reshape(-1))
    b = np.asarray(torch.as_tensor(z_true).detach().cpu().double().reshape(-1))
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def is_physics(A: Any) -> bool:
    return hasattr(A, "A") and hasattr(A, "A_adjoint") and callable(A.A)


class Operator:
    """A measurement operator ``R^n -> R^m`` on flat vectors, whatever form it was given in."""

    def __init__(self, A: Any, n: int, x_shape: Sequence[int] | None, dtype: torch.dtype):
        self.n = n
        self.dtype = dtype
        self.x_shape = tuple(x_shape) if x_shape is not None else (1, 1, n)
        if int(np.prod(self.x_shape)) != n:
            raise UserError(
                f"x_shape {self.x_shape} holds {int(np.prod(self.x_shape))} values, the generator gives {n}"
            )
        self.physics = None
        self.mat: Tensor | None = None
        if A is None:
            self.kind = "identity"
            self.m = n
        elif is_physics(A):
            self.kind = "physics"
            self.physics = A
            with torch.no_grad():
                probe = A.A(torch.zeros((1, *self.x_shape), dtype=torch.float32))
            self.m = int(probe[0].numel())
        else:
            mat = torch.as_tensor(np.asarray(A.detach().cpu() if isinstance(A, Tensor) else A), dtype=dtype)
            if mat.dim() != 2 or mat.shape[1] != n:
                raise UserError(
                    f"A must be a matrix with {n} columns (the output size), got shape {tuple(mat.shape)}"
                )
            if not torch.isfinite(mat).all():
                raise UserError("A holds NaN or infinite values")
            self.kind = "dense"
            self.mat = mat
            self.m = mat.shape[0]

    def apply(self, x: Tensor) -> Tensor:
        """``(B, n) -> (B, m)``."""
        if self.kind == "identity":
            return x
        if self.kind == "dense":
            return x @ self.mat.to(x.device, x.dtype).t()
        p = self.physics
        out = p.A(x.reshape(x.shape[0], *self.x_shape).to(self._phys_dtype()))
        return out.reshape(x.shape[0], -1).to(x.dtype)

    def _phys_dtype(self) -> torch.dtype:
        for t in list(getattr(self.physics, "parameters", lambda: [])()) + list(
            getattr(self.physics, "buffers", lambda: [])()
        ):
            if t.is_floating_point():
                return t.dtype
        return self.dtype

    def matrix(self) -> np.ndarray:
        """The ``(m, n)`` matrix (materialised for physics, ``n`` columns at a time in chunks)."""
        if self.kind == "identity":
            return np.eye(self.n)
        if self.kind == "dense":
            return self.mat.double().cpu().numpy()
        cols = []
        with torch.no_grad():
            for s in range(0, self.n, 256):
                e = torch.zeros((min(256, self.n - s), self.n), dtype=self.dtype)
                e[torch.arange(e.shape[0]), torch.arange(s, s + e.shape[0])] = 1
                cols.append(self.apply(e).double().cpu().numpy())
        return np.concatenate(cols, 0).T

    def norm(self) -> float:
        """Spectral norm ``||A||_2``."""
        if self.kind == "identity":
            return 1.0
        if self.kind == "dense":
            return float(torch.linalg.matrix_norm(self.mat.double(), ord=2))
        if self.n <= 4096:
            return float(np.linalg.norm(self.matrix(), 2))
        x0 = torch.randn((1, *self.x_shape), generator=torch.Generator().manual_seed(0))
        return float(self.physics.compute_norm(x0.to(self._phys_dtype()), verbose=False, squared=False))


def flat_target(y: Any, m: int, what: str = "y") -> np.ndarray:
    arr = np.asarray(y.detach().cpu().double() if isinstance(y, Tensor) else y, dtype=np.float64).reshape(-1)
    if arr.size != m:
        raise UserError(f"{what} has {arr.size} values but the measurement operator gives {m}")
    if not np.all(np.isfinite(arr)):
        raise UserError(f"{what} holds NaN or infinite values")
    return arr


def row_selection(M: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """If every non-zero row of ``M`` is a multiple of a distinct unit vector: (rows, cols, scale)."""
    nz = np.flatnonzero(np.abs(M).max(axis=1) > 0)
    if nz.size == 0:
        return None
    sub = M[nz]
    cols = np.argmax(np.abs(sub), axis=1)
    scale = sub[np.arange(len(nz)), cols]
    rest = sub.copy()
    rest[np.arange(len(nz)), cols] = 0
    if np.abs(rest).max() > 0 or len(np.unique(cols)) != len(cols):
        return None
    return nz, cols, scale


def net_and_op(generator, y, A, x_shape, activation="relu", negative_slope=0.2, output_activation=None):
    net = as_generator(generator, activation, negative_slope, output_activation)
    op = Operator(A, net.output_dim, x_shape, net.dtype)
    yt = torch.as_tensor(flat_target(y, op.m), dtype=net.dtype)
    return net, op, yt


def local_curvature(f: Callable[[Tensor], Tensor], z: Tensor, iters: int = 30, seed: int = 0) -> Tensor:
    """``lambda_max(J_c^T J_c)`` of ``f`` at each row ``z_c``, shape ``(C,)`` (power iteration;
    ``f`` acts row-wise, so one batched Jacobian-vector product serves every row)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(z.shape, generator=g, dtype=z.dtype)
    v = v / v.norm(dim=1, keepdim=True)
    lam = torch.zeros(z.shape[0], dtype=z.dtype)
    for _ in range(iters):
        _, jv = torch.func.jvp(f, (z,), (v,))
        _, vjp_fn = torch.func.vjp(f, z)
        (w,) = vjp_fn(jv)
        lam = (w * v).sum(1)
        v = w / w.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return lam.clamp_min(0)
