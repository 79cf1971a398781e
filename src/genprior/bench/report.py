"""Bench reports: the summary per (task, level, method), its CSV and Markdown tables, and the
plots. Nothing here runs a cell, so editing it leaves finished cells valid."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..tables import fmt, markdown_table, write_csv
from .config import FORMAT, FORMAT_VERSION, METRIC_COLUMNS, ROW_COLUMNS, TIMING_COLUMNS, BenchConfig


def mean_se(vals: list[float]) -> tuple[float, float]:
    """Mean and standard error of the finite values (nan where there are too few)."""
    v = [float(x) for x in vals if x is not None and math.isfinite(float(x))]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, math.nan
    var = sum((x - m) ** 2 for x in v) / (len(v) - 1)
    return m, math.sqrt(var / len(v))


def paired_differences(
    rows: list[dict[str, Any]], metric: str, a: str, b: str, task: str | None = None, level: Any = None
) -> dict[str, float]:
    """Per-image differences ``metric(a) - metric(b)`` between two methods' rows of the same task,
    level, seed and image (so the same measurements), restricted to ``task`` and ``level`` where
    given: their mean and standard error, the share of images where ``a`` is better (higher, or
    lower for a metric in ``LOWER_IS_BETTER``) and their number ``n`` (nan and 0 when none pair)."""

    def key(r: dict[str, Any]) -> tuple:
        return (r["task"], json.dumps(r["level"]), r["seed"], r["image_id"])

    want = None if level is None else json.dumps(level)
    by = {
        (key(r), r["method"]): float(r[metric])
        for r in rows
        if r.get(metric) is not None
        and (task is None or r["task"] == task)
        and (want is None or json.dumps(r["level"]) == want)
    }
    d = [v - by[(k, b)] for (k, m), v in by.items() if m == a and (k, b) in by]
    if not d:
        return {"mean": math.nan, "se": math.nan, "wins": math.nan, "n": 0}
    mean, se = mean_se(d)
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    return {"mean": mean, "se": se, "wins": sum(sign * v > 0 for v in d) / len(d), "n": len(d)}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard error (over images and seeds) per (task, level, method), in row order."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], json.dumps(r["level"]), r["method"]), []).append(r)
    out = []
    for (task, lv, method), rs in groups.items():
        d: dict[str, Any] = {
            "task": task,
            "level_param": rs[0]["level_param"],
            "level": json.loads(lv),
            "method": method,
            "n": len(rs),
        }
        for k in METRIC_COLUMNS:
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                d[f"{k}_mean"], d[f"{k}_se"] = mean_se(vals)
        out.append(d)
    return out


def summary_markdown(
    summary: list[dict[str, Any]],
    metrics_: Sequence[str] = ("mse", "psnr", "ssim", "meas_err", "time_s", "cpu_s"),
) -> str:
    """A markdown table: one row per (task, level), one column per (method, metric) pair."""
    extra = ["lpips", "correct", "psnr_sample", "calibration", "peak_mb"]
    present = [m for m in list(metrics_) + extra if any(f"{m}_mean" in s for s in summary)]
    present = list(dict.fromkeys(present))
    lines = [
        [s["task"], s["level"], s["method"], s["n"]]
        + [
            f"{fmt(s.get(m + '_mean'))} ± {fmt(s.get(m + '_se'), 2)}" if f"{m}_mean" in s else "-"
            for m in present
        ]
        for s in summary
    ]
    return markdown_table(["task", "level", "method", "n", *present], lines)


METRIC_LABELS = {
    "mse": "per-pixel MSE  ||x - x̂||² / n",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "meas_err": "measurement error",
    "correct": "classifier accuracy",
    "psnr_sample": "PSNR of one posterior sample (dB)",
    "calibration": "share of unobserved pixels in mean ± 2 std",
    "calibration_raw": "the same, before holdout scaled the std",
    "std_mean": "mean posterior std per pixel",
    "time_s": "time per image (s)",
    "cpu_s": "CPU time per image (s)",
    "peak_mb": "peak memory of the batch (MiB)",
}
LEVEL_LABELS = {
    "measurements": "number of measurements m",
    "mask_ratio": "fraction of pixels missing",
    "scale": "super-resolution factor",
    "noise_std": "noise standard deviation",
    "box": "missing box",
}


#: metrics where a lower value is better (the others: higher is better)
LOWER_IS_BETTER = ("mse", "lpips", "meas_err", "time_s", "cpu_s", "peak_mb")


def best_of_summary(
    summary: list[dict[str, Any]], metric: str, best_of: Mapping[str, str]
) -> list[dict[str, Any]]:
    """``summary`` with each family of methods (labels starting with a prefix of ``best_of``)
    replaced, at every (task, level), by its member with the best mean ``metric``, relabelled
    with the family's shown label; the chosen member is kept under ``"best_method"``."""
    if not best_of:
        return list(summary)
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    out: list[dict[str, Any]] = []
    chosen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for s in summary:
        fam = next((lab for lab, pre in best_of.items() if str(s["method"]).startswith(pre)), None)
        if fam is None:
            out.append(s)
            continue
        v = s.get(f"{metric}_mean", math.nan)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        key = (s["task"], json.dumps(s["level"]), fam)
        cur = chosen.get(key)
        if cur is None:
            chosen[key] = {**s, "method": fam, "best_method": s["method"]}
            out.append(chosen[key])
        elif sign * v < sign * cur[f"{metric}_mean"]:
            cur.clear()
            cur.update({**s, "method": fam, "best_method": s["method"]})
    return out


