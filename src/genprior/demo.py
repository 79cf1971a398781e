"""``genprior demo``: ILO against CSGM on the bundled models, every task, in a few minutes.

For each available model (the bundled Fashion-MNIST StyleGAN2 on held-out test images; the face
DCGAN on its own samples when its weights are installed) and each task, both solvers reconstruct
the same measurements. The demo writes one gallery PNG per model (rows: truth, measurement,
CSGM, ILO) and a table of PSNR/SSIM per task and method (printed, and saved as Markdown and JSON).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import astronaut_face
from .errors import UserError


@dataclass
class TaskSpec:
    """One inverse problem of the demo: a task name and its ``make_physics`` keyword arguments."""

    name: str
    task: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    color_only: bool = False


DEFAULT_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("inpaint", "inpaint", {"mask_ratio": 0.8}),
    TaskSpec("superres x4", "superres", {"scale": 4}),
    TaskSpec("denoise", "denoise", {"noise_std": 0.2}),
    TaskSpec("cs", "cs", {"measurement_fraction": 0.1, "noise_std": 0.01}),
    TaskSpec("colorize", "colorize", {}, color_only=True),
)


#: ILO settings per model, on top of ``ILOConfig``'s defaults, chosen by measurement (docs/ilo.md):
#: the 32x32 StyleGAN2 does best with a tighter ball stopping at stage 3; the face DCGAN with the
#: default radius 0.4.
ILO_SETTINGS: dict[str, dict[str, Any]] = {
    "fmnist-stylegan2-32": {"radius": 0.2, "stages": (1, 2, 3)},
}


@dataclass
class DemoConfig:
    """Settings of the demo.

    Attributes:
        models: zoo names to try, in order; models whose weights are not installed are skipped
            with a message (the demo needs at least one).
        n_images: images per model (held-out test images or generator samples).
        ilo_steps: ILO steps per round (round 0 first; the last entry repeats).
        noise_floor: ILO's ``noise_floor`` (``"auto"``: Morozov's discrepancy principle with the
            physics' noise level, so that deeper rounds cannot win by fitting the noise).
        csgm_steps: CSGM steps; ``None`` gives CSGM the same total number of steps as ILO.
        csgm_restarts: CSGM random restarts.
        seed: seed of images, masks, noise and solver initialisations.
        out: output folder.
        workers: models run side by side in this many processes; None: one per model, up to the
            number of CPU cores (1 on a GPU).
        threads: torch threads per model on a CPU (1: the table is the same on any machine with
            the same code, whatever its core count).
    """

    models: tuple[str, ...] = ("fmnist-stylegan2-32", "dcgan-faces-64")
    n_images: int = 4
    ilo_steps: tuple[int, ...] = (75, 50, 50)
    noise_floor: str | float | None = "auto"
    csgm_steps: int | None = None
    csgm_restarts: int = 1
    seed: int = 0
    out: Path = Path("demo-out")
    device: str = "cpu"
    tasks: tuple[TaskSpec, ...] = DEFAULT_TASKS
    workers: int | None = None
    threads: int = 1


def _images_for(name: str, G: Any, n: int, seed: int) -> tuple[torch.Tensor, str]:
    from .data import heldout

    if name.startswith("fmnist"):
        x, _ = heldout("fmnist", n=n)
        return x, "held-out Fashion-MNIST test images"
    if name.startswith("mnist"):
        x, _ = heldout("mnist", n=n)
        return x, "held-out MNIST digits"
    c, h, w = G.image_shape
    if c == 3 and n >= 2:
        x = G.sample(n - 1, seed=seed + 1000).clamp(0, 1).cpu()
        x = torch.cat([x, astronaut_face(h)])
        plural = "s" if n > 2 else ""
        return (
            x,
            f"{n - 1} generator sample{plural} (seed {seed + 1000}) and scikit-image's astronaut (last column)",
        )
    return G.sample(n, seed=seed + 1000).clamp(0, 1), f"generator samples (seed {seed + 1000})"


def _physics_kwargs(spec: TaskSpec, shape: tuple[int, int, int]) -> dict[str, Any]:
    kw = dict(spec.kwargs)
    frac = kw.pop("measurement_fraction", None)
    if frac is not None:
        kw["measurements"] = max(1, int(frac * shape[0] * shape[1] * shape[2]))
    return kw


def run_model(cfg: DemoConfig, name: str) -> dict[str, Any] | str:
    """Every task of the demo on model ``name``: ``{"rows", "panels", "source"}``, or the reason
    the model is skipped (its weights are not installed)."""
    from . import metrics
    from .physics import make_physics, measurement_preview
    from .solvers.ilo import default_stages
    from .solvers.registry import get_method
    from .zoo import load_generator

    device = torch.device(cfg.device)
    ilo, csgm = get_method("ilo"), get_method("csgm")
    try:
        G = load_generator(name, device=device)
    except UserError as e:
        return str(e)
    shape = G.image_shape
    truth_all, source = _images_for(name, G, cfg.n_images, cfg.seed)
    truth = truth_all.to(device)
    rows: list[dict[str, Any]] = []
    panels: dict[str, dict[str, torch.Tensor]] = {}
    for spec in cfg.tasks:
        if spec.color_only and shape[0] != 3:
            continue
        physics = make_physics(spec.task, shape, seed=cfg.seed, device=device, **_physics_kwargs(spec, shape))
        torch.manual_seed(cfg.seed)
        y = physics(truth)
        ilo_cfg = ilo.make_config(
            {"steps": tuple(cfg.ilo_steps), "noise_floor": cfg.noise_floor, **ILO_SETTINGS.get(name, {})},
            seed=cfg.seed,
        )
        rounds = 1 + len(ilo_cfg.stages if ilo_cfg.stages is not None else default_stages(G.num_stages))
        total = sum((list(cfg.ilo_steps) + [cfg.ilo_steps[-1]] * rounds)[:rounds])
        csgm_cfg = csgm.make_config(
            {"steps": cfg.csgm_steps or total, "restarts": cfg.csgm_restarts, "lr": 0.05}, seed=cfg.seed
        )
        solvers = {"CSGM": csgm.build(csgm_cfg, model=G), "ILO": ilo.build(ilo_cfg, model=G)}
        entry = panels.setdefault(spec.name, {})
        entry["truth"] = truth.cpu()
        entry["measurement"] = measurement_preview(y, physics, shape).cpu()
        for method, solver in solvers.items():
            t0 = time.perf_counter()
            x_hat = solver(y, physics)
            dt = time.perf_counter() - t0
            entry[method] = x_hat.cpu()
            p = metrics.psnr(x_hat, truth)
            s = metrics.ssim(x_hat, truth)
            rows.append(
                {
                    "model": name,
                    "task": spec.name,
                    "method": method,
                    "psnr": float(p.mean()),
                    "ssim": float(s.mean()),
                    "psnr_per_image": p.tolist(),
                    "meas_err": float(metrics.measurement_error(x_hat, y, physics).mean()),
                    "time_s": dt,
                }
            )
    return {"rows": rows, "panels": panels, "source": source}


def _model_job(cfg: DemoConfig, name: str, threads: int) -> dict[str, Any] | str:
    torch.set_num_threads(threads)
    return run_model(cfg, name)


def run_demo(cfg: DemoConfig, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo; returns the results table (also written under ``cfg.out``).

    The models run side by side, one process each with ``cfg.threads`` torch threads (on a CPU;
    one after the other on a GPU, or with ``workers = 1``): their small batches keep one core
    busy better than they share two, and the table does not depend on the machine's core count.
    """
    from tqdm.auto import tqdm

    from .io import write_json_atomic, write_text_atomic

    device = torch.device(cfg.device)
    workers = cfg.workers or (1 if device.type != "cpu" else min(len(cfg.models), os.cpu_count() or 1))
    bar = tqdm(total=len(cfg.models), desc="demo", unit="model", disable=not progress, dynamic_ncols=True)
    t_all = time.perf_counter()
    results: dict[str, dict[str, Any] | str] = {}
    if workers == 1:
        for name in cfg.models:
            bar.set_postfix_str(name)
            results[name] = (
                _model_job(cfg, name, cfg.threads) if device.type == "cpu" else run_model(cfg, name)
            )
            bar.update(1)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
            futs = {ex.submit(_model_job, cfg, name, cfg.threads): name for name in cfg.models}
            for fut in as_completed(futs):
                results[futs[fut]] = fut.result()
                bar.set_postfix_str(futs[fut])
                bar.update(1)
    bar.close()
    elapsed = time.perf_counter() - t_all
    for name in cfg.models:
        if isinstance(results[name], str):
            log(f"skipping {name}: {results[name]}")
    done = {n: r for n, r in ((n, results[n]) for n in cfg.models) if not isinstance(r, str)}
    if not done:
        raise UserError("no demo model is available: run `bash scripts/setup.sh` to install them")
    rows = [row for r in done.values() for row in r["rows"]]
    panels = {n: r["panels"] for n, r in done.items()}
    sources = {n: r["source"] for n, r in done.items()}

    cfg.out.mkdir(parents=True, exist_ok=True)
    galleries = []
    for name, tasks in panels.items():
        path = cfg.out / f"{name}-gallery.png"
        save_gallery(path, tasks, title=f"{name}: {sources[name]}")
        galleries.append(path)
    table = results_markdown(rows)
    header = (
        f"# genprior demo\n\nILO vs CSGM, {cfg.n_images} images per model, seed {cfg.seed}, "
        f"ILO steps per round {list(cfg.ilo_steps)} (last repeated), noise floor {cfg.noise_floor!r}, "
        f"per-model ILO settings {ILO_SETTINGS}; CSGM as many steps as ILO in total unless set "
        f"({cfg.csgm_steps}); "
        f"{elapsed:.0f} s on {device}.\n\n"
    )
    write_text_atomic(cfg.out / "results.md", header + table)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    write_json_atomic(cfg.out / "results.json", {"settings": settings, "rows": rows, "time_s": elapsed})
    log("\n" + table)
    log(
        f"demo finished in {elapsed:.0f} s; wrote {', '.join(map(str, galleries))}, "
        f"{cfg.out / 'results.md'} and {cfg.out / 'results.json'}"
    )
    return {"rows": rows, "galleries": galleries, "time_s": elapsed}


