"""Inverting (leaky) ReLU generators: layer-wise linear programs, gradient descent with the
sign-flip step, and Langevin sampling of the latent posterior.

Setting: ``x = G(z) = act_d(W_d act_{d-1}(... act_1(W_1 z + b_1) ...) + b_d)`` (see
:class:`genprior.generators.random_relu.RandomReLUGenerator`), observed as ``y = A x (+ noise)``.
The measurement operator ``A`` is given in one of three forms everywhere in this module:

* ``None``: the identity (``y`` is the output itself);
* a dense matrix ``(m, n)`` (numpy array or tensor);
* a deepinv :class:`~deepinv.physics.LinearPhysics`; it is called on ``x`` reshaped to
  ``x_shape`` (default ``(1, 1, n)``, the generator's output shape). The LP materialises it
  column by column (``n`` calls of ``A`` batched), which is meant for small ``n``; gradient
  descent and Langevin only call ``A`` (and autograd through it).

Methods (all seeded; nothing touches the global RNG):

* :func:`lp_invert` -- Lei, Jalal, Dhillon & Dimakis (2019), *Inverting deep generative models,
  one layer at a time*: invert the last layer first. For ``y = relu(W z + b)`` the units with
  ``y_i > 0`` give equations ``W_i z + b_i = y_i`` and the others inequalities
  ``W_i z + b_i <= 0``; a linear program (``scipy.optimize.linprog``, HiGHS) finds ``z`` with the
  smallest slack, in the l-infinity sense (one slack ``t``) or the l1 sense (one slack per row,
  robust to noisy targets). A hidden layer's input is itself a ReLU output, so ``z >= 0`` is added
  there. A leaky-ReLU layer is inverted exactly by division (``u = y`` where ``y >= 0``, ``y /
  slope`` elsewhere), then the linear system is solved by the same LP with equations on every row.
* :func:`pattern_lp_refine` -- from an estimate ``z0`` (e.g. gradient descent's), fix every
  layer's activation pattern, which makes ``A G`` affine in ``z``, and solve one LP over ``z``;
  repeat with the new pattern. Exact as soon as the pattern is right.
* :func:`gd_invert` -- gradient descent (Adam or plain) on ``||A G(z) - y||^2`` with Hand &
  Voroninski's sign-flip check: every few steps compare the loss at ``z`` and ``-rho z`` and jump
  when the latter is lower (the spurious critical point of the landscape sits near ``-rho_d z*``).
* :func:`langevin_sample` -- unadjusted Langevin on ``p(z | y) ~ exp(-||A G(z) - y||^2 / (2 sigma^2)
  - ||z||^2 / 2)``, vectorised over chains.

Measurements in :func:`lp_invert`: a row-selection (inpainting: each row a multiple of a
unit vector, zero rows dropped, deepinv ``Inpainting`` included) restricts the last layer's LP to
the observed rows, which stays exact. A general ``A`` of full column rank is inverted first
(least squares). A general ``A`` with ``m < n`` puts ``A`` inside the last layer's LP: for a
fixed activation pattern ``D`` of the last layer, ``A D (W z + b) = y`` together with the sign
constraints of the pattern is linear in ``z``; the pattern comes from a warm start
(:func:`gd_invert`, or ``init_z``) and is updated from the LP's solution until it stops changing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy.optimize import linprog
from torch import Tensor

from ..errors import UserError
from ..generators.base import LayeredGenerator
from ..generators.random_relu import RandomReLUGenerator

Norm = Literal["linf", "l1"]
WeightsBiases = Sequence[tuple[Any, Any]]

__all__ = [
    "LayerReport",
    "LPInversionResult",
    "GDInversionResult",
    "LangevinResult",
    "lp_invert",
    "pattern_lp_refine",
    "gd_invert",
    "langevin_sample",
    "as_generator",
    "relative_error",
]


# ==================================================================================================
# helpers: generators and measurement operators
# ==================================================================================================
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


def _is_physics(A: Any) -> bool:
    return hasattr(A, "A") and hasattr(A, "A_adjoint") and callable(A.A)


class _Operator:
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
        elif _is_physics(A):
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


def _flat_target(y: Any, m: int, what: str = "y") -> np.ndarray:
    arr = np.asarray(y.detach().cpu().double() if isinstance(y, Tensor) else y, dtype=np.float64).reshape(-1)
    if arr.size != m:
        raise UserError(f"{what} has {arr.size} values but the measurement operator gives {m}")
    if not np.all(np.isfinite(arr)):
        raise UserError(f"{what} holds NaN or infinite values")
    return arr


def _selection(M: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
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


# ==================================================================================================
# the LP
# ==================================================================================================
@dataclass
class LayerReport:
    """What the LP of one layer did.

    Attributes:
        layer: 1-based index of the inverted layer (its input is ``x_{layer-1}``).
        status: ``scipy.optimize.linprog`` status (0 optimal, 2 infeasible, ...; -1: not run).
        message: the solver's (or our) message.
        slack: optimal objective: the l-infinity slack ``t``, or the sum of the l1 slacks.
        max_violation: the largest single slack.
        n_active: rows used as equations (active ReLUs, or all rows of a linear / leaky layer).
        n_rows: rows of the layer (observed rows when measurements select a subset).
        n_vars: unknowns (the layer's input size).
        determined: the equations alone have full column rank on the solution's support, so the
            preimage is unique (a sufficient condition).
        polished: the LP vertex was replaced by the least-squares solution of its equations.
        time_s: wall time of this layer.
        pattern_iters: activation patterns tried (last layer with a general ``A``).
        presolved: the equations determined the input and it met every constraint, so no LP ran.
    """

    layer: int
    status: int
    message: str
    slack: float
    max_violation: float
    n_active: int
    n_rows: int
    n_vars: int
    determined: bool = False
    polished: bool = False
    time_s: float = 0.0
    pattern_iters: int = 0
    presolved: bool = False


@dataclass
class LPInversionResult:
    """Result of :func:`lp_invert`.

    Attributes:
        z: the recovered latent ``(k,)`` (float64 numpy), or None when an LP failed.
        success: every LP was solved and every layer's slack is within the tolerance.
        message: one line saying what happened (why it failed).
        layers: one :class:`LayerReport` per layer, last layer first.
        activations: recovered ``[x_0 = z, x_1, ..., x_{d-1}]`` (those reached).
        residual: ``||A G(z) - y||_inf`` of the recovered ``z`` (inf when ``z`` is None).
        time_s: total wall time.
    """

    z: np.ndarray | None
    success: bool
    message: str
    layers: list[LayerReport] = field(default_factory=list)
    activations: list[np.ndarray] = field(default_factory=list)
    residual: float = math.inf
    time_s: float = 0.0


_HIGHS_OPTIONS = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


@dataclass
class LayerLP:
    """One layer's linear program in its unknown input ``z``::

        minimise    the slack (its largest entry for norm "linf", its sum for "l1")
        subject to  |M z + c - t| <= s_fit                 fit rows: outputs the layer must produce
                    S z + d <= e + s_sign, s_sign >= floor  sign rows: units that must stay off
                    z >= 0                                  when the input is itself a ReLU output

    For a ReLU layer ``x = relu(W z + b)`` with target ``x``, the fit rows are the active units
    (``M, c, t = W_on, b_on, x_on``) and the sign rows the inactive ones (``S, d = W_off, b_off``,
    ``e = max(x_off, 0)``); ``floor = max(-x_off, 0)`` is the misfit no input can remove (a ReLU
    cannot output a negative value). Without slack (``use_slack=False``) the rows are hard
    constraints and the LP is a feasibility problem.
    """

    M: np.ndarray  # fit rows (r x p)
    c: np.ndarray  # their offsets (r)
    t: np.ndarray  # their targets (r)
    S: np.ndarray  # sign rows (q x p)
    d: np.ndarray  # their offsets (q)
    e: np.ndarray  # their upper bounds (q)
    floor: np.ndarray  # least slack of each sign row (q)
    nonneg: bool = False  # z >= 0

    @classmethod
    def fit_only(cls, M: np.ndarray, c: np.ndarray, t: np.ndarray, nonneg: bool) -> LayerLP:
        """Fit rows and no sign rows (a linear layer)."""
        return cls(M, c, t, np.zeros((0, M.shape[1])), np.zeros(0), np.zeros(0), np.zeros(0), nonneg)

    @classmethod
    def with_signs(cls, M, c, t, S, d, nonneg: bool) -> LayerLP:
        """Fit rows and sign rows ``S z + d <= 0`` with no floor (an activation pattern)."""
        return cls(M, c, t, S, d, np.zeros(len(d)), np.zeros(len(d)), nonneg)

    @classmethod
    def of_layer(
        cls,
        W: np.ndarray,
        b: np.ndarray,
        act: str,
        slope: float,
        y: np.ndarray,
        rows: np.ndarray | None,
        active_tol: float,
        threshold: float | None = None,
        nonneg: bool = False,
    ) -> LayerLP:
        """The LP of a layer ``y = act(W z + b)`` with target ``y`` on ``rows``. Units with
        ``y_i > thr`` are active, ``thr = threshold`` if given else ``active_tol * max|y|``."""
        if rows is not None:
            W, b = W[rows], b[rows]
        scale = float(np.abs(y).max(initial=0.0))
        if act == "linear":
            return cls.fit_only(W, b, y, nonneg)
        if act == "leaky_relu":
            return cls.fit_only(W, b, np.where(y >= 0, y, y / slope), nonneg)
        thr = active_tol * scale if threshold is None else float(threshold)
        on = y > thr
        off = ~on
        floor = np.maximum(-y[off], 0.0)
        return cls(W[on], b[on], y[on], W[off], b[off], np.maximum(y[off], 0.0), floor, nonneg)

    @property
    def n_rows(self) -> int:
        return self.M.shape[0] + self.S.shape[0]

    def solve(
        self, norm: str, use_slack: bool, time_limit: float | None
    ) -> tuple[np.ndarray | None, int, str, float, float]:
        """HiGHS on the LP; returns ``(z, status, message, objective, max_violation)``."""
        M, S = self.M, self.S
        p = M.shape[1] if M.size or M.shape[1] else S.shape[1]
        r, q = M.shape[0], S.shape[0]
        rhs_fit = self.t - self.c
        rhs_sign = self.e - self.d
        z_bounds = [(0, None) if self.nonneg else (None, None)] * p
        opts = dict(_HIGHS_OPTIONS)
        if time_limit is not None:
            opts["time_limit"] = float(time_limit)
        if not use_slack:
            res = linprog(
                np.zeros(p),
                A_ub=S if q else None,
                b_ub=rhs_sign if q else None,
                A_eq=M if r else None,
                b_eq=rhs_fit if r else None,
                bounds=z_bounds,
                method="highs",
                options=opts,
            )
            if res.x is None:
                return None, int(res.status), str(res.message), math.inf, math.inf
            viol = self.violation(res.x)
            return res.x, int(res.status), str(res.message), viol, viol
        if norm == "linf":
            # variables [z, s]: one slack for every row
            blocks = []
            if r:
                blocks += [np.hstack([M, -np.ones((r, 1))]), np.hstack([-M, -np.ones((r, 1))])]
            if q:
                blocks.append(np.hstack([S, -np.ones((q, 1))]))
            A_ub = np.vstack(blocks) if blocks else None
            b_ub = np.concatenate([rhs_fit, -rhs_fit, rhs_sign]) if blocks else None
            s_min = float(max(self.floor.max(initial=0.0), 0.0))
            obj = np.zeros(p + 1)
            obj[-1] = 1.0
            res = linprog(
                obj, A_ub=A_ub, b_ub=b_ub, bounds=z_bounds + [(s_min, None)], method="highs", options=opts
            )
            if res.x is None:
                return None, int(res.status), str(res.message), math.inf, math.inf
            return res.x[:p], int(res.status), str(res.message), float(res.x[-1]), float(res.x[-1])
        # l1: variables [z, s_fit (r), s_sign (q)]
        blocks = []
        if r:
            blocks += [
                np.hstack([M, -np.eye(r), np.zeros((r, q))]),
                np.hstack([-M, -np.eye(r), np.zeros((r, q))]),
            ]
        if q:
            blocks.append(np.hstack([S, np.zeros((q, r)), -np.eye(q)]))
        A_ub = np.vstack(blocks) if blocks else None
        b_ub = np.concatenate([rhs_fit, -rhs_fit, rhs_sign]) if blocks else None
        obj = np.concatenate([np.zeros(p), np.ones(r + q)])
        bounds = z_bounds + [(0, None)] * r + [(max(float(f), 0.0), None) for f in self.floor]
        res = linprog(obj, A_ub=A_ub, b_ub=b_ub, bounds=bounds, method="highs", options=opts)
        if res.x is None:
            return None, int(res.status), str(res.message), math.inf, math.inf
        s = res.x[p:]
        return res.x[:p], int(res.status), str(res.message), float(s.sum()), float(s.max(initial=0.0))

    def violation(self, z: np.ndarray) -> float:
        """The largest violation of a row at ``z`` (floors not counted)."""
        v = 0.0
        if self.M.shape[0]:
            v = max(v, float(np.abs(self.M @ z + self.c - self.t).max()))
        if self.S.shape[0]:
            v = max(v, float(np.maximum(self.S @ z + self.d - self.e, 0).max()))
        return v

    def objective(self, z: np.ndarray, norm: str) -> float:
        """The LP's objective at ``z``: the least slack every row needs there."""
        fit = np.abs(self.M @ z + self.c - self.t) if self.M.shape[0] else np.zeros(0)
        sign = (
            np.maximum(np.maximum(self.S @ z + self.d - self.e, 0), self.floor)
            if self.S.shape[0]
            else np.zeros(0)
        )
        both = np.concatenate([fit, sign])
        if norm == "linf":
            return float(both.max(initial=0.0))
        return float(both.sum())

    def polish(self, z: np.ndarray, norm: str, obj_lp: float, scale: float) -> tuple[np.ndarray | None, bool]:
        """Least squares on the fit rows (on the support of ``z`` when ``z >= 0``), kept when it
        is no worse than the LP's answer. Returns ``(z_new or None, determined)``."""
        M = self.M
        if M.shape[0] == 0:
            return None, False
        p = M.shape[1]
        support = np.flatnonzero(z > 1e-9 * max(scale, 1e-300)) if self.nonneg else np.arange(p)
        if support.size == 0:
            return None, False
        sol, _, rank, _ = np.linalg.lstsq(M[:, support], self.t - self.c, rcond=None)
        determined = rank == support.size
        if not determined:
            return None, False
        z_new = np.zeros(p)
        z_new[support] = sol
        if self.nonneg and (z_new < -1e-12 * scale).any():
            return None, True
        if self.nonneg:
            z_new = np.maximum(z_new, 0)
        if self.objective(z_new, norm) <= obj_lp + 1e-12 * max(scale, 1.0):
            return z_new, True
        return None, True

    def polish_into(
        self, rep: LayerReport, z: np.ndarray, norm: str, obj_lp: float, scale: float
    ) -> np.ndarray:
        """:meth:`polish` ``z`` and record it in ``rep`` (determined, polished, slack, largest
        violation); returns the polished input, or ``z`` when polishing did not help."""
        z_new, rep.determined = self.polish(z, norm, obj_lp, scale)
        if z_new is None:
            return z
        rep.polished = True
        rep.slack = self.objective(z_new, norm)
        rep.max_violation = max(self.violation(z_new), float(self.floor.max(initial=0.0)))
        return z_new

    def presolve(self, scale: float, tol: float = 1e-10) -> np.ndarray | None:
        """The LP's answer without the LP when the fit rows alone pin the input down.

        If the fit rows have full column rank, their least-squares solution is the only candidate
        with zero slack; when it fits them, meets every sign row (and ``z >= 0`` where required)
        within ``tol * scale`` and no floor is positive, it is an optimal LP solution and the
        unique one. Returns it, or None (then the LP runs).
        """
        M = self.M
        p = M.shape[1]
        if M.shape[0] < p or (self.floor.size and self.floor.max() > tol * scale):
            return None
        z, _, rank, _ = np.linalg.lstsq(M, self.t - self.c, rcond=None)
        if rank < p:
            return None
        if self.nonneg:
            if (z < -tol * scale).any():
                return None
            z = np.maximum(z, 0.0)
        if self.violation(z) > tol * scale:
            return None
        return z


def lp_invert(
    weights_biases: RandomReLUGenerator | WeightsBiases,
    x_target: Any,
    A: Any = None,
    *,
    norm: Norm = "linf",
    activation: str = "relu",
    negative_slope: float = 0.2,
    output_activation: str | None = None,
    x_shape: Sequence[int] | None = None,
    tol: float | None = 1e-6,
    active_tol: float = 1e-9,
    active_threshold: float | None = None,
    hidden_threshold: float = 10.0,
    hidden_cap: float = 0.2,
    slack: bool = True,
    polish: bool = True,
    presolve: bool = True,
    init_z: Any = None,
    pattern_iters: int = 20,
    gd_kwargs: dict | None = None,
    time_limit: float | None = None,
    seed: int = 0,
) -> LPInversionResult:
    """Invert a (leaky) ReLU network layer by layer, last layer first, with linear programs.

    Args:
        weights_biases: ``[(W_1, b_1), ..., (W_d, b_d)]`` (``W_i`` of shape ``(n_i, n_{i-1})``,
            ``b_i`` or None) or a :class:`RandomReLUGenerator` (its activations are then used).
        x_target: the observation: ``G(z)`` itself when ``A`` is None, else ``A G(z)`` (any shape
            with the right number of values).
        A: measurements (None, a matrix or a deepinv LinearPhysics; see the module docstring).
        norm: ``"linf"`` (one slack for all rows; the exact-recovery setting) or ``"l1"`` (one
            slack per row; robust for noisy targets).
        activation, negative_slope, output_activation: the network's activations when it is given
            as weights (``output_activation`` None: same as ``activation``).
        x_shape: the shape a deepinv physics expects (default ``(1, 1, n)``).
        tol: a layer whose optimal slack (largest single violation) exceeds
            ``tol * max(1, max|target|)`` makes ``success`` False (the target is not in that layer's
            range). None accepts any slack (noisy targets).
        active_tol: units with ``y_i > active_tol * max|y|`` count as active ReLUs.
        active_threshold: an absolute threshold for the observed (last) layer instead, for noisy
            targets: with noise of standard deviation ``s`` on ``G(z)``, ``3 s`` keeps the zeros of
            the ReLU output that noise pushed up from being read as equations (the dominant error
            of the naive LP; see ``docs/theory.md``).
        hidden_threshold: a recovered hidden layer carries errors of the order of the slack of
            the layer above (round-off of float32 measurements, noise); its units below
            ``min(hidden_threshold * slack_above, hidden_cap * max|x|)`` count as inactive (the cap
            keeps a layer above with a few large slacks, e.g. the naive LP on noisy data, from
            switching off the whole layer). Reading a small active unit as inactive only trades an
            equation for a (still valid) inequality; the converse would add a false equation.
        slack: False makes the constraints hard (equalities and inequalities without slack):
            an out-of-range target then gives an infeasible LP, reported in the result.
        polish: replace each LP vertex by the least-squares solution of the layer's equations when
            those determine it and it is at least as good (gives machine-precision recovery).
        presolve: first try the least-squares solution of a layer's equations; when they have full
            column rank and it meets every constraint it is the LP's unique optimum (slack 0) and
            the LP is skipped (``LayerReport.presolved``). Same answers, much faster on wide
            layers; ``presolve=False`` always runs the LP.
        init_z: warm start for the activation pattern of the last layer when a general ``A`` with
            fewer rows than columns is used; default: :func:`gd_invert` (with ``gd_kwargs``).
        pattern_iters: at most this many pattern updates in that case.
        time_limit: HiGHS time limit per LP, seconds.
        seed: seed of the gradient-descent warm start.

    Returns:
        An :class:`LPInversionResult`. A failed or infeasible LP, or a target out of range, is
        reported there (``success=False`` and a message); it does not raise.
    """
    t0 = time.perf_counter()
    if norm not in ("linf", "l1"):
        raise UserError(f"unknown norm {norm!r}: use linf or l1")
    net = as_generator(weights_biases, activation, negative_slope, output_activation)
    wbs = net.weights_biases()
    d = len(wbs)
    n = net.output_dim
    op = _Operator(A, n, x_shape, torch.float64)
    y = _flat_target(x_target, op.m, "x_target")
    if not np.all(np.isfinite(y)):
        raise UserError("x_target holds NaN or infinite values")

    layers: list[LayerReport] = []
    acts_rev: list[np.ndarray] = []

    def fail(msg: str) -> LPInversionResult:
        return LPInversionResult(
            None, False, msg, layers, list(reversed(acts_rev)), math.inf, time.perf_counter() - t0
        )

    # ---- turn the measurements into a target for the last layer ------------------------------
    rows: np.ndarray | None = None
    target = y
    general: np.ndarray | None = None
    if op.kind != "identity":
        Mat = op.matrix()
        sel = _selection(Mat)
        if sel is not None:
            r_idx, cols, scl = sel
            rows = cols
            target = y[r_idx] / scl
        elif Mat.shape[0] >= n and np.linalg.matrix_rank(Mat) == n:
            target = np.linalg.lstsq(Mat, y, rcond=None)[0]
        else:
            general = Mat

    bad_msgs: list[str] = []
    x_next = target
    first = d
    if general is not None:
        rep, x_prev, msg = _last_layer_general(
            net, wbs, general, y, norm, tol, slack, init_z, pattern_iters, gd_kwargs, time_limit, seed, op
        )
        layers.append(rep)
        if x_prev is None:
            return fail(msg)
        if msg:
            bad_msgs.append(msg)
        acts_rev.append(x_prev)
        x_next = x_prev
        first = d - 1

    for i in range(first, 0, -1):
        W, b = wbs[i - 1]
        act = net.layer_activation(i)
        rows_i = rows if i == d else None
        if act == "relu" and not slack and (x_next < -active_tol * np.abs(x_next).max(initial=0.0)).any():
            layers.append(
                LayerReport(
                    i,
                    2,
                    "negative target entries: a ReLU layer cannot output them",
                    math.inf,
                    math.inf,
                    0,
                    len(x_next),
                    W.shape[1],
                )
            )
            return fail(f"layer {i}: infeasible: the target has negative entries, which a ReLU cannot output")
        if i == d and general is None:
            thr = active_threshold
        else:  # a recovered hidden layer: its errors are of the order of the slack above
            above = layers[-1].max_violation if layers else 0.0
            xmax = float(np.abs(x_next).max(initial=0.0))
            thr = max(active_tol * xmax, min(hidden_threshold * above, hidden_cap * xmax))
        nonneg = i > 1 and net.layer_activation(i - 1) == "relu"
        lp = LayerLP.of_layer(W, b, act, net.negative_slope, x_next, rows_i, active_tol, thr, nonneg)
        tl = time.perf_counter()
        scale = max(float(np.abs(x_next).max(initial=0.0)), 1.0)
        z = lp.presolve(scale) if presolve else None
        if z is not None:
            viol = lp.violation(z)
            obj = lp.objective(z, norm)
            rep = LayerReport(
                i,
                0,
                "presolved: the layer's equations determine its input and every "
                "constraint holds (least squares); LP not needed",
                obj,
                viol,
                lp.M.shape[0],
                lp.n_rows,
                W.shape[1],
                determined=True,
                presolved=True,
            )
            rep.time_s = time.perf_counter() - tl
            layers.append(rep)
            acts_rev.append(z)
            x_next = z
            continue
        z, status, message, obj, viol = lp.solve(norm, slack, time_limit)
        rep = LayerReport(i, status, message, obj, viol, lp.M.shape[0], lp.n_rows, W.shape[1])
        if z is None or status != 0:
            rep.time_s = time.perf_counter() - tl
            layers.append(rep)
            what = "infeasible" if status == 2 else "failed"
            return fail(f"layer {i}: LP {what} (status {status}): {message}")
        if polish:
            z = lp.polish_into(rep, z, norm, obj, scale)
        rep.time_s = time.perf_counter() - tl
        layers.append(rep)
        if tol is not None and rep.max_violation > tol * scale:
            bad_msgs.append(
                f"layer {i}: target not in the layer's range (slack {rep.max_violation:.3g} > tol {tol * scale:.3g})"
            )
        acts_rev.append(z)
        x_next = z

    z = x_next
    with torch.no_grad():
        out = net.vector(torch.as_tensor(z, dtype=net.dtype)[None])
        resid = float(np.abs(op.apply(out).double().numpy().reshape(-1) - y).max(initial=0.0))
    success = not bad_msgs
    message = "ok: every layer inverted within tolerance" if success else "; ".join(bad_msgs)
    return LPInversionResult(
        z, success, message, layers, list(reversed(acts_rev)), resid, time.perf_counter() - t0
    )


def _last_layer_general(
    net, wbs, Amat, y, norm, tol, slack, init_z, pattern_iters, gd_kwargs, time_limit, seed, op
):
    """Last layer with a general ``A`` (m < n): pattern LPs ``A D (W z + b) ~ y``.

    Returns ``(report, x_{d-1} or None, message)``; message empty on success.
    """
    d = len(wbs)
    W, b = wbs[-1]
    act = net.layer_activation(d)
    slope = net.negative_slope
    tl = time.perf_counter()
    nonneg = d > 1 and net.layer_activation(d - 1) == "relu"
    scale = max(float(np.abs(y).max(initial=0.0)), 1.0)
    if act == "linear":
        lp = LayerLP.fit_only(Amat @ W, Amat @ b, y, nonneg)
        z, status, message, obj, viol = lp.solve(norm, slack, time_limit)
        rep = LayerReport(d, status, message, obj, viol, lp.M.shape[0], lp.M.shape[0], W.shape[1])
        rep.time_s = time.perf_counter() - tl
        if z is None or status != 0:
            return rep, None, f"layer {d}: LP failed (status {status}): {message}"
        bad = (
            ""
            if tol is None or viol <= tol * scale
            else f"layer {d}: measurements not matched (slack {viol:.3g})"
        )
        return rep, z, bad
    # warm start for the pattern
    if init_z is None:
        kw = dict(restarts=4, steps=1500, seed=seed)
        kw.update(gd_kwargs or {})
        gd = gd_invert(net, y, op.mat if op.kind == "dense" else op.physics, x_shape=op.x_shape, **kw)
        z0 = gd.z.double()
    else:
        z0 = torch.as_tensor(np.asarray(init_z), dtype=torch.float64).reshape(-1)
    with torch.no_grad():
        x_prev = net.activations(z0[None])[d - 1][0].numpy()
    u = W @ x_prev + b
    on = u > 0
    seen: set[bytes] = set()
    best = None
    its = 0
    for its in range(1, pattern_iters + 1):  # noqa: B007 (its: the count, read after the loop)
        key = on.tobytes()
        if key in seen:
            break
        seen.add(key)
        gain = np.where(on, 1.0, 0.0 if act == "relu" else slope)
        # sign rows of the pattern: -(Wz+b) <= 0 on, (Wz+b) <= 0 off
        sgn = np.where(on, -1.0, 1.0)
        lp = LayerLP.with_signs(
            Amat @ (gain[:, None] * W), Amat @ (gain * b), y, sgn[:, None] * W, sgn * b, nonneg
        )
        z, status, message, obj, viol = lp.solve(norm, True, time_limit)
        if z is None or status != 0:
            if best is None:
                n_fit = lp.M.shape[0]
                rep = LayerReport(d, status, message, math.inf, math.inf, n_fit, n_fit, W.shape[1])
                rep.time_s = time.perf_counter() - tl
                return rep, None, f"layer {d}: pattern LP failed (status {status}): {message}"
            break
        if best is None or viol < best[1] - 1e-15:
            best = (z, viol, obj, status, message, on.copy(), lp)
        if viol <= 1e-12 * scale:
            break
        new_on = (W @ z + b) > 0
        if np.array_equal(new_on, on):
            break
        on = new_on
    z, viol, obj, status, message, on, lp = best
    rep = LayerReport(d, status, message, obj, viol, lp.M.shape[0], lp.n_rows, W.shape[1])
    rep.pattern_iters = its
    z = lp.polish_into(rep, z, norm, obj, scale)
    rep.time_s = time.perf_counter() - tl
    bad = ""
    if tol is not None and rep.max_violation > tol * scale:
        bad = f"layer {d}: measurements not matched by any tried activation pattern (slack {rep.max_violation:.3g})"
    return rep, z, bad


def pattern_lp_refine(
    generator: RandomReLUGenerator | WeightsBiases,
    y: Any,
    A: Any = None,
    z0: Any = None,
    *,
    norm: Norm = "linf",
    x_shape: Sequence[int] | None = None,
    max_iters: int = 20,
    tol: float | None = 1e-6,
    time_limit: float | None = None,
    activation: str = "relu",
    negative_slope: float = 0.2,
    output_activation: str | None = None,
) -> LPInversionResult:
    """Refine a latent ``z0`` by linear programs over the whole network's activation pattern.

    With every layer's activation pattern ``D_i`` fixed (read off at ``z0``), the network is affine
    in ``z``: ``G(z) = P z + q`` and every pre-activation ``u_i(z) = U_i z + v_i``. The LP fits
    ``A (P z + q) ~ y`` (l-infinity or l1 slack) subject to the pattern's sign constraints
    (``u_i >= 0`` on active units, ``<= 0`` on the others, with the same slack), over the ``k``
    latent coordinates only; the pattern is then re-read at the solution and the LP repeated until
    the pattern is stable (at most ``max_iters``). A correct pattern gives slack 0 and, when
    ``A P`` has full column rank (``m >= k`` generically), the exact ``z*`` -- so a gradient-descent
    estimate close enough to have the right pattern becomes exact. Unlike the layer-wise
    :func:`lp_invert` this uses the whole network at once, so ``m`` of the order of ``k`` suffices.

    Returns an :class:`LPInversionResult` (one :class:`LayerReport` with ``layer=0`` per pattern
    tried); ``success`` when the final slack is within ``tol * max(1, max|y|)``.
    """
    t0 = time.perf_counter()
    if norm not in ("linf", "l1"):
        raise UserError(f"unknown norm {norm!r}: use linf or l1")
    if z0 is None:
        raise UserError("pattern_lp_refine needs a starting latent z0 (e.g. gd_invert(...).z)")
    net = as_generator(generator, activation, negative_slope, output_activation)
    op = _Operator(A, net.output_dim, x_shape, torch.float64)
    yv = _flat_target(y, op.m)
    Amat = op.matrix()
    wbs = net.weights_biases()
    k = net.latent_dim
    z = np.asarray(torch.as_tensor(np.asarray(z0)).double().reshape(-1).numpy(), dtype=np.float64)
    if z.size != k:
        raise UserError(f"z0 has {z.size} values, the generator's latent has {k}")
    scale = max(float(np.abs(yv).max(initial=0.0)), 1.0)
    reports: list[LayerReport] = []
    seen: set[bytes] = set()
    best: tuple[np.ndarray, float] | None = None

    def affine(zv: np.ndarray):
        """Pattern at ``zv`` and the affine maps it implies: (P, q, S, d, key)."""
        P, q = np.eye(k), np.zeros(k)
        Ss, ds, keys = [], [], []
        for i, (W, b) in enumerate(wbs, start=1):
            U, v = W @ P, W @ q + b
            act = net.layer_activation(i)
            u_at = U @ zv + v
            if act == "linear":
                P, q = U, v
                continue
            on = u_at > 0
            gain = np.where(on, 1.0, 0.0 if act == "relu" else net.negative_slope)
            sgn = np.where(on, -1.0, 1.0)
            Ss.append(sgn[:, None] * U)
            ds.append(sgn * v)
            keys.append(on.tobytes())
            P, q = gain[:, None] * U, gain * v
        S = np.vstack(Ss) if Ss else np.zeros((0, k))
        d = np.concatenate(ds) if ds else np.zeros(0)
        return P, q, S, d, b"|".join(keys)

    its = 0
    for its in range(1, max_iters + 1):
        P, q, S, d, key = affine(z)
        if key in seen:
            break
        seen.add(key)
        lp = LayerLP.with_signs(Amat @ P, Amat @ q, yv, S, d, False)
        tl = time.perf_counter()
        zn, status, message, obj, viol = lp.solve(norm, True, time_limit)
        rep = LayerReport(0, status, message, obj, viol, lp.M.shape[0], lp.n_rows, k, pattern_iters=its)
        if zn is not None and status == 0:
            zn = lp.polish_into(rep, zn, norm, obj, scale)
        rep.time_s = time.perf_counter() - tl
        reports.append(rep)
        if zn is None or status != 0:
            break
        if best is None or rep.max_violation < best[1]:
            best = (zn, rep.max_violation)
        z = zn
        if rep.max_violation <= 1e-12 * scale:
            break
    if best is None:
        last = reports[-1] if reports else None
        msg = f"pattern LP failed (status {last.status}): {last.message}" if last else "no LP ran"
        return LPInversionResult(None, False, msg, reports, [], math.inf, time.perf_counter() - t0)
    z, viol = best
    with torch.no_grad():
        out = net.vector(torch.as_tensor(z, dtype=net.dtype)[None])
        resid = float(np.abs(op.apply(out).double().numpy().reshape(-1) - yv).max(initial=0.0))
    ok = tol is None or (viol <= tol * scale and resid <= tol * scale)
    msg = (
        f"ok: pattern LP fits within tolerance after {len(reports)} pattern(s)"
        if ok
        else f"no tried activation pattern fits the measurements (slack {viol:.3g}, residual {resid:.3g})"
    )
    return LPInversionResult(z, ok, msg, reports, [z], resid, time.perf_counter() - t0)


# ==================================================================================================
# gradient descent with the sign flip
# ==================================================================================================
@dataclass
class GDInversionResult:
    """Result of :func:`gd_invert`.

    Attributes:
        z: best latent ``(k,)`` over the restarts (float64 tensor).
        loss: its loss ``||A G(z) - y||^2 / 2``.
        rel_residual: ``||A G(z) - y|| / ||y||``.
        success: ``rel_residual <= residual_tol``.
        z_all: final latents of all restarts ``(R, k)``; ``losses``: their losses ``(R,)``.
        flips: number of sign flips taken, summed over restarts.
        steps: iterations run (early stop when every restart fits).
        time_s: wall time.
    """

    z: Tensor
    loss: float
    rel_residual: float
    success: bool
    z_all: Tensor
    losses: Tensor
    flips: int
    steps: int
    time_s: float


def _net_and_op(generator, y, A, x_shape, activation="relu", negative_slope=0.2, output_activation=None):
    net = as_generator(generator, activation, negative_slope, output_activation)
    op = _Operator(A, net.output_dim, x_shape, net.dtype)
    yt = torch.as_tensor(_flat_target(y, op.m), dtype=net.dtype)
    return net, op, yt


def gd_invert(
    generator: RandomReLUGenerator | WeightsBiases,
    y: Any,
    A: Any = None,
    *,
    x_shape: Sequence[int] | None = None,
    steps: int = 1000,
    optimizer: Literal["gd", "adam"] = "gd",
    lr: float | None = None,
    lr_final: float = 1e-4,
    step_scale: float = 0.9,
    curvature_every: int = 100,
    sign_flip: bool = True,
    flip_every: int = 10,
    rho: float = 1.0,
    restarts: int = 4,
    seed: int = 0,
    z_init: Any = None,
    residual_tol: float = 1e-3,
    stop_tol: float = 1e-13,
    activation: str = "relu",
    negative_slope: float = 0.2,
    output_activation: str | None = None,
) -> GDInversionResult:
    """Minimise ``f(z) = ||A G(z) - y||^2 / 2`` over ``z`` by gradient descent, all restarts at once.

    Hand & Voroninski's sign flip (``sign_flip``): every ``flip_every`` steps, a restart whose loss
    at ``-rho z`` is lower than at ``z`` jumps there (and its optimiser state is reset).

    Args:
        generator: a :class:`RandomReLUGenerator` or a list of ``(W, b)``.
        y: the observation ``A G(z*) (+ noise)``.
        A: measurements (None, matrix or deepinv LinearPhysics).
        steps: iterations.
        optimizer: ``"gd"``: plain gradient descent. With ``lr=None`` each restart's step is
            ``step_scale / lambda_max(J^T A^T A J)`` at its current point (power iteration,
            re-measured every ``curvature_every`` steps and after a flip; halved for a restart
            whose loss went up), so it converges linearly on the piecewise-linear landscape.
            A given ``lr`` is a constant step. ``"adam"``: per-restart Adam with the step decaying
            geometrically from ``lr`` (default 0.05) to ``lr_final``.
        restarts: independent random initialisations ``N(0, I)`` run as one batch.
        z_init: initial latent(s) ``(k,)`` or ``(R, k)`` instead of random ones.
        residual_tol: ``success`` when ``||A G(z) - y|| / ||y|| <= residual_tol``.
        stop_tol: stop early once the best restart has relative residual below this.
    """
    t0 = time.perf_counter()
    if steps < 1 or restarts < 1 or flip_every < 1 or curvature_every < 1:
        raise UserError("steps, restarts, flip_every and curvature_every must be positive")
    if optimizer not in ("adam", "gd"):
        raise UserError(f"unknown optimizer {optimizer!r}: use gd or adam")
    if lr is not None and not lr > 0:
        raise UserError(f"lr {lr} must be positive")
    net, op, yt = _net_and_op(generator, y, A, x_shape, activation, negative_slope, output_activation)
    k = net.latent_dim
    g = torch.Generator().manual_seed(int(seed))
    if z_init is not None:
        z = torch.as_tensor(np.asarray(z_init), dtype=net.dtype).reshape(-1, k).clone()
        restarts = z.shape[0]
    else:
        z = torch.randn((restarts, k), generator=g, dtype=net.dtype)
    ynorm = float(yt.norm()) or 1.0

    def fwd(zz: Tensor) -> Tensor:
        return op.apply(net.vector(zz))

    def losses(zz: Tensor) -> Tensor:
        return 0.5 * ((fwd(zz) - yt) ** 2).sum(1)

    auto = optimizer == "gd" and lr is None
    base_lr = 0.05 if lr is None else float(lr)
    m1 = torch.zeros_like(z)
    m2 = torch.zeros_like(z)
    tcount = torch.zeros(restarts, 1, dtype=net.dtype)
    b1, b2, eps = 0.9, 0.999, 1e-12
    decay = (lr_final / base_lr) ** (1.0 / max(steps - 1, 1)) if optimizer == "adam" and lr_final > 0 else 1.0
    row_step = torch.full((restarts,), base_lr, dtype=net.dtype)
    shrink = torch.ones(restarts, dtype=net.dtype)
    stale = torch.ones(restarts, dtype=torch.bool)  # curvature to (re)measure
    prev_f = torch.full((restarts,), math.inf, dtype=net.dtype)
    flips = 0
    it = 0
    for it in range(1, steps + 1):
        if sign_flip and (it - 1) % flip_every == 0:
            with torch.no_grad():
                jump = losses(-rho * z) < losses(z)
                if jump.any():
                    z = torch.where(jump[:, None], -rho * z, z)
                    m1[jump] = 0
                    m2[jump] = 0
                    tcount[jump] = 0
                    stale |= jump
                    prev_f[jump] = math.inf
                    flips += int(jump.sum())
        if auto and ((it - 1) % curvature_every == 0 or stale.any()):
            lam = _local_curvature(fwd, z.detach(), iters=12, seed=seed + it)
            row_step = step_scale / lam.clamp_min(1e-12)
            shrink = torch.ones_like(shrink)
            stale[:] = False
        zz = z.detach().requires_grad_(True)
        f = losses(zz)
        (grad,) = torch.autograd.grad(f.sum(), zz)
        with torch.no_grad():
            f = f.detach()
            if float((2 * f.min()).sqrt()) / ynorm <= stop_tol:
                break  # the best restart fits to round-off
            if optimizer == "adam":
                step = base_lr * decay ** (it - 1)
                tcount += 1
                m1.mul_(b1).add_(grad, alpha=1 - b1)
                m2.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                mhat = m1 / (1 - b1**tcount)
                vhat = m2 / (1 - b2**tcount)
                z = z - step * mhat / (vhat.sqrt() + eps)
            else:
                if auto:
                    shrink = torch.where(f > prev_f * (1 + 1e-9), shrink * 0.5, shrink)
                z = z - (row_step * shrink)[:, None] * grad
            prev_f = f
    with torch.no_grad():
        f = losses(z)
    best = int(torch.argmin(f))
    loss = float(f[best])
    rel = math.sqrt(2 * loss) / ynorm
    return GDInversionResult(
        z[best].detach().clone(),
        loss,
        rel,
        rel <= residual_tol,
        z.detach(),
        f.detach(),
        flips,
        it,
        time.perf_counter() - t0,
    )


# ==================================================================================================
# Langevin
# ==================================================================================================
@dataclass
class LangevinResult:
    """Result of :func:`langevin_sample`.

    Attributes:
        samples: ``(chains * n_samples, k)`` latent samples after burn-in and thinning.
        mean, std: their per-coordinate mean and standard deviation ``(k,)``.
        x_mean: the mean of ``G(samples)`` ``(n,)``.
        step_size: the final step size.
        chain_means: per-chain means ``(chains, k)`` (a mixing diagnostic).
        time_s: wall time.
        accept_rate: fraction of proposals taken (1 minus the guarded ones for plain Langevin;
            the Metropolis acceptance rate with ``metropolis=True``).
        guarded: proposals refused by the divergence guard.
    """

    samples: Tensor
    mean: Tensor
    std: Tensor
    x_mean: Tensor
    step_size: float
    chain_means: Tensor
    time_s: float
    accept_rate: float = 1.0
    guarded: int = 0


def _lipschitz_bound(net: RandomReLUGenerator, op: _Operator) -> float:
    """``||A|| * prod ||W_i||`` (times the largest activation slope, which is 1)."""
    L = op.norm()
    for w in net.weights:
        L *= float(torch.linalg.matrix_norm(w.double(), ord=2))
    return L


def _local_curvature(f: Callable[[Tensor], Tensor], z: Tensor, iters: int = 30, seed: int = 0) -> Tensor:
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


def _jacobian(f: Callable[[Tensor], Tensor], z: Tensor) -> Tensor:
    """Row-wise Jacobians ``(C, m, k)`` of ``f`` at ``z`` ``(C, k)`` by ``k`` batched JVPs."""
    cols = []
    for j in range(z.shape[1]):
        v = torch.zeros_like(z)
        v[:, j] = 1.0
        _, jv = torch.func.jvp(f, (z,), (v,))
        cols.append(jv)
    return torch.stack(cols, -1)


def langevin_sample(
    generator: RandomReLUGenerator | WeightsBiases,
    y: Any,
    A: Any = None,
    *,
    sigma: float,
    x_shape: Sequence[int] | None = None,
    n_samples: int = 200,
    burn_in: int = 1000,
    thin: int = 5,
    chains: int = 4,
    precondition: bool = True,
    precondition_every: int = 50,
    step_size: float | None = None,
    step_scale: float = 0.1,
    step_curvature: Literal["local", "bound"] = "local",
    metropolis: bool = False,
    guard: float | None = None,
    anneal: bool = True,
    anneal_from: float = 1.0,
    sign_flip: bool = True,
    init: Literal["prior"] | Any = "prior",
    seed: int = 0,
    activation: str = "relu",
    negative_slope: float = 0.2,
    output_activation: str | None = None,
) -> LangevinResult:
    """Unadjusted Langevin sampling of ``p(z | y) ~ exp(-U(z))``,
    ``U(z) = ||A G(z) - y||^2 / (2 sigma^2) + ||z||^2 / 2``, all chains in one batch.

    Update: ``z <- z - eta M grad U(z) + sqrt(2 eta) M^(1/2) xi`` with ``xi ~ N(0, I)``.

    * ``precondition=True`` (default): ``M`` is the inverse Gauss-Newton Hessian
      ``(J^T A^T A J / sigma^2 + I)^(-1)`` of each chain (``J`` the Jacobian of ``G``, exact here
      because a ReLU network is piecewise linear), refreshed every ``precondition_every`` steps of
      burn-in and then **frozen** for the sampling phase, so the kept chain is a fixed-preconditioner
      Langevin chain with the right target. In those units the posterior is well conditioned and
      ``eta = step_scale`` (a Gaussian posterior is then sampled with variance inflated by
      ``1 / (1 - eta / 2)``, 2.6 % at the default 0.1). Costs ``k`` Jacobian-vector products per
      refresh.
    * ``precondition=False``: ``M = I`` and ``eta = step_scale / (L^2 / sigma^2 + 1)`` where ``L^2``
      is the largest eigenvalue of ``J^T A^T A J`` over the chains (power iteration, at the start
      and when burn-in ends; ``step_curvature="local"``) or the global bound
      ``(||A|| prod ||W_i||)^2`` (``"bound"``). Mixing then slows with the posterior's condition
      number.

    ``step_size`` overrides ``eta``. During burn-in only, the noise level is annealed geometrically
    from ``max(anneal_from, sigma)`` down to ``sigma`` over the first half, and the sign-flip check
    of :func:`gd_invert` moves a chain from ``z`` to ``-z`` when that lowers ``U``; both only help
    the chains reach the posterior's main mode.

    Divergence guard: a step that raises ``U`` by more than ``guard`` (default ``10 k + 100``; a
    step at equilibrium changes ``U`` by O(k)) is refused, and during burn-in the preconditioner is
    refreshed where the chain stands. It fires when a chain crosses into a region of the piecewise
    linear ``G`` much steeper than its preconditioner assumed; ``LangevinResult.guarded`` counts the
    refusals. ``metropolis=True`` adds the Metropolis-Hastings correction (MALA with the same fixed
    preconditioner), which removes the discretisation bias.

    Args:
        sigma: noise level of the likelihood (> 0).
        n_samples: kept samples per chain; ``thin``: steps between kept samples.
        init: ``"prior"`` (``z ~ N(0, I)``) or initial latents ``(k,)`` / ``(chains, k)``.
    """
    t0 = time.perf_counter()
    if not sigma > 0:
        raise UserError(f"sigma {sigma} must be positive")
    if n_samples < 1 or burn_in < 0 or thin < 1 or chains < 1 or precondition_every < 1:
        raise UserError(
            "n_samples, thin, chains and precondition_every must be positive and burn_in non-negative"
        )
    if step_size is not None and not step_size > 0:
        raise UserError(f"step_size {step_size} must be positive")
    if step_curvature not in ("local", "bound"):
        raise UserError(f"unknown step_curvature {step_curvature!r}: use local or bound")
    net, op, yt = _net_and_op(generator, y, A, x_shape, activation, negative_slope, output_activation)
    k = net.latent_dim
    guard = 10.0 * k + 100.0 if guard is None else float(guard)
    g = torch.Generator().manual_seed(int(seed))
    if isinstance(init, str):
        if init != "prior":
            raise UserError(f"unknown init {init!r}: use 'prior' or give latents")
        z = torch.randn((chains, k), generator=g, dtype=net.dtype)
    else:
        z = torch.as_tensor(np.asarray(init), dtype=net.dtype).reshape(-1, k)
        z = z.expand(chains, k).clone() if z.shape[0] == 1 else z.clone()
        chains = z.shape[0]

    def fwd(zz: Tensor) -> Tensor:
        return op.apply(net.vector(zz))

    def data_term(zz: Tensor) -> tuple[Tensor, Tensor]:
        """``D = ||A G(z) - y||^2 / 2`` per chain and its gradient."""
        zz = zz.detach().requires_grad_(True)
        D = 0.5 * ((fwd(zz) - yt) ** 2).sum(1)
        (gD,) = torch.autograd.grad(D.sum(), zz)
        return D.detach(), gD

    def energy(D: Tensor, zz: Tensor, s: float) -> Tensor:
        return D / s**2 + 0.5 * (zz**2).sum(1)

    eye = torch.eye(k, dtype=net.dtype)
    M = eye.expand(chains, k, k).clone()  # preconditioner, its Cholesky factor and its inverse
    C = M.clone()
    H = M.clone()

    def refresh(zz: Tensor, s: float) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            J = _jacobian(fwd, zz.detach())
            Hn = J.transpose(1, 2) @ J / s**2 + eye
            Hn = 0.5 * (Hn + Hn.transpose(1, 2))
            Mn = torch.linalg.inv(Hn)
            Mn = 0.5 * (Mn + Mn.transpose(1, 2))
            return Mn, torch.linalg.cholesky(Mn), Hn

    L2 = None
    if not precondition and step_size is None:
        L2 = (
            _lipschitz_bound(net, op) ** 2
            if step_curvature == "bound"
            else 1.5 * float(_local_curvature(fwd, z.detach(), seed=seed).max())
        )

    def eta_for(s: float) -> float:
        if step_size is not None:
            return float(step_size)
        return step_scale if precondition else step_scale / (L2 / s**2 + 1.0)

    def mv(P: Tensor, v: Tensor) -> Tensor:
        return (P @ v[:, :, None])[:, :, 0]

    s_start = max(float(anneal_from), float(sigma)) if anneal else float(sigma)
    anneal_steps = burn_in // 2 if anneal else 0
    total = burn_in + n_samples * thin
    kept = []
    eta = eta_for(sigma)
    D, gD = data_term(z)
    guarded = 0
    accepted = 0
    proposed = 0
    for it in range(total):
        s = (
            s_start * (sigma / s_start) ** (it / max(anneal_steps - 1, 1))
            if it < anneal_steps
            else float(sigma)
        )
        if sign_flip and it < burn_in and it % 10 == 0:
            Dn, gDn = data_term(-z)
            jump = energy(Dn, z, s) < energy(D, z, s)
            if jump.any():
                z = torch.where(jump[:, None], -z, z)
                D = torch.where(jump, Dn, D)
                gD = torch.where(jump[:, None], gDn, gD)
        if precondition and (it == burn_in or (it < burn_in and it % precondition_every == 0)):
            M, C, H = refresh(z, s)  # frozen from it == burn_in on
        if not precondition and it == burn_in and step_size is None and step_curvature == "local":
            L2 = 1.5 * float(_local_curvature(fwd, z.detach(), seed=seed).max())
        eta = eta_for(s)
        with torch.no_grad():
            grad = gD / s**2 + z
            drift = mv(M, grad) if precondition else grad
            noise = torch.randn(z.shape, generator=g, dtype=z.dtype)
            kick = mv(C, noise) if precondition else noise
            z_new = z - eta * drift + math.sqrt(2 * eta) * kick
        D_new, gD_new = data_term(z_new)
        with torch.no_grad():
            U_old, U_new = energy(D, z, s), energy(D_new, z_new, s)
            ok = torch.isfinite(U_new) & (U_new - U_old <= guard)
            n_bad = int((~ok).sum())
            if metropolis:
                grad_new = gD_new / s**2 + z_new
                drift_new = mv(M, grad_new) if precondition else grad_new
                fwd_res = z_new - z + eta * drift
                bwd_res = z - z_new + eta * drift_new
                Hq = H if precondition else eye.expand(chains, k, k)
                log_q_fwd = -(fwd_res * mv(Hq, fwd_res)).sum(1) / (4 * eta)
                log_q_bwd = -(bwd_res * mv(Hq, bwd_res)).sum(1) / (4 * eta)
                log_a = (U_old - U_new + log_q_bwd - log_q_fwd).clamp(max=0.0)
                u = torch.rand(chains, generator=g, dtype=z.dtype)
                ok = ok & (torch.log(u) < torch.nan_to_num(log_a, nan=-math.inf))
            proposed += chains
            accepted += int(ok.sum())
            guarded += n_bad
            z = torch.where(ok[:, None], z_new, z)
            D = torch.where(ok, D_new, D)
            gD = torch.where(ok[:, None], gD_new, gD)
        if n_bad and precondition and it < burn_in:
            M, C, H = refresh(z, s)
        if it >= burn_in and (it - burn_in + 1) % thin == 0:
            kept.append(z.clone())
    samples_c = torch.stack(kept, 1)  # (chains, n_samples, k)
    samples = samples_c.reshape(-1, k)
    with torch.no_grad():
        x_mean = net.vector(samples).mean(0)
    return LangevinResult(
        samples,
        samples.mean(0),
        samples.std(0),
        x_mean,
        eta,
        samples_c.mean(1),
        time.perf_counter() - t0,
        accepted / max(proposed, 1),
        guarded,
    )