def plot_summary(
    summary: list[dict[str, Any]],
    metric: str,
    path: str | os.PathLike,
    title: str = "",
    xscale: str = "linear",
    yscale: str = "linear",
    best_of: Mapping[str, str] | None = None,
) -> bool:
    """Plot ``metric`` against the level, one panel per task, one line per method (error bars:
    standard error), one legend for the figure. A task whose levels are not all numbers (a box)
    gets a categorical axis. ``best_of`` (see :func:`best_of_summary`) draws a family of
    methods as one line. Returns False (and writes nothing) when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    summary = best_of_summary(summary, metric, best_of or {})
    tasks = list(dict.fromkeys(s["task"] for s in summary))
    panels = [
        (t, ss) for t in tasks if (ss := [s for s in summary if s["task"] == t and f"{metric}_mean" in s])
    ]
    if not panels:
        return False
    methods = list(dict.fromkeys(s["method"] for _, ss in panels for s in ss))
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    markers = "osD^vP*Xh<>p"
    style = {m: dict(color=cmap(i % cmap.N), marker=markers[i % len(markers)]) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels) + 2.6, 3.9), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, (t, ss) in zip(axes[0], panels):
        levels = list(dict.fromkeys(json.dumps(s["level"]) for s in ss))
        numeric = len(levels) > 1 and all(
            isinstance(json.loads(lv), (int, float)) and not isinstance(json.loads(lv), bool) for lv in levels
        )
        pos = {lv: (json.loads(lv) if numeric else i) for i, lv in enumerate(levels)}
        for k, m in enumerate(methods):
            # on a categorical axis the methods sit side by side around each level
            dx = 0.0 if numeric else 0.7 * ((k + 0.5) / len(methods) - 0.5)
            pts = sorted(
                (pos[json.dumps(s["level"])] + dx, s[f"{metric}_mean"], s.get(f"{metric}_se", math.nan))
                for s in ss
                if s["method"] == m
            )
            if not pts:
                continue
            xs, ys, es = zip(*pts)
            es = [0.0 if not math.isfinite(e) else e for e in es]
            h = ax.errorbar(xs, ys, yerr=es, ms=4, capsize=3, lw=1.2, label=m, **style[m])
            handles.setdefault(m, h)
        if numeric:
            ax.set_xscale(xscale)
        else:
            ax.set_xticks(range(len(levels)), [str(json.loads(lv)) for lv in levels])
            ax.set_xlim(-0.5, len(levels) - 0.5)
        ax.set_yscale(yscale if metric not in ("psnr", "ssim", "correct") else "linear")
        ax.set_xlabel(LEVEL_LABELS.get(ss[0]["level_param"], ss[0]["level_param"]))
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_title(t)
        ax.grid(alpha=0.3)
    fig.legend([handles[m] for m in methods if m in handles], [m for m in methods if m in handles],
               loc="center right", fontsize=8, frameon=False)  # fmt: skip
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1 - 2.5 / (3.8 * len(panels) + 2.6), 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True


def write_outputs(
    out: Path, cfg: BenchConfig, rows: list[dict[str, Any]], summary: list[dict[str, Any]]
) -> list[Path]:
    from ..io import write_json_atomic, write_text_atomic

    files = []
    p = out / "results.csv"
    write_csv(p, rows, ROW_COLUMNS)
    files.append(p)
    p = out / "results.json"
    write_json_atomic(
        p,
        {"format": FORMAT, "version": FORMAT_VERSION, "name": cfg.name, "config": cfg.identity(), "config_hash": cfg.hash(),
         "rows": rows, "summary": summary},
    )  # fmt: skip
    files.append(p)
    cols = ["task", "level_param", "level", "method", "n"] + [
        f"{m}_{s}" for m in METRIC_COLUMNS for s in ("mean", "se")
    ]
    p = out / "summary.csv"
    write_csv(p, summary, cols)
    files.append(p)
    p = out / "summary.md"
    write_text_atomic(p, summary_markdown(summary))
    files.append(p)
    for metric in cfg.plot_metrics:
        p = out / f"plot_{metric}.png"
        title = f"{cfg.name} ({Path(cfg.generator).name})"
        if plot_summary(
            summary, metric, p, title=title, xscale=cfg.xscale, yscale=cfg.yscale, best_of=cfg.plot_best_of
        ):
            files.append(p)
    return files


def comparable_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows without the timing columns (what two runs of one config must agree on)."""
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]