def results_markdown(rows: list[dict[str, Any]]) -> str:
    """A Markdown table: one line per model and task, PSNR/SSIM of each method, and the winner."""
    methods = sorted({r["method"] for r in rows})
    keys: list[tuple[str, str]] = []
    for r in rows:
        if (r["model"], r["task"]) not in keys:
            keys.append((r["model"], r["task"]))
    head = (
        "| model | task | "
        + " | ".join(f"{m} PSNR (dB) | {m} SSIM" for m in methods)
        + " | ILO - CSGM (dB) |"
    )
    sep = "|" + "---|" * (3 + 2 * len(methods))
    lines = [head, sep]
    for model, task in keys:
        cell = {r["method"]: r for r in rows if r["model"] == model and r["task"] == task}
        vals = " | ".join(
            f"{cell[m]['psnr']:.2f} | {cell[m]['ssim']:.3f}" if m in cell else "- | -" for m in methods
        )
        gain = (
            f"{cell['ILO']['psnr'] - cell['CSGM']['psnr']:+.2f}" if "ILO" in cell and "CSGM" in cell else "-"
        )
        lines.append(f"| {model} | {task} | {vals} | {gain} |")
    return "\n".join(lines) + "\n"


def save_gallery(path: Path, tasks: dict[str, dict[str, torch.Tensor]], title: str = "") -> None:
    """Rows truth / measurement / CSGM / ILO; a block of columns (one per image) for each task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_path

    row_names = ["truth", "measurement", "CSGM", "ILO"]
    blocks = []
    for task, entry in tasks.items():
        n = entry["truth"].shape[0]
        blocks.append((task, n, entry))
    ncols = sum(n for _, n, _ in blocks)
    fig, axes = plt.subplots(
        len(row_names), ncols, figsize=(1.25 * ncols + 0.8, 1.3 * len(row_names) + 0.6), squeeze=False
    )
    col = 0
    for task, n, entry in blocks:
        for j in range(n):
            for i, rname in enumerate(row_names):
                ax = axes[i, col]
                img = entry[rname][j].clamp(0, 1)
                if img.shape[0] == 1:
                    ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(img.permute(1, 2, 0).numpy())
                ax.set_xticks([])
                ax.set_yticks([])
                if col == 0:
                    ax.set_ylabel(rname, fontsize=9)
                if i == 0 and j == 0:
                    ax.set_title(task, fontsize=9, loc="left")
            col += 1
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
