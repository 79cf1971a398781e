"""Tables and plots of a `genprior bench` run for the docs (the section-5 generative-prior benchmark).

Reads ``RUN/results.json`` (written by ``genprior bench``) and writes, without running anything:

* ``OUT_PREFIX_{metric}.png``: the metric against the level, one panel per task, with each Lasso
  basis drawn as one line, its best alpha at each point (an oracle choice, which favours Lasso);
* ``OUT_PREFIX.md``: one table per metric, a row per (task, level) and a column per method (Lasso:
  best alpha per row, named in a last column), mean ± standard error, the best mean in bold.

    python benchmarks/prior_report.py runs/fmnist_prior --metrics psnr,ssim,correct \\
        --out docs/figures/bench_fmnist_prior --md docs/results/fmnist_prior_tables.md

Several runs are read as one when they share the generator, the images, the tasks, the seeds and
the batch size (so every method saw the same measurements: they depend on those only): a grid
can be run as separate configs of methods, e.g. while one method's model is still training.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from genprior import bench

LASSO_FAMILIES = {
    "Lasso (DCT, best alpha)": "Lasso (DCT",
    "Lasso (wavelet, best alpha)": "Lasso (wavelet",
    "Lasso (pixel, best alpha)": "Lasso (pixel",
}


def _cell(s: dict[str, Any] | None, metric: str, bold: bool) -> str:
    if s is None or f"{metric}_mean" not in s:
        return "-"
    m, e = s[f"{metric}_mean"], s.get(f"{metric}_se", math.nan)
    digits = 3 if metric in ("ssim", "lpips", "correct") else 2 if metric == "psnr" else 3
    digits = 0 if metric == "peak_mb" else 1 if metric in ("time_s", "cpu_s") else digits
    small = metric in ("mse", "meas_err")  # values spanning decades: significant digits
    txt = f"{m:.3g}" if small else f"{m:.{digits}f}"
    if math.isfinite(e):
        txt += f" ± {e:.2g}" if small else f" ± {e:.{digits}f}"
    return f"**{txt}**" if bold else txt


def table(summary: list[dict[str, Any]], metric: str) -> str:
    rows = bench.best_of_summary(summary, metric, LASSO_FAMILIES)
    methods = list(dict.fromkeys(s["method"] for s in rows))
    keys = list(dict.fromkeys((s["task"], json.dumps(s["level"])) for s in rows))
    sign = 1.0 if metric in bench.LOWER_IS_BETTER else -1.0
    head = "| task | level | " + " | ".join(methods) + " | best Lasso alphas |"
    lines = [head, "|---|---|" + "---:|" * len(methods) + "---|"]
    for task, lv in keys:
        here = {s["method"]: s for s in rows if s["task"] == task and json.dumps(s["level"]) == lv}
        vals = {
            m: here[m][f"{metric}_mean"]
            for m in here
            if f"{metric}_mean" in here[m] and math.isfinite(here[m][f"{metric}_mean"])
        }
        top = min(sign * v for v in vals.values()) if vals else None
        winners = {m for m, v in vals.items() if sign * v == top}  # ties: all in bold
        alphas = ", ".join(
            f"{fam.split(',')[0].split('(')[1]}: {here[fam]['best_method'].split('alpha ')[-1].rstrip(')')}"
            for fam in LASSO_FAMILIES
            if fam in here and "best_method" in here[fam]
        )
        cells = [_cell(here.get(m), metric, m in winners) for m in methods]
        lines.append(f"| {task} | {json.loads(lv)} | " + " | ".join(cells) + f" | {alphas} |")
    return "\n".join(lines) + "\n"


def paired_table(rows: list[dict[str, Any]], metric: str, ref: str, others: list[str]) -> str:
    """Per-image differences ``metric(ref) - metric(other)`` on the same image, seed and
    measurements (every method of a cell sees the same y; :func:`bench.paired_differences`):
    mean ± standard error, and the fraction of images where ``ref`` is better."""
    keys = list(dict.fromkeys((r["task"], json.dumps(r["level"])) for r in rows))
    lines = [
        "| task | level | " + " | ".join(f"{ref} - {o}" for o in others) + " |",
        "|---|---|" + "---:|" * len(others),
    ]
    for task, lv in keys:
        cells = []
        for o in others:
            d = bench.paired_differences(rows, metric, ref, o, task, json.loads(lv))
            cells.append(f"{d['mean']:+.2f} ± {d['se']:.2f} ({100 * d['wins']:.0f}%)" if d["n"] else "-")
        lines.append(f"| {task} | {json.loads(lv)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: what decides the images and measurements of a grid's cells (bench.cell.derive_seed)
SAME_MEASUREMENTS = ("generator", "generator_sha256", "images", "tasks", "seeds", "batch_size", "device")


def read_runs(folders: list[Path]) -> dict[str, Any]:
    """The rows of several runs of one grid (same images and measurements) as one run. A method
    label found in more than one run (a rerun of some rows with other code, say) keeps its name in
    the first run that has it; in the others it becomes ``"label [folder name]"``."""
    runs = []
    for f in folders:
        res = f / "results.json"
        if not res.is_file():
            raise ValueError(f"{res} does not exist: give a folder written by genprior bench")
        runs.append(json.loads(res.read_text()))
    first = runs[0]
    for f, r in zip(folders[1:], runs[1:]):
        for k in SAME_MEASUREMENTS:
            if r["config"].get(k) != first["config"].get(k):
                raise ValueError(
                    f"{f} differs from {folders[0]} in {k!r}: its methods saw other measurements"
                )
    rows, seen = [], set()
    for f, r in zip(folders, runs):
        labels = {row["method"] for row in r["rows"]}
        again = labels & seen  # a rerun's label: the first run keeps it, the others add their folder
        rows += [
            {**row, "method": f"{row['method']} [{f.name}]"} if row["method"] in again else row
            for row in r["rows"]
        ]
        seen |= labels
    return {"name": first.get("name", ""), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "run", type=Path, nargs="+", help="genprior bench output folders (hold results.json) of one grid"
    )
    p.add_argument("--metrics", default="psnr,ssim", help="comma list of metrics (default psnr,ssim)")
    p.add_argument("--out", type=Path, required=True, help="prefix of the PNG files")
    p.add_argument("--md", type=Path, help="write the markdown tables here (default: print them)")
    p.add_argument("--title", default=None)
    p.add_argument(
        "--paired",
        default="ilo",
        help="method whose per-image differences to the other generator methods are tabulated ('' for none)",
    )
    args = p.parse_args(argv)
    try:
        data = read_runs(args.run)
    except ValueError as e:
        print(f"prior_report: {e}", file=sys.stderr)
        return 2
    summary = bench.summarize(data["rows"])
    title = args.title or data.get("name", "")
    parts = []
    for metric in [m for m in args.metrics.split(",") if m]:
        if metric not in bench.METRIC_COLUMNS:
            print(
                f"prior_report: unknown metric {metric!r}: choose from {', '.join(bench.METRIC_COLUMNS)}",
                file=sys.stderr,
            )
            return 2
        png = args.out.parent / f"{args.out.name}_{metric}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        bench.plot_summary(summary, metric, png, title=title, best_of=LASSO_FAMILIES)
        parts.append(f"### {bench.METRIC_LABELS.get(metric, metric)}\n\n{table(summary, metric)}")
        methods = list(dict.fromkeys(r["method"] for r in data["rows"]))
        others = [  # the methods that have this metric (a posterior sampler's are its own)
            m
            for m in methods
            if m != args.paired
            and not m.startswith("Lasso")
            and any(r["method"] == m and r.get(metric) is not None for r in data["rows"])
        ]
        if args.paired and args.paired in methods and others and metric not in bench.TIMING_COLUMNS:
            parts.append(
                f"Paired per-image differences, {args.paired} minus each method (same images, seeds and "
                f"measurements), mean ± standard error (share of images where {args.paired} is better):\n\n"
                + paired_table(data["rows"], metric, args.paired, others)
            )
    text = "\n".join(parts)
    if args.md:
        from genprior.io import write_text_atomic

        write_text_atomic(args.md, text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
