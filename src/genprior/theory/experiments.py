"""Phase-transition experiments on random expansive ReLU networks (``genprior theory ...``).

Every experiment draws, per cell of its grid and per trial, a random network
(:class:`~genprior.generators.random_relu.RandomReLUGenerator`, weights ``N(0, 1/n_i)``, no bias)
and a latent ``z* ~ N(0, I_k)``, observes ``G(z*)`` (possibly through measurements, possibly with
noise) and runs the inversion methods of :mod:`genprior.theory.inversion` on the *same*
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
  :func:`~genprior.theory.inversion.pattern_lp_refine`).
* ``noise``: latent error vs the noise level ``nu``: ``y = G(z*) + nu * rms(G(z*)) * xi``;
  l-infinity LP, l1 LP (each naive, and with the known noise level: outputs below ``3 nu rms``
  read as inactive, ``-3s``), gradient descent.
* ``langevin``: Langevin posterior sampling (unadjusted, and with the Metropolis correction) at
  noise ``sigma`` (absolute, ``y = G(z*) + sigma xi``): error of the posterior mean, the
  posterior spread ``||std|| / ||z*||`` (comparable with the relative error), and the coverage of
  ``z*`` by the mean +- 2 std intervals; least-squares gradient descent as the comparison.

Outputs (in ``out_dir``; every file written atomically): ``theory_<name>.csv`` (one row per
method and trial), ``theory_<name>_summary.csv`` (one row per method and cell),
``theory_<name>.json`` (configuration, summary, machine, date) and ``theory_<name>.png`` (in
``figures_dir``). A rerun with the same configuration reads the trials CSV and runs only the
missing trials (more ``trials`` adds trials; any other change starts afresh).
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..generators.random_relu import RandomReLUGenerator, expansive_widths
from ..io import atomic_path, write_json_atomic
from ..tables import write_csv
from .inversion import gd_invert, langevin_sample, lp_invert, pattern_lp_refine, relative_error

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
    plot: Callable[[list[dict[str, Any]], Path, dict[str, Any]], None]
    cell_keys: tuple[str, ...]
    extra_metrics: tuple[str, ...] = ()


@dataclass
class ExperimentOutput:
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    paths: dict[str, Path] = field(default_factory=dict)
    ran: int = 0
    reused: int = 0


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
        _plot_expansion,
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
        _plot_depth,
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
        _plot_measurements,
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
    return Experiment(
        "noise", cells, methods, cfg, trial, _plot_noise, ("level", "widths"), ("determined", "flips")
    )


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
        _plot_langevin,
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


# ==================================================================================================
# running, resuming, summarising
# ==================================================================================================
def config_hash(exp: Experiment, seed: int) -> str:
    blob = json.dumps({"name": exp.name, "seed": int(seed), **exp.config}, sort_keys=True)
    return "c" + hashlib.sha1(blob.encode()).hexdigest()[:12]


def _coerce(v: str) -> Any:
    if v == "":
        return None
    try:
        i = int(v)
        return i
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def _read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as f:
            return [{k: _coerce(v) for k, v in r.items()} for r in csv.DictReader(f)]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (tuple, list)):
        return "-".join(str(x) for x in v)
    return v


def _fields(exp: Experiment, rows: list[dict[str, Any]]) -> list[str]:
    base = [
        "config",
        "experiment",
        "cell",
        *exp.cell_keys,
        "trial",
        "seed",
        "method",
        "rel_err",
        "exact",
        "solver_success",
        "time_s",
    ]
    extra = [k for k in exp.extra_metrics if any(k in r for r in rows)]
    return base + extra


def summarise(exp: Experiment, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (cell, method): counts, exact rate, error quartiles, time, extra metrics."""
    out = []
    for cell in exp.cells:
        for m in exp.methods:
            rs = [r for r in rows if r["cell"] == cell["cell"] and r["method"] == m]
            if not rs:
                continue
            err = np.array([float(r["rel_err"]) for r in rs])
            t = np.array([float(r["time_s"]) for r in rs])
            s = {
                "cell": cell["cell"],
                **{k: cell[k] for k in exp.cell_keys},
                "method": m,
                "trials": len(rs),
                "exact_rate": float(np.mean([int(r["exact"]) for r in rs])),
                "success_rate": float(np.mean([int(r["solver_success"]) for r in rs])),
                "err_median": float(np.median(err)),
                "err_q25": float(np.quantile(err, 0.25)),
                "err_q75": float(np.quantile(err, 0.75)),
                "time_median_s": float(np.median(t)),
                "time_mean_s": float(np.mean(t)),
            }
            for key in exp.extra_metrics:
                vals = [float(r[key]) for r in rs if r.get(key) is not None]
                if vals:
                    s[f"{key}_mean"] = float(np.mean(vals))
            out.append(s)
    return out


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def run_experiment(
    exp: Experiment,
    out_dir: str | os.PathLike,
    trials: int,
    seed: int = 0,
    figures_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> ExperimentOutput:
    """Run (or resume) ``exp`` with ``trials`` per cell and write its table, JSON and figure."""
    if trials < 1:
        raise UserError(f"--trials {trials}: give at least 1 trial per cell")
    out_dir = Path(out_dir)
    fig_dir = Path(figures_dir) if figures_dir is not None else out_dir
    for d in (out_dir, fig_dir):
        if d.exists() and not d.is_dir():
            raise UserError(f"{d} exists and is not a folder: give a folder for the outputs")
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir.mkdir(parents=True, exist_ok=True)
    h = config_hash(exp, seed)
    csv_path = out_dir / f"theory_{exp.name}.csv"
    cell_ids = {c["cell"] for c in exp.cells}
    same = [
        r
        for r in _read_rows(csv_path)
        if r.get("config") == h and r.get("cell") in cell_ids and isinstance(r.get("trial"), int)
    ]
    old = [r for r in same if r["trial"] < trials]
    spare = [r for r in same if r["trial"] >= trials]  # from a run with more trials: kept in the CSV
    done: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in old:
        done.setdefault((r["cell"], r["trial"]), []).append(r)
    # a (cell, trial) counts as done only if every method has its row
    done = {key: rs for key, rs in done.items() if {r["method"] for r in rs} >= set(exp.methods)}
    rows: list[dict[str, Any]] = [r for rs in done.values() for r in rs]
    todo = [(c, t) for c in exp.cells for t in range(trials) if (c["cell"], t) not in done]
    reused = len(done)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc=f"theory {exp.name}", unit="trial", disable=not progress, leave=False)
    last_cell = None
    try:
        for c, t in todo:
            if last_cell is not None and c["cell"] != last_cell:
                _write_rows(exp, rows + spare, csv_path)  # a finished cell is saved before the next starts
            last_cell = c["cell"]
            s = instance_seed(seed, exp.name, c["cell"], t)
            for r in exp.run_trial(c, s):
                rows.append(
                    {
                        "config": h,
                        "experiment": exp.name,
                        "cell": c["cell"],
                        **{k: c[k] for k in exp.cell_keys},
                        "trial": t,
                        "seed": s,
                        **r,
                    }
                )
            bar.update(1)
    finally:
        bar.close()
        _write_rows(exp, rows + spare, csv_path)

    order = {c["cell"]: i for i, c in enumerate(exp.cells)}
    morder = {m: i for i, m in enumerate(exp.methods)}

    def key(r):
        return (order[r["cell"]], int(r["trial"]), morder.get(r["method"], 99))

    rows.sort(key=key)
    _write_rows(exp, sorted(rows + spare, key=key), csv_path)
    summary = summarise(exp, rows)
    sum_path = out_dir / f"theory_{exp.name}_summary.csv"
    sfields: list[str] = []
    for s in summary:
        sfields += [k for k in s if k not in sfields]
    write_csv(sum_path, summary, sfields, cell=_fmt)
    json_path = out_dir / f"theory_{exp.name}.json"
    meta = {
        "experiment": exp.name,
        "config_hash": h,
        "seed": seed,
        "trials": trials,
        **exp.config,
        "thresholds": {"lp": LP_EXACT, "gd": GD_EXACT},
        "machine": machine_info(),
        "trials_run": len(todo),
        "trials_reused": reused,
        "summary": summary,
    }
    write_json_atomic(json_path, meta)
    png_path = fig_dir / f"theory_{exp.name}.png"
    exp.plot(summary, png_path, {"trials": trials, **exp.config})
    return ExperimentOutput(
        rows,
        summary,
        {"csv": csv_path, "summary": sum_path, "json": json_path, "png": png_path},
        len(todo),
        reused,
    )


