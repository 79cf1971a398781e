"""genprior's solvers beside another library's implementation of the same method (issue 11).

deepinv's own CSGM (``csgm-deepinv``, :mod:`genprior.solvers.peers`: deepinv's
``CSGMGenerator`` loop, one image at a time, its latent uniform in [-1, 1]) against genprior's
CSGM at equal steps, learning rate and restarts (one), on the same measurements, started from
genprior's Gaussian draw (``csgm``) and from deepinv's uniform one (``csgm-uniform``); ILO at its
defaults for reference. Image sets (each a bench grid of its own, so every method sees the same
images, operator and noise):

* ``dcgan``: DCGAN samples (seed 1000) on the face DCGAN;
* ``lfw``: the first faces of ``skimage.data.lfw_subset()`` (25 px grey, upscaled, repeated over
  the channels) on the face DCGAN: real faces far from its samples;
* ``astronaut``: scikit-image's astronaut face on the face DCGAN;
* ``fmnist``: held-out Fashion-MNIST test images on the Fashion-MNIST StyleGAN2.

Writes ``OUT/<set>/`` (the bench runs, resumable), ``OUT/<set>.toml`` (their configs), and with
``--md`` a table per set (mean PSNR and SSIM ± standard error, seconds per image, the paired
difference genprior - deepinv) plus the speed section:

* per image and step, with one torch thread: deepinv's CSGM (batch 1, its own loop), genprior's
  CSGM at batch ``--speed-batch`` (32), and the bound a bare forward + backward pass of the
  generator at that batch sets, measured in the same run (times are the minimum of
  ``--repeats``), with the minor page faults per image and step of each. On Linux a batched step
  allocates and frees tens of MB; glibc gives large blocks back to the kernel and takes them again
  (a page fault per 4 KiB), which costs the batched runs several per cent and not deepinv's
  one-image loop. ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967295:glibc.malloc.trim_threshold=4294967295``
  before the command keeps them in the process (the table names the setting it ran under).

    OMP_NUM_THREADS=1 python benchmarks/peers.py --out runs/peers --steps 1000 --count 24 \\
        --md docs/results/peers_tables.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import torch

from genprior import bench

SETS: dict[str, dict[str, Any]] = {
    "dcgan": {
        "generator": "dcgan-faces-64",
        "images": 'source = "samples"\ncount = {count}\nseed = 1000',
        "what": "DCGAN samples (seed 1000)",
    },
    "lfw": {
        "generator": "dcgan-faces-64",
        "images": 'source = "lfw"\ncount = {count}',
        "what": "LFW faces (the first of `lfw_subset()`, 25 px grey, upscaled)",
    },
    "astronaut": {
        "generator": "dcgan-faces-64",
        "images": 'source = "astronaut"',
        "what": "the astronaut face",
    },
    "fmnist": {
        "generator": "fmnist-stylegan2-32",
        "images": 'source = "heldout"\ndataset = "fmnist"\ncount = {count}',
        "what": "Fashion-MNIST held-out test images",
    },
}
DEEPINV, OURS, OURS_UNIFORM = "csgm-deepinv", "csgm", "csgm-uniform"


def config_text(
    name: str, steps: int, lr: float, count: int, task: str, level: Any, seeds: tuple[int, ...] = (0,)
) -> str:
    s = SETS[name]
    images = s["images"].format(count=count)
    n = 1 if name == "astronaut" else count
    return (
        textwrap.dedent(
            f"""\
        # benchmarks/peers.py: {s["what"]}, genprior's CSGM beside deepinv's at equal steps ({steps}),
        # learning rate ({lr}) and restarts (1); ILO at its defaults for reference.
        name = "peers: {name}"
        generator = "{s["generator"]}"
        seeds = {list(seeds)}
        batch_size = {n}
        plot_metrics = ["psnr", "ssim"]

        [images]
        """
        )
        + images
        + textwrap.dedent(
            f"""

        [[tasks]]
        type = "{task}"
        levels = [{json.dumps(level)}]

        [[methods]]
        name = "{DEEPINV}"
        steps = {steps}
        lr = {lr}
        tol = 0.0

        [[methods]]
        name = "csgm"
        label = "{OURS}"
        steps = {steps}
        lr = {lr}
        restarts = 1

        [[methods]]
        name = "csgm"
        label = "{OURS_UNIFORM}"
        seed_label = "{OURS}"
        steps = {steps}
        lr = {lr}
        restarts = 1
        init = "uniform"

        [[methods]]
        name = "ilo"
        """
        )
    )


def same_start(cfg_path: Path, rows: list[dict[str, Any]], steps: int, lr: float) -> dict[str, float]:
    """genprior's CSGM started where the bench's ``csgm-deepinv`` row started (its seed, deepinv's
    draw: ``solvers.peers.deepinv_starts``) on that row's measurements: the paired PSNR difference
    to that row isolates the implementations from the draw of the start."""
    from genprior import metrics
    from genprior.bench.cache import get_generator
    from genprior.bench.cell import Cell, cell_measurements, cell_solver_seed
    from genprior.solvers.csgm import CSGM, CSGMConfig
    from genprior.solvers.peers import deepinv_starts

    cfg = bench.load_config(cfg_path)
    G = get_generator(cfg)
    theirs = {(r["seed"], r["image"]): r["psnr"] for r in rows if r["method"] == DEEPINV}
    d = []
    task = cfg.tasks[0]
    for seed in cfg.seeds:
        n = sum(1 for s, _ in theirs if s == seed)
        for b in range(math.ceil(n / cfg.batch_size)):
            cell = Cell(task.label, task.levels[0], DEEPINV, b, seed)
            x, y, ps = cell_measurements(cfg, cell)
            ours = CSGM(G, CSGMConfig(steps=steps, lr=lr))
            solver_seed = cell_solver_seed(cell)
            held = {
                k: v for k, v in ours._init_inputs(len(x), solver_seed).items() if k not in G.latent_names()
            }
            xo, _ = ours.solve(y, ps, start=deepinv_starts(G, held, len(x), solver_seed))
            for i, p in enumerate(metrics.psnr(xo.cpu(), x.cpu()).tolist()):
                d.append(p - theirs[(seed, b * cfg.batch_size + i)])
    mean, se = bench.mean_se(d)
    return {"mean": mean, "se": se, "n": len(d), "max_abs": max(abs(v) for v in d)}


def joined_rows(
    out: Path, name: str, ours: dict[str, Any], taken: set[int] | None = None
) -> list[dict[str, Any]]:
    """The rows of set ``name`` from an earlier peers run in ``out``: its grid must be this run's
    (``ours``: the identity of this run's config) but for the seeds, which must overlap neither
    this run's nor ``taken`` (the seeds of runs joined before it; this run's seeds are added to it)."""
    res = out / name / "results.json"
    if not res.is_file():
        raise ValueError(f"--join {out}: no finished run of set {name!r} there ({res} is missing)")
    run = json.loads(res.read_text())
    theirs = run["config"]
    differ = sorted(k for k in set(ours) | set(theirs) if k != "seeds" and ours.get(k) != theirs.get(k))
    if differ:
        raise ValueError(
            f"--join {out}: set {name!r} was run with other settings ({', '.join(differ)}): join runs of one grid"
        )
    taken = set(ours["seeds"]) if taken is None else taken
    if taken & set(theirs["seeds"]):
        raise ValueError(
            f"--join {out}: set {name!r} there has seeds {theirs['seeds']}, this run and those joined before "
            f"{sorted(taken)}: give distinct seeds"
        )
    taken.update(theirs["seeds"])
    return run["rows"]


def seed_averaged(rows: list[dict[str, Any]], a: str, b: str, metric: str = "psnr") -> dict[str, float]:
    """``metric(a) - metric(b)`` averaged over the seeds (each its own mask and start) per image,
    then mean and standard error over the images: the images are the independent units."""
    by = {
        (r["image_id"], r["seed"], r["method"]): float(r[metric]) for r in rows if r.get(metric) is not None
    }
    per: dict[str, list[float]] = {}
    for (img, seed, m), v in by.items():
        if m == a and (img, seed, b) in by:
            per.setdefault(img, []).append(v - by[(img, seed, b)])
    means = [sum(v) / len(v) for v in per.values()]
    if not means:
        return {"mean": math.nan, "se": math.nan, "n": 0, "seeds": 0}
    mean, se = bench.mean_se(means)
    return {"mean": mean, "se": se, "n": len(means), "seeds": min(len(v) for v in per.values())}


def set_table(name: str, rows: list[dict[str, Any]], methods: list[str]) -> str:
    lines = [
        f"**{SETS[name]['what']}** ({len({r['image_id'] for r in rows})} images, generator "
        f"`{SETS[name]['generator']}`)\n",
        "| method | PSNR (dB) | SSIM | s / image | PSNR - deepinv (paired) | SSIM - deepinv |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in methods:
        rr = [r for r in rows if r["method"] == m]
        if not rr:
            continue
        ps, pse = bench.mean_se([r["psnr"] for r in rr])
        ss, sse = bench.mean_se([r["ssim"] for r in rr])
        t = sum(r["time_s"] for r in rr) / len(rr)
        if m == DEEPINV:
            dp = ds = "-"
        else:
            dps, dss = (bench.paired_differences(rows, k, m, DEEPINV) for k in ("psnr", "ssim"))
            mp, ep, wp, ms, es = dps["mean"], dps["se"], dps["wins"], dss["mean"], dss["se"]
            dp = f"{mp:+.2f} ± {ep:.2f} ({100 * wp:.0f}%)" if math.isfinite(ep) else f"{mp:+.2f}"
            ds = f"{ms:+.3f} ± {es:.3f}" if math.isfinite(es) else f"{ms:+.3f}"
        se_p = f" ± {pse:.2f}" if math.isfinite(pse) else ""
        se_s = f" ± {sse:.3f}" if math.isfinite(sse) else ""
        lines.append(f"| {m} | {ps:.2f}{se_p} | {ss:.3f}{se_s} | {t:.1f} | {dp} | {ds} |")
    seeds = sorted({r["seed"] for r in rows})
    if len(seeds) > 1:
        lines.append(
            f"\nSeeds {', '.join(map(str, seeds))} (each its own mask and starts); PSNR - deepinv averaged over "
            "the seeds per image, then mean ± standard error over the images:\n"
        )
        for m in methods:
            if m == DEEPINV or not any(r["method"] == m for r in rows):
                continue
            d = seed_averaged(rows, m, DEEPINV)
            se = f" ± {d['se']:.2f}" if math.isfinite(d["se"]) else ""
            lines.append(f"- {m}: {d['mean']:+.2f}{se} dB ({d['n']} images x {d['seeds']} seeds)")
    return "\n".join(lines) + "\n"


# ---- speed -------------------------------------------------------------------------------------
def _minor_faults() -> int:
    """Minor page faults of this process so far (0 where ``resource`` does not exist)."""
    try:
        import resource
    except ImportError:  # Windows has no resource module
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _timed(fn: Any) -> tuple[float, int]:
    """Seconds and minor page faults of one call of ``fn``."""
    f0, t0 = _minor_faults(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, _minor_faults() - f0


def speed(model: str, steps: int, batch: int, repeats: int) -> dict[str, float]:
    """Seconds per image and step of deepinv's CSGM (batch 1), genprior's CSGM at ``batch`` and a
    bare forward + backward of the generator at ``batch``, on inpainting (half the pixels); and the
    minor page faults per image and step of each (``faults_*``, those of its fastest repeat)."""
    from genprior.physics import make_physics
    from genprior.solvers.csgm import CSGM, CSGMConfig
    from genprior.solvers.peers import DeepinvCSGM, DeepinvCSGMConfig
    from genprior.zoo import load_generator

    G = load_generator(model)
    physics = make_physics("inpaint", G.image_shape, seed=0, mask_ratio=0.5)
    with torch.no_grad():
        y = physics(G.sample(batch, seed=5))
    n_dinv = 2
    inputs = G.sample_inputs(batch, generator=torch.Generator().manual_seed(0))
    free = {k: v.clone().requires_grad_(True) for k, v in inputs.items() if k in G.latent_names()}

    def bare() -> None:
        for _ in range(steps):
            G({**inputs, **free}).square().mean().backward()

    runs = {
        "deepinv": lambda: DeepinvCSGM(G, DeepinvCSGMConfig(steps=steps))(y[:n_dinv], physics),
        "genprior": lambda: CSGM(G, CSGMConfig(steps=steps, lr=0.01))(y, physics),
        "bare": bare,
    }
    # the three interleaved, repeat by repeat, so that a drift of the machine's speed hits all alike
    best = {k: (math.inf, 0) for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            best[k] = min(best[k], _timed(fn))
    per = {"deepinv": n_dinv * steps, "genprior": batch * steps, "bare": batch * steps}
    out = {k: best[k][0] / per[k] for k in runs}  # genprior's final evaluation pass counts against it
    out.update({f"faults_{k}": best[k][1] / per[k] for k in runs})
    return out


def speed_table(results: dict[str, dict[str, float]], steps: int, batch: int, tunables: str = "") -> str:
    """The speed section's table; ``tunables``: the ``GLIBC_TUNABLES`` it ran under (named in the text)."""
    lines = [
        f"Milliseconds per image and step ({steps} steps, one torch thread; deepinv one image at a "
        f"time, genprior and the bare pass at batch {batch}; minimum of the repeats; "
        + (f"`GLIBC_TUNABLES={tunables}`" if tunables else "glibc's default allocator settings")
        + "; minor page faults per image and step in brackets):\n",
        "| generator | deepinv CSGM | genprior CSGM | bare forward + backward | deepinv / genprior | "
        "deepinv / bare (the bound) | genprior / bare |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(r: dict[str, float], k: str) -> str:
        return f"{1e3 * r[k]:.2f} ({r.get('faults_' + k, 0.0):.0f})"

    for m, r in results.items():
        lines.append(
            f"| {m} | {cell(r, 'deepinv')} | {cell(r, 'genprior')} | {cell(r, 'bare')} | "
            f"{r['deepinv'] / r['genprior']:.2f}x | {r['deepinv'] / r['bare']:.2f}x | {r['genprior'] / r['bare']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder of the bench runs")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    p.add_argument("--steps", type=int, default=1000, help="steps of both CSGMs (default 1000)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate of both (deepinv's default 0.01)")
    p.add_argument("--count", type=int, default=24, help="images per set (the astronaut: 1)")
    p.add_argument("--task", default="inpaint", help="a bench task type (default inpaint)")
    p.add_argument("--level", default="0.8", help="its level, JSON (default 0.8: 80 %% missing)")
    p.add_argument(
        "--seeds", default="0", help="comma-separated bench seeds: each its own mask and starts (default 0)"
    )
    p.add_argument(
        "--join",
        type=Path,
        action="append",
        default=[],
        help="an earlier run's --out on the same grid with other seeds: its rows join the tables (repeatable)",
    )
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--speed-steps", type=int, default=0, help="steps of the speed section (0: skip it)")
    p.add_argument("--speed-batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--same-start",
        action="store_true",
        help="also run genprior's CSGM from deepinv's starts and give its paired difference",
    )
    p.add_argument("--md", type=Path, default=None, help="write the tables here")
    a = p.parse_args(argv)
    sets = [s.strip() for s in a.sets.split(",") if s.strip()]
    bad = [s for s in sets if s not in SETS]
    if bad:
        print(f"peers: unknown set {bad[0]!r}: choose from {', '.join(SETS)}", file=sys.stderr)
        return 2
    level = json.loads(a.level)
    try:
        seeds = tuple(int(v) for v in a.seeds.split(","))
    except ValueError:
        print(f"peers: --seeds {a.seeds!r}: give comma-separated integers such as 0,1,2", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    parts = []
    for s in sets:
        cfg = a.out / f"{s}.toml"
        cfg.write_text(config_text(s, a.steps, a.lr, a.count, a.task, level, seeds))
        try:
            ours, taken = bench.load_config(cfg).identity(), set(seeds)
            joined = [r for j in a.join for r in joined_rows(j, s, ours, taken)]
        except ValueError as e:
            print(f"peers: {e}", file=sys.stderr)
            return 2
        res = bench.run_bench(cfg, a.out / s, workers=a.workers, threads=1, progress=True)
        methods = [DEEPINV, OURS, OURS_UNIFORM, "ilo"]
        t = set_table(s, res.rows + joined, methods)
        if a.same_start:
            ss = same_start(cfg, res.rows, a.steps, a.lr)
            t += (
                f"\ngenprior's CSGM from deepinv's own starts (its seeds and draw), paired against "
                f"`{DEEPINV}`: {ss['mean']:+.3f} ± {ss['se']:.3f} dB, largest |difference| "
                f"{ss['max_abs']:.3f} dB ({ss['n']} images)\n"
            )
        print(t)
        parts.append(t)
    if a.speed_steps > 0:
        torch.set_num_threads(1)
        sp = {
            m: speed(m, a.speed_steps, a.speed_batch, a.repeats)
            for m in ("dcgan-faces-64", "fmnist-stylegan2-32")
        }
        t = speed_table(sp, a.speed_steps, a.speed_batch, os.environ.get("GLIBC_TUNABLES", ""))
        print(t)
        parts.append(t)
    if a.md is not None:
        head = (
            f"Task: {a.task} {a.level}; {a.steps} steps, lr {a.lr}, one restart for both CSGMs; "
            f"command: `python benchmarks/peers.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n\n"
        )
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(head + "\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
