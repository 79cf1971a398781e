"""Running, resuming and summarising the experiments of ``genprior theory``.

Every finished trial (one instance of one cell, every method's row) is stored at once as its own
JSON file in ``out_dir/theory_<name>_trials/`` through :class:`genprior.resume.UnitStore`, the
store ``genprior bench`` keeps its cells in, with the fingerprint of the code that computed it
(:mod:`genprior.theory.experiments` and every genprior module it imports). A rerun with the same
configuration runs only the trials that are missing, damaged, or computed by code that has
changed since (more ``trials`` adds trials; any other change of the configuration starts afresh,
in the same folder).

Outputs (in ``out_dir``; every file written atomically): ``theory_<name>.csv`` (one row per
method and trial), ``theory_<name>_summary.csv`` (one row per method and cell),
``theory_<name>.json`` (configuration, summary, machine, date) and ``theory_<name>.png`` (in
``figures_dir``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..io import write_json_atomic
from ..resume import UnitStore, code_fingerprint
from ..tables import write_csv
from .experiments import GD_EXACT, LP_EXACT, Experiment, instance_seed
from .report import PLOTS

#: the module whose import closure is the computation of a trial
TRIAL_CODE = ("genprior.theory.experiments",)


@dataclass
class ExperimentOutput:
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    paths: dict[str, Path] = field(default_factory=dict)
    ran: int = 0
    reused: int = 0


def config_hash(exp: Experiment, seed: int) -> str:
    blob = json.dumps({"name": exp.name, "seed": int(seed), **exp.config}, sort_keys=True)
    return "c" + hashlib.sha1(blob.encode()).hexdigest()[:12]


def trial_key(cell: str, trial: int) -> str:
    return json.dumps([cell, int(trial)])


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


def _finished(exp: Experiment, store: UnitStore, code: str) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """The stored trials of this configuration computed by this code, by key (a trial counts only
    with every method's row), and how many stored trials are stale (other code)."""
    methods = set(exp.methods)
    done: dict[str, list[dict[str, Any]]] = {}
    stale = 0
    for unit in store:
        rows = unit.data.get("rows")
        if unit.code != code:
            stale += 1
        elif isinstance(rows, list) and {r.get("method") for r in rows} >= methods:
            done[unit.key] = rows
    return done, stale


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
    code = code_fingerprint(TRIAL_CODE)
    store = UnitStore(out_dir / f"theory_{exp.name}_trials", h)
    done, stale = _finished(exp, store, code)
    plan = [(c, t) for c in exp.cells for t in range(trials)]
    todo = [(c, t) for c, t in plan if trial_key(c["cell"], t) not in done]
    reused = len(plan) - len(todo)
    csv_path = out_dir / f"theory_{exp.name}.csv"

    def rows_so_far() -> list[dict[str, Any]]:  # in the order of the plan, methods in table order
        morder = {m: i for i, m in enumerate(exp.methods)}
        out = []
        for c, t in plan:
            rs = done.get(trial_key(c["cell"], t), [])
            out += sorted(rs, key=lambda r: morder.get(r["method"], len(morder)))
        return out

    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc=f"theory {exp.name}", unit="trial", disable=not progress, leave=False)
    try:
        for c, t in todo:
            s = instance_seed(seed, exp.name, c["cell"], t)
            rows = [
                {
                    "config": h,
                    "experiment": exp.name,
                    "cell": c["cell"],
                    **{k: c[k] for k in exp.cell_keys},
                    "trial": t,
                    "seed": s,
                    **r,
                }
                for r in exp.run_trial(c, s)
            ]
            key = trial_key(c["cell"], t)
            store.save(key, {"rows": rows}, code)  # a finished trial is kept before the next starts
            done[key] = rows
            bar.update(1)
    finally:
        bar.close()
        rows = rows_so_far()
        write_csv(csv_path, rows, _fields(exp, rows), cell=_fmt)

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
        "code": code,
        "seed": seed,
        "trials": trials,
        **exp.config,
        "thresholds": {"lp": LP_EXACT, "gd": GD_EXACT},
        "machine": machine_info(),
        "trials_run": len(todo),
        "trials_reused": reused,
        "trials_stale": stale,
        "summary": summary,
    }
    write_json_atomic(json_path, meta)
    png_path = fig_dir / f"theory_{exp.name}.png"
    PLOTS[exp.name](summary, png_path, {"trials": trials, **exp.config})
    return ExperimentOutput(
        rows,
        summary,
        {"csv": csv_path, "summary": sum_path, "json": json_path, "png": png_path},
        len(todo),
        reused,
    )