def _write_rows(exp: Experiment, rows: list[dict[str, Any]], path: Path) -> None:
    write_csv(path, rows, _fields(exp, rows), cell=_fmt)


def format_summary(summary: list[dict[str, Any]], keys: Sequence[str]) -> str:
    """A fixed-width text table of a summary (for the terminal and the docs)."""
    cols = [*keys, "method", "trials", "exact_rate", "err_median", "time_median_s"]
    extra = [
        k for k in ("post_spread_mean", "coverage_mean", "accept_rate_mean") if any(k in s for s in summary)
    ]
    cols += extra
    lines = [" | ".join(cols)]
    for s in summary:
        vals = []
        for c in cols:
            v = s.get(c, "")
            if isinstance(v, float):
                v = f"{v:.3g}"
            elif isinstance(v, (tuple, list)):
                v = "-".join(map(str, v))
            vals.append(str(v))
        lines.append(" | ".join(vals))
    return "\n".join(lines)


# ==================================================================================================
# figures
# ==================================================================================================
def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _figure(ncols: int):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.0))
    return fig, np.atleast_1d(axes)


_MARK = {
    "lp": "o",
    "gd": "s",
    "gd-noflip": "x",
    "lp-inpaint": "o",
    "gd+lp": "^",
    "gd+plp": "P",
    "lp-linf": "o",
    "lp-l1": "D",
    "lp-linf-3s": "<",
    "lp-l1-3s": ">",
    "langevin": "v",
    "mala": "*",
}


