"""Layer-wise LP inversion of ReLU generators and the activation-pattern LP refinement.

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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from scipy.optimize import linprog

from ..errors import UserError
from ..generators.random_relu import RandomReLUGenerator
from .common import (
    Operator,
    WeightsBiases,
    as_generator,
    flat_target,
    row_selection,
)
from .gd import gd_invert

Norm = Literal["linf", "l1"]


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
    op = Operator(A, n, x_shape, torch.float64)
    y = flat_target(x_target, op.m, "x_target")
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
        sel = row_selection(Mat)
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
    op = Operator(A, net.output_dim, x_shape, torch.float64)
    yv = flat_target(y, op.m)
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
