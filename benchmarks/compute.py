"""Quality against compute (issue 11): PSNR against steps and against seconds per image for ILO,
CSGM, PULSE and the projector (and, with ``--methods``, SGILO and the diffusion solvers) at
several multiples of the prior benchmark's budgets, and every method read at ILO's seconds.

The grid is the prior benchmark's (``benchmarks/configs/{fmnist,faces}_prior.toml``: its images,
tasks and seeds, so the same measurements) with its generator-based methods replaced by one row
per method and budget: ``ilo x0.5``, ``ilo x1``, ``ilo x3``, ... where ``x1`` is that method's
setting in the prior benchmark and the multiple scales its steps (every round of ILO; CSGM keeps
its restarts). The steps a row counts are the optimiser steps over all images' restarts and
rounds: ILO the sum of its rounds, CSGM steps x restarts, SGILO its warm-up and fit plus, per
chain, its Langevin steps and refinement rounds, a diffusion solver its reverse-diffusion steps
(SGILO and the diffusion solvers are not in the prior benchmark: their x1 is their defaults).
Seconds are the bench's wall time per image (one torch thread per worker). The equal-seconds
tables (``--equal-to``, default ILO's x1 and x3 rows) read every other method at those rows'
seconds per task, interpolated per image in log-seconds between its budgets, paired against
ILO. ``--join DIR`` adds the rows of another finished compute run on the same grid (e.g. SGILO
run on its own); ``--report-only`` writes the tables and plots from finished runs. Writes
``OUT.json`` beside ``OUT`` (the grid), the bench run in ``OUT``, per task a plot
``PREFIX_<task>.png`` of PSNR against steps and against seconds, and with ``--md`` the tables.

    OMP_NUM_THREADS=1 python benchmarks/compute.py fmnist --out runs/compute_fmnist --count 8 \\
        --workers 2 --plot docs/figures/compute_fmnist --md docs/results/compute_fmnist.md
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
from pathlib import Path
from typing import Any

import tomllib

from genprior import bench
from genprior.solvers.common import holdout_share
from genprior.solvers.ilo import default_stages
from genprior.solvers.registry import get_method

ROOT = Path(__file__).resolve().parents[1]
PRIOR = {"fmnist": "fmnist_prior.toml", "faces": "faces_prior.toml"}
METHODS = ("ilo", "csgm", "pulse", "projector", "sgilo", "resample", "latent-dps", "psld", "dps", "diffpir")
DEFAULT_METHODS = "ilo,csgm,pulse,projector"
SGILO_STEPS = ("warm_steps", "fit_steps", "steps_per_level", "final_steps", "refine_steps")
# the diffusion solvers run on the bundled Fashion-MNIST diffusion models (no face model exists)
DIFFUSION_MODELS = {
    "resample": "fmnist-ldm-32",
    "latent-dps": "fmnist-ldm-32",
    "psld": "fmnist-ldm-32",
    "dps": "fmnist-ddpm-32",
    "diffpir": "fmnist-ddpm-32",
}
NOT_SETTINGS = ("name", "label", "model", "tasks", "seed_label")


def config_of(name: str, settings: dict[str, Any]) -> Any:
    return get_method(name).make_config({k: v for k, v in settings.items() if k not in NOT_SETTINGS})


def budget_steps(name: str, settings: dict[str, Any], num_stages: int, shares_tail: bool = True) -> int:
    """Optimiser steps of one solve of one image with these settings (restarts and rounds counted)
    on a generator of ``num_stages`` stages (ILO's default stages depend on it). SGILO's score
    model is taken at its ``score_stage`` (default 0, the bundled generators' default); its fit
    steps count where the generator's tail shares a latent with that stage (``shares_tail``:
    StyleGAN2, not the DCGAN). A diffusion solver counts its reverse-diffusion steps per chain,
    twice where it holds measurements out to calibrate its std map (``holdout``, on by default
    with two chains or more since 2026-12-06); ReSample's consistency fits, which stop at the
    noise level, come on top."""
    cfg = config_of(name, settings)
    if name == "sgilo":
        score_stage = cfg.score_stage if cfg.score_stage is not None else 0
        stages = cfg.refine_stages if cfg.refine_stages is not None else default_stages(num_stages)
        refine = cfg.refine_steps * len([s for s in stages if s > score_stage])
        langevin = cfg.levels * cfg.steps_per_level + cfg.final_steps
        fit = cfg.fit_steps if shares_tail else 0
        solves = 2 if cfg.refit else 1  # the held-out calibration solves twice (the default since 2026-12-06)
        return int(solves * (cfg.warm_steps + fit + cfg.chains * (langevin + refine)))
    if name == "ilo":
        stages = cfg.stages if cfg.stages is not None else default_stages(num_stages)
        rounds = 1 + len(stages)
        steps = list(cfg.steps) + [cfg.steps[-1]] * rounds
        return int(sum(steps[:rounds]))
    if name == "csgm":
        return int(cfg.steps * cfg.restarts)
    if hasattr(cfg, "holdout") and hasattr(cfg, "chains"):  # a diffusion solver
        solves = 2 if holdout_share(cfg.holdout, cfg.chains) else 1
        return int(solves * cfg.chains * cfg.steps)
    return int(cfg.steps)


def scaled(name: str, settings: dict[str, Any], mult: float) -> dict[str, Any]:
    cfg = config_of(name, settings)
    s = dict(settings)
    if name == "ilo":
        s["steps"] = [max(1, round(v * mult)) for v in cfg.steps]
    elif name == "sgilo":
        for k in SGILO_STEPS:
            s[k] = max(1, round(getattr(cfg, k) * mult))
    else:
        s["steps"] = max(1, round(cfg.steps * mult))
    return s


def split_top(text: str) -> list[str]:
    """Split ``text`` at the commas outside brackets: ``"box:[8,8,24,24],cs:50"`` gives two items."""
    items, depth, cur = [], 0, []
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur))
    return items


def select_rows(raw: dict[str, Any], rows: str) -> None:
    """Keep only the task levels named in ``rows``, ``"NAME:LEVEL,..."`` (a task's name, or its
    type where it has none; the level as JSON, as in the config, e.g. ``cs:50,superres:8`` or
    ``box:[8,8,24,24]``)."""
    want: dict[str, list[Any]] = {}
    for item in split_top(rows):
        name, sep, lv = item.strip().rpartition(":")
        try:
            level = json.loads(lv)
        except ValueError:
            level = None
        if not sep or not name or level is None:
            raise ValueError(f"--rows item {item!r}: give NAME:LEVEL, e.g. cs:50")
        want.setdefault(name, []).append(level)
    tasks = []
    for t in raw["tasks"]:
        label = t.get("name", t["type"])
        levels = [v for v in t["levels"] if v in want.get(label, [])]
        if levels:
            tasks.append({**t, "levels": levels})
    found = {(t.get("name", t["type"]), json.dumps(v)) for t in tasks for v in t["levels"]}
    missing = [
        f"{n}:{json.dumps(v)}" for n, vs in want.items() for v in vs if (n, json.dumps(v)) not in found
    ]
    if missing:
        have = ", ".join(
            f"{t.get('name', t['type'])}:{json.dumps(v)}" for t in raw["tasks"] for v in t["levels"]
        )
        raise ValueError(f"--rows {', '.join(missing)} not in the grid: give some of {have}")
    raw["tasks"] = tasks


def grid(
    which: str, mults: list[float], count: int | None, rows: str | None = None, methods: str = DEFAULT_METHODS
) -> dict[str, Any]:
    wanted = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in wanted if m not in METHODS]
    if unknown or not wanted:
        raise ValueError(f"--methods {methods!r}: give some of {', '.join(METHODS)}")
    if which != "fmnist" and any(m in DIFFUSION_MODELS for m in wanted):
        raise ValueError(f"--methods {methods!r}: the diffusion solvers have bundled models for fmnist only")
    raw = tomllib.loads((ROOT / "benchmarks" / "configs" / PRIOR[which]).read_text())
    if rows:
        select_rows(raw, rows)
    raw["name"] = f"quality against compute: {which}"
    raw.pop("plot_best_of", None)
    raw["plot_metrics"] = ["psnr", "time_s"]
    if count is not None:
        raw["images"]["count"] = count
        raw["batch_size"] = min(raw.get("batch_size", 10), count)
    rows = []
    have = {m["name"] for m in raw["methods"]}
    # SGILO and the diffusion solvers (not in the prior benchmark): their defaults are their x1
    extra = [
        {"name": m, **({"model": DIFFUSION_MODELS[m]} if m in DIFFUSION_MODELS else {})}
        for m in wanted
        if m not in have
    ]
    for m in raw["methods"] + extra:
        if m["name"] not in wanted:
            continue
        base = {k: v for k, v in m.items() if k not in ("name", "label")}
        for x in mults:
            rows.append({"name": m["name"], "label": f"{m['name']} x{x:g}", **scaled(m["name"], base, x)})
    raw["methods"] = rows
    return raw


def joined_run(
    out: Path, raw: dict[str, Any], option: str = "--join"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows and grid of a finished compute run in ``out`` (its ``OUT.json`` beside it), checked
    to share ``raw``'s generator, images and seeds (so the same measurements); errors name
    ``option``."""
    cfg_path, res_path = out.parent / f"{out.name}.json", out / "results.json"
    if not cfg_path.is_file() or not res_path.is_file():
        raise ValueError(f"{option} {out}: no finished compute run there ({cfg_path.name} and results.json)")
    other = json.loads(cfg_path.read_text())
    for key in ("generator", "images", "seeds"):
        if other.get(key) != raw.get(key):
            raise ValueError(f"{option} {out}: its {key} differ from this grid's: join runs of the same grid")
    return json.loads(res_path.read_text())["rows"], other


@functools.cache
def generator_facts(name: str) -> tuple[int, bool]:
    """A bundled generator's number of stages and whether its tail shares a latent with stage 0
    (what the step counts need), loaded once however many runs are joined."""
    from genprior.zoo import load_generator

    G = load_generator(name)
    return G.num_stages, bool(G.shared_tail_latents(0))


def summary_rows(rows: list[dict[str, Any]], raw: dict[str, Any]) -> list[dict[str, Any]]:
    num_stages, shares_tail = generator_facts(raw["generator"])
    spec = {m["label"]: m for m in raw["methods"]}
    out = []
    keys = list(dict.fromkeys((r["task"], json.dumps(r["level"]), r["method"]) for r in rows))
    for task, lv, label in keys:
        rr = [r for r in rows if r["task"] == task and json.dumps(r["level"]) == lv and r["method"] == label]
        m = spec[label]
        settings = {k: v for k, v in m.items() if k not in ("name", "label")}
        psnr, se = bench.mean_se([r["psnr"] for r in rr])
        out.append(
            {
                "task": task,
                "level": json.loads(lv),
                "method": m["name"],
                "label": label,
                "steps": budget_steps(m["name"], settings, num_stages, shares_tail),
                "seconds": sum(r["time_s"] for r in rr) / len(rr),
                "psnr": psnr,
                "psnr_se": se,
                "n": len(rr),
            }
        )
    return out


def plot(summary: list[dict[str, Any]], prefix: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    files = []
    for task, lv in dict.fromkeys((s["task"], json.dumps(s["level"])) for s in summary):
        here = [s for s in summary if s["task"] == task and json.dumps(s["level"]) == lv]
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for method in METHODS:
            pts = sorted((s for s in here if s["method"] == method), key=lambda s: s["steps"])
            if not pts:
                continue
            for ax, x in zip(axes, ("steps", "seconds")):
                ax.errorbar(
                    [p[x] for p in pts],
                    [p["psnr"] for p in pts],
                    yerr=[0 if not math.isfinite(p["psnr_se"]) else p["psnr_se"] for p in pts],
                    marker="o",
                    capsize=3,
                    label=method,
                )
        for ax, x in zip(axes, ("optimiser steps per image", "seconds per image")):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xlabel(x)
            ax.set_ylabel("PSNR (dB)")
            ax.grid(alpha=0.3)
        axes[0].legend()
        fig.suptitle(f"{task} {json.loads(lv)}")
        fig.tight_layout()
        name = f"{task}_{json.loads(lv)}".replace(" ", "-").replace("[", "").replace("]", "").replace(",", "")
        path = Path(f"{prefix}_{name}.png")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)
    return files


def table(summary: list[dict[str, Any]]) -> str:
    lines = [
        "| task | level | method | budget | steps / image | s / image | PSNR (dB) |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for s in summary:
        se = f" ± {s['psnr_se']:.2f}" if math.isfinite(s["psnr_se"]) else ""
        lines.append(
            f"| {s['task']} | {s['level']} | {s['method']} | {s['label'].split()[-1]} | {s['steps']} | "
            f"{s['seconds']:.2f} | {s['psnr']:.2f}{se} |"
        )
    return "\n".join(lines) + "\n"


def equal_seconds(
    rows: list[dict[str, Any]], method_of: dict[str, str], ref: str = "ilo x1"
) -> list[dict[str, Any]]:
    """Each method at the seconds the row ``ref`` took, per task level: per image, its PSNR
    interpolated linearly in log-seconds between the two of its budgets whose mean seconds
    bracket ``ref``'s; where ``ref``'s seconds lie outside its budgets' range, its nearest budget,
    and ``ratio`` (that budget's seconds over ``ref``'s) says how far off that is. Then the paired
    difference ``ref`` minus it over the images both have. ``method_of`` maps a row label to its
    method."""
    out = []

    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["seed"], r["batch"], r["image"])

    for task, lv in dict.fromkeys((r["task"], json.dumps(r["level"])) for r in rows):
        here = [r for r in rows if r["task"] == task and json.dumps(r["level"]) == lv]
        ref_rows = [r for r in here if r["method"] == ref]
        if not ref_rows:
            continue
        secs = sum(r["time_s"] for r in ref_rows) / len(ref_rows)
        ref_psnr = {key(r): r["psnr"] for r in ref_rows}
        for method in dict.fromkeys(method_of[r["method"]] for r in here):
            if method == method_of[ref]:
                continue
            budgets = []
            for label in dict.fromkeys(r["method"] for r in here if method_of[r["method"]] == method):
                rr = [r for r in here if r["method"] == label]
                budgets.append((sum(r["time_s"] for r in rr) / len(rr), {key(r): r["psnr"] for r in rr}))
            budgets.sort(key=lambda b: b[0])
            if secs <= budgets[0][0] or secs >= budgets[-1][0] or len(budgets) == 1:
                near = budgets[0] if secs <= budgets[0][0] else budgets[-1]
                at, ratio = dict(near[1]), near[0] / secs
            else:
                i = next(j for j in range(1, len(budgets)) if budgets[j][0] >= secs)
                (s0, p0), (s1, p1) = budgets[i - 1], budgets[i]
                w = (math.log(secs) - math.log(s0)) / (math.log(s1) - math.log(s0))
                at = {k: (1 - w) * p0[k] + w * p1[k] for k in p0 if k in p1}
                ratio = 1.0
            common = [k for k in ref_psnr if k in at]
            diffs = [ref_psnr[k] - at[k] for k in common]
            d, d_se = bench.mean_se(diffs)
            out.append(
                {
                    "task": task,
                    "level": json.loads(lv),
                    "method": method,
                    "ref": ref,
                    "ref_seconds": secs,
                    "ref_psnr": bench.mean_se([ref_psnr[k] for k in common])[0],
                    "psnr": bench.mean_se([at[k] for k in common])[0],
                    "ratio": ratio,
                    "diff": d,
                    "diff_se": d_se,
                    "better": sum(x > 0 for x in diffs) / max(1, len(diffs)),
                    "n": len(common),
                }
            )
    return out


def _far(e: dict[str, Any]) -> str:
    """`` [k x]`` where an equal-seconds entry came from a budget of k times the seconds."""
    return "" if e["ratio"] == 1.0 else f" [{e['ratio']:.2g} x]"


def _se(e: dict[str, Any]) -> str:
    """`` ± se`` of an equal-seconds difference, where it has one."""
    return f" ± {e['diff_se']:.2f}" if math.isfinite(e["diff_se"]) else ""


def equal_seconds_table(eq: list[dict[str, Any]]) -> str:
    if not eq:
        return ""
    ref = eq[0]["ref"]
    lines = [
        f"At equal seconds: each method's PSNR at the seconds of `{ref}` (interpolated in log-seconds "
        "between its budgets; `[k x]` where its nearest budget took k times those seconds), and the "
        f"paired difference `{ref}` minus it (share of images where `{ref}` is better):\n",
        f"| task | level | {ref}: s / image | {ref}: PSNR | method | its PSNR at those seconds | {ref} - it |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    for e in eq:
        far, se = _far(e), _se(e)
        lines.append(
            f"| {e['task']} | {e['level']} | {e['ref_seconds']:.2f} | {e['ref_psnr']:.2f} | {e['method']} | "
            f"{e['psnr']:.2f}{far} | {e['diff']:+.2f}{se} ({100 * e['better']:.0f}%) |"
        )
    return "\n".join(lines) + "\n"


def equal_seconds_matrix(eq: list[dict[str, Any]]) -> str:
    """The equal-seconds differences as one row per task level and one column per method."""
    if not eq:
        return ""
    ref = eq[0]["ref"]
    methods = [m for m in METHODS if any(e["method"] == m for e in eq)]
    lines = [
        f"`{ref}` minus each method at `{ref}`'s seconds, paired (dB; `[k x]`: that method's nearest "
        "budget took k times the seconds):\n",
        f"| task | level | {ref}: s, PSNR | " + " | ".join(methods) + " |",
        "|---|---|---|" + "---:|" * len(methods),
    ]
    for task, lv in dict.fromkeys((e["task"], json.dumps(e["level"])) for e in eq):
        here = {e["method"]: e for e in eq if e["task"] == task and json.dumps(e["level"]) == lv}
        first = next(iter(here.values()))
        cells = []
        for m in methods:
            e = here.get(m)
            if e is None:
                cells.append("")
                continue
            cells.append(f"{e['diff']:+.2f}{_se(e)}{_far(e)}")
        lines.append(
            f"| {task} | {json.loads(lv)} | {first['ref_seconds']:.1f}, {first['ref_psnr']:.2f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("which", choices=sorted(PRIOR), help="the prior benchmark's grid to start from")
    p.add_argument("--out", type=Path, required=True, help="bench output folder")
    p.add_argument("--mult", default="0.5,1,3", help="budget multiples (default 0.5,1,3)")
    p.add_argument("--count", type=int, default=None, help="images (default: the prior benchmark's)")
    p.add_argument(
        "--rows", default=None, help="only these task levels, NAME:LEVEL,... (e.g. cs:50,superres:8)"
    )
    p.add_argument(
        "--methods", default=DEFAULT_METHODS, help=f"of {', '.join(METHODS)} (default {DEFAULT_METHODS})"
    )
    p.add_argument(
        "--join",
        type=Path,
        nargs="*",
        default=[],
        help="finished compute runs on the same grid to add to the table",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="write the table and plots from OUT's finished run (its results.json) without running anything",
    )
    p.add_argument(
        "--equal-to",
        default="ilo x1,ilo x3",
        help="rows whose seconds the equal-seconds tables compare every method at (default: ILO at x1 and x3)",
    )
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: the config's)")
    p.add_argument("--plot", default=None, help="prefix of the per-task plots")
    p.add_argument("--md", type=Path, default=None, help="write the table here")
    a = p.parse_args(argv)
    try:
        mults = [float(v) for v in a.mult.split(",")]
    except ValueError:
        print(f"compute: --mult {a.mult!r}: give comma-separated numbers such as 0.5,1,3", file=sys.stderr)
        return 2
    if not mults or any(not (m > 0) for m in mults):
        print(f"compute: --mult {a.mult!r}: the multiples must be > 0", file=sys.stderr)
        return 2
    try:
        raw = grid(a.which, mults, a.count, a.rows, a.methods)
        joined = [joined_run(d, raw) for d in a.join]
    except ValueError as e:
        print(f"compute: {e}", file=sys.stderr)
        return 2
    if a.device is not None:
        raw["device"] = a.device
    if a.report_only:  # the finished run's rows, whatever the code now is
        try:
            rows, raw = joined_run(a.out, raw, "--report-only")
        except ValueError as e:
            print(f"compute: {e}", file=sys.stderr)
            return 2
    else:
        a.out.mkdir(parents=True, exist_ok=True)
        cfg_path = a.out.parent / f"{a.out.name}.json"
        cfg_path.write_text(json.dumps(raw, indent=1))
        rows = bench.run_bench(cfg_path, a.out, workers=a.workers, threads=1, progress=True).rows
    summary = summary_rows(rows, raw)
    all_rows, method_of = list(rows), {m["label"]: m["name"] for m in raw["methods"]}
    for j_rows, j_raw in joined:
        summary += summary_rows(j_rows, j_raw)
        all_rows += j_rows
        method_of.update({m["label"]: m["name"] for m in j_raw["methods"]})
    order = {m: i for i, m in enumerate(METHODS)}
    summary.sort(key=lambda r: (r["task"], json.dumps(r["level"]), order[r["method"]], r["steps"]))
    t = table(summary)
    for ref in a.equal_to.split(","):  # the headline comparisons, at equal seconds
        if ref.strip() in method_of:
            eq = equal_seconds(all_rows, method_of, ref.strip())
            t += "\n" + equal_seconds_matrix(eq) + "\n" + equal_seconds_table(eq)
    print(t)
    if a.plot:
        for f in plot(summary, a.plot):
            print(f"wrote {f}")
    if a.md is not None:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(
            f"`python benchmarks/compute.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n" + t
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
