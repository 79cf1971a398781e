"""Phase-transition experiments on random expansive ReLU networks (``genprior theory ...``).

Every experiment draws, per cell of its grid and per trial, a random network
(:class:`~genprior.generators.random_relu.RandomReLUGenerator`, weights ``N(0, 1/n_i)``, no bias)
and a latent ``z* ~ N(0, I_k)``, observes ``G(z*)`` (possibly through measurements, possibly with
noise) and runs the inversion methods of :mod:`genprior.theory` (:mod:`~genprior.theory.lp`, :mod:`~genprior.theory.gd`,
:mod:`~genprior.theory.langevin`) on the *same*
instance. Recorded per method and trial: the relative latent error ``||z - z*|| / ||z*||``,
whether recovery is exact, the method's own success flag and the wall time.

Exact recovery means a relative latent error below :data:`LP_EXACT` (1e-6) for the linear
programs and below :data:`GD_EXACT` (1e-3) for gradient descent, whose fixed iteration budget
(a geometric step decay) does not always reach machine precision even in the right basin.

Experiments (see :data:`EXPERIMENTS` and the ``*_experiment`` builders):

* ``expansion``: recovery rate vs the expansion factor, constant factors ``n_i = ceil(f n_{i-1})``
  against the logarithmic schedule ``n_i = ceil(c n_{i-1} log n_{i-1})``.
* ``depth``: recovery rate vs depth at constant factors.
* ``measurements``: recovery rate vs ``m / k``: the layer-wise LP seeing ``m`` random output
  coordinates (``lp-inpaint``); with a Gaussian ``A`` (``m x n``, entries ``N(0, 1/m)``):
  gradient descent (``gd``), gradient descent then the layer-wise LP with ``A`` in its last layer
  (``gd+lp``), and gradient descent then the whole-network activation-pattern LP (``gd+plp``,
  :func:`~genprior.theory.lp.pattern_lp_refine`).
* ``noise``: latent error vs the noise level ``nu``: ``y = G(z*) + nu * rms(G(z*)) * xi``;
  l-infinity LP, l1 LP (each naive, and with the known noise level: outputs below ``3 nu rms``
  read as inactive, ``-3s``), gradient descent.
* ``langevin``: Langevin posterior sampling (unadjusted, and with the Metropolis correction) at
  noise ``sigma`` (absolute, ``y = G(z*) + sigma xi``): error of the posterior mean, the
  posterior spread ``||std|| / ||z*||`` (comparable with the relative error), and the coverage of
  ``z*`` by the mean +- 2 std intervals; least-squares gradient descent as the comparison.

This module is the whole computation of a trial: :mod:`genprior.theory.run` runs, resumes and
summarises the experiments, :mod:`genprior.theory.report` draws their tables and figures.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..generators.random_relu import RandomReLUGenerator, expansive_widths
from .common import relative_error
from .gd import gd_invert
from .langevin import langevin_sample
from .lp import lp_invert, pattern_lp_refine

#: exact-recovery threshold (relative latent error) for the linear programs
LP_EXACT = 1e-6
#: exact-recovery threshold for gradient descent (fixed iteration budget, see the module docstring)
GD_EXACT = 1e-3

EXPERIMENTS = ("expansion", "depth", "measurements", "noise", "langevin")


@dataclass
class Experiment:
    """A grid of cells, the methods run on each instance, and how to run / plot it."""

    name: str
    cells: list[dict[str, Any]]
    methods: tuple[str, ...]
    config: dict[str, Any]
    run_trial: Callable[[dict[str, Any], int], list[dict[str, Any]]]
    cell_keys: tuple[str, ...]
    extra_metrics: tuple[str, ...] = ()


# ==================================================================================================
# instances
# ==================================================================================================
def instance_seed(seed: int, name: str, cell: str, trial: int) -> int:
    """Seed of one instance: the same for every method of a cell and trial."""
    return zlib.crc32(f"{seed}|{name}|{cell}|{trial}".encode()) & 0x7FFFFFFF


def make_instance(widths: Sequence[int], seed: int) -> tuple[RandomReLUGenerator, torch.Tensor, torch.Tensor]:
    """A random network, a latent ``z* ~ N(0, I)`` and ``x = G(z*)`` (all float64)."""
    G = RandomReLUGenerator(widths, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    z = torch.randn(widths[0], generator=g, dtype=torch.float64)
    with torch.no_grad():
        x = G.vector(z)
    return G, z, x


def _row(method: str, err: float, threshold: float, t: float, ok: bool, **extra: Any) -> dict[str, Any]:
    return {
        "method": method,
        "rel_err": float(err),
        "exact": int(err < threshold),
        "solver_success": int(bool(ok)),
        "time_s": float(t),
        **extra,
    }


def _run_lp(G, z, y, A=None, name="lp", **kw) -> dict[str, Any]:
    r = lp_invert(G, y, A, **kw)
    err = relative_error(r.z, z)
    det = int(bool(r.layers) and all(L.determined for L in r.layers))
    return _row(name, err, LP_EXACT, r.time_s, r.success, determined=det)


def _run_gd(G, z, y, A=None, name="gd", steps=1000, seed=0, sign_flip=True):
    g = gd_invert(G, y, A, steps=steps, restarts=4, seed=seed, sign_flip=sign_flip)
    err = relative_error(g.z, z)
    return _row(name, err, GD_EXACT, g.time_s, g.success, flips=g.flips), g


def _gd_methods(methods, G, z, y, A, gd_steps, seed) -> tuple[list[dict[str, Any]], Any]:
    rows, g_res = [], None
    for m in methods:
        if m == "gd":
            row, g_res = _run_gd(G, z, y, A, "gd", gd_steps, seed)
            rows.append(row)
        elif m == "gd-noflip":
            row, _ = _run_gd(G, z, y, A, "gd-noflip", gd_steps, seed, sign_flip=False)
            rows.append(row)
    return rows, g_res


# ==================================================================================================
# the experiments
# ==================================================================================================
def _check_methods(methods: Sequence[str], allowed: Sequence[str], name: str) -> tuple[str, ...]:
    methods = tuple(methods)
    bad = [m for m in methods if m not in allowed]
    if bad or not methods:
        raise UserError(
            f"unknown method(s) {', '.join(bad) or '(none)'} for {name}: use {', '.join(allowed)}"
        )
    return methods


def expansion_experiment(
    k: int = 10,
    depth: int = 2,
    factors: Sequence[float] = (1.5, 2, 3, 4, 6, 8),
    log_c: Sequence[float] = (0.5, 1.0, 1.5, 2.0),
    methods: Sequence[str] = ("lp", "gd"),
    gd_steps: int = 1000,
) -> Experiment:
    """Recovery rate vs expansion: constant factors and the ``c n log n`` schedule."""
    methods = _check_methods(methods, ("lp", "gd", "gd-noflip"), "expansion")
    cells = []
    for f in factors:
        w = expansive_widths(k, depth, factor=float(f))
        cells.append({"cell": f"const-{f:g}", "schedule": "constant", "param": float(f), "widths": w})
    for c in log_c:
        w = expansive_widths(k, depth, log_c=float(c))
        cells.append({"cell": f"log-{c:g}", "schedule": "log", "param": float(c), "widths": w})
    for c in cells:
        c["eff_factor"] = float((c["widths"][-1] / k) ** (1.0 / depth))

    def trial(cell, s):
        G, z, x = make_instance(cell["widths"], s)
        rows = [_run_lp(G, z, x)] if "lp" in methods else []
        rows += _gd_methods(methods, G, z, x, None, gd_steps, s)[0]
        return rows

    cfg = dict(
        k=k,
        depth=depth,
        factors=[float(f) for f in factors],
        log_c=[float(c) for c in log_c],
        methods=list(methods),
        gd_steps=gd_steps,
    )
    return Experiment(
        "expansion",
        cells,
        methods,
        cfg,
        trial,
        ("schedule", "param", "eff_factor", "widths"),
        ("determined", "flips"),
    )


def depth_experiment(
    k: int = 8,
    depths: Sequence[int] = (1, 2, 3, 4, 5),
    factors: Sequence[float] = (2, 3),
    methods: Sequence[str] = ("lp", "gd"),
    gd_steps: int = 1000,
) -> Experiment:
    """Recovery rate vs depth at constant expansion factors."""
    methods = _check_methods(methods, ("lp", "gd", "gd-noflip"), "depth")
    cells = []
    for f in factors:
        for d in depths:
            cells.append(
                {
                    "cell": f"f{f:g}-d{d}",
                    "factor": float(f),
                    "depth": int(d),
                    "widths": expansive_widths(k, int(d), factor=float(f)),
                }
            )

    def trial(cell, s):
        G, z, x = make_instance(cell["widths"], s)
        rows = [_run_lp(G, z, x)] if "lp" in methods else []
        rows += _gd_methods(methods, G, z, x, None, gd_steps, s)[0]
        return rows

    cfg = dict(
        k=k,
        depths=[int(d) for d in depths],
        factors=[float(f) for f in factors],
        methods=list(methods),
        gd_steps=gd_steps,
    )
    return Experiment(
        "depth",
        cells,
        methods,
        cfg,
        trial,
        ("factor", "depth", "widths"),
        ("determined", "flips"),
    )


def measurements_experiment(
    k: int = 10,
    depth: int = 2,
    factor: float = 4,
    ratios: Sequence[float] = (1, 1.5, 2, 3, 4, 6, 8, 12, 16),
    methods: Sequence[str] = ("lp-inpaint", "gd", "gd+lp", "gd+plp"),
    gd_steps: int = 1000,
) -> Experiment:
    """Recovery rate vs the number of measurements ``m = ratio * k``."""
    methods = _check_methods(methods, ("lp-inpaint", "gd", "gd+lp", "gd+plp", "gd-noflip"), "measurements")
    widths = expansive_widths(k, depth, factor=float(factor))
    n = widths[-1]
    cells = []
    for r in ratios:
        m = int(round(float(r) * k))
        if not 1 <= m <= n:
            raise UserError(f"m/k = {r:g} gives m = {m} measurements, outside 1..{n} (the output size)")
        cells.append({"cell": f"r{r:g}", "ratio": float(r), "m": m, "widths": widths})

    def trial(cell, s):
        G, z, x = make_instance(cell["widths"], s)
        m = cell["m"]
        rng = np.random.default_rng(s + 2)
        rows = []
        if "lp-inpaint" in methods:
            idx = rng.choice(n, m, replace=False)
            S = np.zeros((m, n))
            S[np.arange(m), idx] = 1.0
            rows.append(_run_lp(G, z, x.numpy()[idx], S, name="lp-inpaint"))
        A = rng.standard_normal((m, n)) / math.sqrt(m)
        y = A @ x.numpy()
        g = None
        if {"gd", "gd+lp", "gd+plp"} & set(methods):
            row, g = _run_gd(G, z, y, A, "gd", gd_steps, s)
            if "gd" in methods:
                rows.append(row)
        if "gd-noflip" in methods:
            rows.append(_run_gd(G, z, y, A, "gd-noflip", gd_steps, s, sign_flip=False)[0])
        if "gd+lp" in methods:
            r = lp_invert(G, y, A, init_z=g.z)
            err = relative_error(r.z, z)
            det = int(all(L.determined for L in r.layers))
            rows.append(_row("gd+lp", err, LP_EXACT, g.time_s + r.time_s, r.success, determined=det))
        if "gd+plp" in methods:
            r = pattern_lp_refine(G, y, A, g.z)
            err = relative_error(r.z, z)
            det = int(bool(r.layers) and r.layers[-1].determined)
            rows.append(_row("gd+plp", err, LP_EXACT, g.time_s + r.time_s, r.success, determined=det))
        return rows

    cfg = dict(
        k=k,
        depth=depth,
        factor=float(factor),
        ratios=[float(r) for r in ratios],
        methods=list(methods),
        gd_steps=gd_steps,
    )
    return Experiment(
        "measurements",
        cells,
        methods,
        cfg,
        trial,
        ("ratio", "m", "widths"),
        ("determined", "flips"),
    )


def noise_experiment(
    k: int = 10,
    depth: int = 2,
    factor: float = 4,
    levels: Sequence[float] = (0, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1),
    methods: Sequence[str] = ("lp-linf", "lp-l1", "lp-linf-3s", "lp-l1-3s", "gd"),
    gd_steps: int = 1000,
) -> Experiment:
    """Latent error vs relative noise level ``nu`` (``y = x + nu * rms(x) * xi``).

    ``lp-*-3s`` use the known noise level: outputs below ``3 nu rms(x)`` count as inactive.
    """
    methods = _check_methods(
        methods, ("lp-linf", "lp-l1", "lp-linf-3s", "lp-l1-3s", "gd", "gd-noflip"), "noise"
    )
    widths = expansive_widths(k, depth, factor=float(factor))
    cells = [{"cell": f"nu{v:g}", "level": float(v), "widths": widths} for v in levels]

    def trial(cell, s):
        G, z, x = make_instance(cell["widths"], s)
        g = torch.Generator().manual_seed(s + 3)
        rms = float(x.norm()) / math.sqrt(x.numel())
        noise_std = cell["level"] * rms
        y = x + noise_std * torch.randn(x.shape, generator=g, dtype=x.dtype)
        rows = []
        for mth, nm, thr in (
            ("lp-linf", "linf", None),
            ("lp-l1", "l1", None),
            ("lp-linf-3s", "linf", 3 * noise_std),
            ("lp-l1-3s", "l1", 3 * noise_std),
        ):
            if mth in methods:
                rows.append(
                    _run_lp(G, z, y, name=mth, norm=nm, tol=None, active_threshold=thr if thr else None)
                )
        rows += _gd_methods(methods, G, z, y, None, gd_steps, s)[0]
        return rows

    cfg = dict(
        k=k,
        depth=depth,
        factor=float(factor),
        levels=[float(v) for v in levels],
        methods=list(methods),
        gd_steps=gd_steps,
    )
    return Experiment("noise", cells, methods, cfg, trial, ("level", "widths"), ("determined", "flips"))


def langevin_experiment(
    k: int = 10,
    depth: int = 2,
    factor: float = 4,
    sigmas: Sequence[float] = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01),
    methods: Sequence[str] = ("langevin", "mala", "gd"),
    burn_in: int = 1000,
    n_samples: int = 100,
    gd_steps: int = 1000,
) -> Experiment:
    """Langevin posterior mean / spread / coverage vs the noise level ``sigma``.

    ``langevin`` is the (preconditioned) unadjusted chain, ``mala`` the same with the
    Metropolis correction, ``gd`` least squares (no prior) for comparison.
    """
    methods = _check_methods(methods, ("langevin", "mala", "gd"), "langevin")
    widths = expansive_widths(k, depth, factor=float(factor))
    cells = [{"cell": f"s{s:g}", "sigma": float(s), "widths": widths} for s in sigmas]

    def trial(cell, s):
        G, z, x = make_instance(cell["widths"], s)
        sig = cell["sigma"]
        g = torch.Generator().manual_seed(s + 4)
        y = x + sig * torch.randn(x.shape, generator=g, dtype=x.dtype)
        rows = []
        for mth in ("langevin", "mala"):
            if mth not in methods:
                continue
            L = langevin_sample(
                G,
                y,
                sigma=sig,
                seed=s,
                burn_in=burn_in,
                n_samples=n_samples,
                thin=5,
                chains=4,
                metropolis=mth == "mala",
            )
            err = relative_error(L.mean, z)
            cover = float(((L.mean - z).abs() <= 2 * L.std).double().mean())
            spread = float(L.std.norm() / z.norm())
            rows.append(
                _row(
                    mth,
                    err,
                    GD_EXACT,
                    L.time_s,
                    True,
                    post_spread=spread,
                    coverage=cover,
                    accept_rate=L.accept_rate,
                )
            )
        if "gd" in methods:
            row, _ = _run_gd(G, z, y, None, "gd", gd_steps, s)
            rows.append(row)
        return rows

    cfg = dict(
        k=k,
        depth=depth,
        factor=float(factor),
        sigmas=[float(s) for s in sigmas],
        methods=list(methods),
        burn_in=burn_in,
        n_samples=n_samples,
        gd_steps=gd_steps,
    )
    return Experiment(
        "langevin",
        cells,
        methods,
        cfg,
        trial,
        ("sigma", "widths"),
        ("post_spread", "coverage", "accept_rate", "flips"),
    )


BUILDERS: dict[str, Callable[..., Experiment]] = {
    "expansion": expansion_experiment,
    "depth": depth_experiment,
    "measurements": measurements_experiment,
    "noise": noise_experiment,
    "langevin": langevin_experiment,
}