def _plain_log_ticks(ax, values, zero_at: float | None = None) -> None:
    """Log-scaled x axis with plain tick labels at ``values`` (and "0" at ``zero_at``)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    vals = sorted(set(float(v) for v in values if v > 0))
    ticks = ([zero_at] if zero_at is not None else []) + vals
    labels = (["0"] if zero_at is not None else []) + [f"{v:g}" for v in vals]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticklabels(labels)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _plot_expansion(summary, path, cfg):
    fig, (a, b) = _figure(2)
    for m in cfg["methods"]:
        for sched, ls in (("constant", "-"), ("log", ":")):
            ss = sorted(
                [s for s in summary if s["method"] == m and s["schedule"] == sched],
                key=lambda s: s["eff_factor"],
            )
            if not ss:
                continue
            x = [s["eff_factor"] for s in ss]
            lab = f"{m}, {'constant factor' if sched == 'constant' else 'c n log n'}"
            a.plot(x, [s["exact_rate"] for s in ss], ls, marker=_MARK.get(m, "o"), label=lab)
            b.plot(x, [s["time_median_s"] for s in ss], ls, marker=_MARK.get(m, "o"), label=lab)
            if sched == "log":
                for s in ss:
                    a.annotate(
                        f"c={s['param']:g}",
                        (s["eff_factor"], s["exact_rate"]),
                        fontsize=7,
                        xytext=(3, -9),
                        textcoords="offset points",
                    )
    a.set(
        xscale="log",
        xlabel="effective expansion factor (n / k)^(1/d)",
        ylabel="exact-recovery rate",
        title=f"k={cfg['k']}, depth {cfg['depth']}, {cfg['trials']} trials/cell",
        ylim=(-0.03, 1.03),
    )
    b.set(
        xscale="log", yscale="log", xlabel="effective expansion factor", ylabel="median time per instance [s]"
    )
    for ax in (a, b):
        ax.grid(True, which="both", alpha=0.3)
        _plain_log_ticks(ax, [1.5, 2, 3, 4, 6, 8])
    a.legend(fontsize=8)
    fig.suptitle(f"Exact recovery (LP: rel. error < {LP_EXACT:g}, GD: < {GD_EXACT:g}) vs expansion")
    _save(fig, path)


def _plot_depth(summary, path, cfg):
    fig, (a, b) = _figure(2)
    for m in cfg["methods"]:
        for f in cfg["factors"]:
            ss = sorted(
                [s for s in summary if s["method"] == m and s["factor"] == f], key=lambda s: s["depth"]
            )
            if not ss:
                continue
            d = [s["depth"] for s in ss]
            a.plot(d, [s["exact_rate"] for s in ss], marker=_MARK.get(m, "o"), label=f"{m}, factor {f:g}")
            b.plot(d, [s["time_median_s"] for s in ss], marker=_MARK.get(m, "o"), label=f"{m}, factor {f:g}")
    a.set(
        xlabel="depth d",
        ylabel="exact-recovery rate",
        ylim=(-0.03, 1.03),
        title=f"k={cfg['k']}, {cfg['trials']} trials/cell",
    )
    b.set(yscale="log", xlabel="depth d", ylabel="median time per instance [s]")
    for ax in (a, b):
        ax.grid(True, alpha=0.3)
    a.legend(fontsize=8)
    fig.suptitle("Exact recovery vs depth at constant expansion")
    _save(fig, path)


def _plot_measurements(summary, path, cfg):
    fig, (a, b) = _figure(2)
    for m in cfg["methods"]:
        ss = sorted([s for s in summary if s["method"] == m], key=lambda s: s["ratio"])
        if not ss:
            continue
        r = [s["ratio"] for s in ss]
        a.plot(r, [s["exact_rate"] for s in ss], marker=_MARK.get(m, "o"), label=m)
        b.errorbar(
            r,
            [max(s["err_median"], 1e-17) for s in ss],
            yerr=[
                [max(s["err_median"] - s["err_q25"], 0) for s in ss],
                [max(s["err_q75"] - s["err_median"], 0) for s in ss],
            ],
            marker=_MARK.get(m, "o"),
            capsize=2,
            label=m,
        )
    w = expansive_widths(cfg["k"], cfg["depth"], factor=cfg["factor"])
    a.set(
        xscale="log",
        xlabel="m / k",
        ylabel="exact-recovery rate",
        ylim=(-0.03, 1.03),
        title=f"widths {'-'.join(map(str, w))}, {cfg['trials']} trials/cell",
    )
    b.set(xscale="log", yscale="log", xlabel="m / k", ylabel="relative latent error (median, IQR)")
    for ax in (a, b):
        ax.grid(True, which="both", alpha=0.3)
        _plain_log_ticks(ax, cfg["ratios"])
    a.legend(fontsize=8)
    fig.suptitle("Recovery from m measurements (inpainting for the layer-wise LP, Gaussian A otherwise)")
    _save(fig, path)


def _plot_noise(summary, path, cfg):
    fig, (a,) = _figure(1)
    pos = sorted({s["level"] for s in summary if s["level"] > 0})
    zero_x = (pos[0] / 10) if pos else 1e-5
    for m in cfg["methods"]:
        ss = sorted([s for s in summary if s["method"] == m], key=lambda s: s["level"])
        x = [s["level"] if s["level"] > 0 else zero_x for s in ss]
        a.errorbar(
            x,
            [max(s["err_median"], 1e-17) for s in ss],
            yerr=[
                [max(s["err_median"] - s["err_q25"], 0) for s in ss],
                [max(s["err_q75"] - s["err_median"], 0) for s in ss],
            ],
            marker=_MARK.get(m, "o"),
            capsize=2,
            label=m,
        )
    if pos:
        a.plot(pos, pos, "k--", lw=0.8, label="error = noise level")
    a.set(
        xscale="log",
        yscale="log",
        xlabel="relative noise level nu",
        ylabel="relative latent error (median, IQR)",
        title=f"k={cfg['k']}, depth {cfg['depth']}, factor {cfg['factor']:g}, {cfg['trials']} trials/cell",
    )
    a.grid(True, which="both", alpha=0.3)
    _plain_log_ticks(a, pos, zero_x if any(s["level"] == 0 for s in summary) else None)
    a.legend(fontsize=8)
    _save(fig, path)


def _plot_langevin(summary, path, cfg):
    fig, (a, b) = _figure(2)
    for m in cfg["methods"]:
        ss = sorted([s for s in summary if s["method"] == m], key=lambda s: s["sigma"])
        x = [s["sigma"] for s in ss]
        a.plot(
            x,
            [s["err_median"] for s in ss],
            marker=_MARK.get(m, "o"),
            label=f"{m}: {'least squares' if m == 'gd' else 'posterior mean'} error",
        )
        if m != "gd":
            a.plot(
                x,
                [s.get("post_spread_mean", np.nan) for s in ss],
                "--",
                marker=".",
                label=f"{m}: posterior spread ||std|| / ||z*||",
            )
            b.plot(
                x,
                [s.get("coverage_mean", np.nan) for s in ss],
                marker=_MARK.get(m, "o"),
                label=f"{m}: coverage of z* by mean +- 2 std",
            )
    b.axhline(0.954, color="k", ls=":", lw=0.8, label="Gaussian 2-sigma: 0.954")
    a.set(
        xscale="log",
        yscale="log",
        xlabel="noise sigma",
        ylabel="relative latent error / std",
        title=f"k={cfg['k']}, depth {cfg['depth']}, factor {cfg['factor']:g}, {cfg['trials']} trials/cell",
    )
    b.set(xscale="log", xlabel="noise sigma", ylabel="coverage", ylim=(0, 1.05))
    for ax in (a, b):
        ax.grid(True, which="both", alpha=0.3)
        _plain_log_ticks(ax, cfg["sigmas"])
        ax.legend(fontsize=8)
    fig.suptitle("Langevin posterior sampling on a random ReLU network")
    _save(fig, path)
