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
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UserError

if TYPE_CHECKING:
    import torch


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
        workers: the demo's solves (one task, one method each) run side by side in this many
            processes; None: one per CPU core (1, in this process, on a GPU).
        threads: torch threads per process on a CPU (1: the table is the same on any machine
            with the same code, whatever its core count).
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
    import torch

    from .data import astronaut_face, heldout

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


def demo_jobs(cfg: DemoConfig) -> list[tuple[str, TaskSpec, str]]:
    """The demo's units of work, ``(model, task, method)`` in table order: each solves one task's
    measurements with one method, independent of the others (the same seeds give the same
    measurements in every job), so they can run in any process and in any order."""
    return [(name, spec, method) for name in cfg.models for spec in cfg.tasks for method in METHODS]


#: The demo's methods, in the order of the table's columns (``ILO - CSGM`` is the last one).
METHODS: tuple[str, ...] = ("CSGM", "ILO")


def run_job(cfg: DemoConfig, name: str, spec: TaskSpec, method: str) -> dict[str, Any] | str | None:
    """One unit of :func:`demo_jobs`: ``{"row", "truth", "measurement", "x_hat"}`` (images as
    numpy arrays), ``None`` when the task does not apply to the model (colour on a grey model), or
    the reason the model is skipped (its weights are not installed)."""
    import torch

    from . import metrics
    from .physics import make_physics, measurement_preview
    from .solvers.ilo import default_stages
    from .solvers.registry import get_method
    from .zoo import load_generator

    device = torch.device(cfg.device)
    try:
        G = load_generator(name, device=device)
    except UserError as e:
        return str(e)
    shape = G.image_shape
    if spec.color_only and shape[0] != 3:
        return None
    truth, source = _images_for(name, G, cfg.n_images, cfg.seed)
    truth = truth.to(device)
    physics = make_physics(spec.task, shape, seed=cfg.seed, device=device, **_physics_kwargs(spec, shape))
    torch.manual_seed(cfg.seed)
    y = physics(truth)
    ilo = get_method("ilo")
    ilo_cfg = ilo.make_config(
        {"steps": tuple(cfg.ilo_steps), "noise_floor": cfg.noise_floor, **ILO_SETTINGS.get(name, {})},
        seed=cfg.seed,
    )
    if method == "ILO":
        solver = ilo.build(ilo_cfg, model=G)
    else:
        rounds = 1 + len(ilo_cfg.stages if ilo_cfg.stages is not None else default_stages(G.num_stages))
        total = sum((list(cfg.ilo_steps) + [cfg.ilo_steps[-1]] * rounds)[:rounds])
        csgm = get_method("csgm")
        csgm_cfg = csgm.make_config(
            {"steps": cfg.csgm_steps or total, "restarts": cfg.csgm_restarts, "lr": 0.05}, seed=cfg.seed
        )
        solver = csgm.build(csgm_cfg, model=G)
    t0 = time.perf_counter()
    x_hat = solver(y, physics)
    dt = time.perf_counter() - t0
    p = metrics.psnr(x_hat, truth)
    row = {
        "model": name,
        "task": spec.name,
        "method": method,
        "psnr": float(p.mean()),
        "ssim": float(metrics.ssim(x_hat, truth).mean()),
        "psnr_per_image": p.tolist(),
        "meas_err": float(metrics.measurement_error(x_hat, y, physics).mean()),
        "time_s": dt,
    }
    preview = measurement_preview(y, physics, shape)
    return {
        "row": row,
        "source": source,
        "truth": truth.cpu().numpy(),
        "measurement": preview.cpu().numpy(),
        "x_hat": x_hat.detach().cpu().numpy(),
    }


def _job(cfg: DemoConfig, job: tuple[str, TaskSpec, str]) -> dict[str, Any] | str | None:
    if cfg.device == "cpu" or cfg.device.startswith("cpu:"):
        import torch

        torch.set_num_threads(cfg.threads)
    return run_job(cfg, *job)


def _gallery_job(path: Path, tasks: dict[str, dict[str, Any]], title: str) -> Path:
    save_gallery(path, tasks, title=title)
    return path


def run_demo(cfg: DemoConfig, progress: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo; returns the results table (also written under ``cfg.out``).

    The units of :func:`demo_jobs` (one task, one method) run side by side in ``cfg.workers``
    processes with ``cfg.threads`` torch threads each (on a CPU; one after the other in this
    process on a GPU, or with ``workers = 1``), and each model's gallery is drawn by a worker as
    soon as the model's last unit is in: small batches keep one core busy better than they share
    two, the units are small enough to keep every core busy to the end, and the table does not
    depend on the machine's core count or on the order the units finish in.
    """
    from tqdm.auto import tqdm

    from .io import write_json_atomic, write_text_atomic

    jobs = demo_jobs(cfg)
    on_cpu = cfg.device == "cpu" or cfg.device.startswith("cpu:")
    workers = cfg.workers or (min(len(jobs), os.cpu_count() or 1) if on_cpu else 1)
    bar = tqdm(total=len(jobs), desc="demo", unit="solve", disable=not progress, dynamic_ncols=True)
    t_all = time.perf_counter()
    results: dict[int, dict[str, Any] | str | None] = {}
    left = {name: sum(1 for j in jobs if j[0] == name) for name in cfg.models}
    panels: dict[str, dict[str, dict[str, Any]]] = {}
    sources: dict[str, str] = {}
    gallery_paths: dict[str, Path] = {}

    def take(i: int, result: dict[str, Any] | str | None) -> str | None:
        """Record job ``i``; the model's name once all its jobs are in and it has a gallery."""
        results[i] = result
        name, spec, method = jobs[i]
        if isinstance(result, dict):
            entry = panels.setdefault(name, {}).setdefault(spec.name, {})
            entry["truth"], entry["measurement"] = result["truth"], result["measurement"]
            entry[method] = result["x_hat"]
            sources[name] = result["source"]
        bar.set_postfix_str(f"{name} {spec.name} {method}")
        bar.update(1)
        left[name] -= 1
        if left[name] == 0 and name in panels:
            cfg.out.mkdir(parents=True, exist_ok=True)
            gallery_paths[name] = cfg.out / f"{name}-gallery.png"
            return name
        return None

    def gallery_args(name: str) -> tuple[Path, dict[str, dict[str, Any]], str]:
        tasks = {spec.name: panels[name][spec.name] for spec in cfg.tasks if spec.name in panels[name]}
        return gallery_paths[name], tasks, f"{name}: {sources[name]}"

    if workers == 1:
        for i, job in enumerate(jobs):
            done = take(i, _job(cfg, job))
            if done is not None:
                _gallery_job(*gallery_args(done))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, wait

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
            pending = {ex.submit(_job, cfg, job): i for i, job in enumerate(jobs)}
            drawing = []
            while pending:
                finished, _ = wait(pending, return_when="FIRST_COMPLETED")
                for fut in finished:
                    done = take(pending.pop(fut), fut.result())
                    if done is not None:
                        drawing.append(ex.submit(_gallery_job, *gallery_args(done)))
            for fut in drawing:
                fut.result()
    bar.close()
    elapsed = time.perf_counter() - t_all
    skipped = {jobs[i][0]: r for i, r in sorted(results.items()) if isinstance(r, str)}
    for name, reason in skipped.items():
        log(f"skipping {name}: {reason}")
    rows = [r["row"] for _, r in sorted(results.items()) if isinstance(r, dict)]
    if not rows:
        raise UserError("no demo model is available: run `bash scripts/setup.sh` to install them")
    galleries = [gallery_paths[name] for name in cfg.models if name in gallery_paths]
    table = results_markdown(rows)
    header = (
        f"# genprior demo\n\nILO vs CSGM, {cfg.n_images} images per model, seed {cfg.seed}, "
        f"ILO steps per round {list(cfg.ilo_steps)} (last repeated), noise floor {cfg.noise_floor!r}, "
        f"per-model ILO settings {ILO_SETTINGS}; CSGM as many steps as ILO in total unless set "
        f"({cfg.csgm_steps}); "
        f"{elapsed:.0f} s on {cfg.device}.\n\n"
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
    """A Markdown table: one line per model and task, PSNR/SSIM of each method, the difference and
    the seconds each method's solve took (the compute each side had; the steps are equal)."""
    methods = sorted({r["method"] for r in rows})
    keys: list[tuple[str, str]] = []
    for r in rows:
        if (r["model"], r["task"]) not in keys:
            keys.append((r["model"], r["task"]))
    head = (
        "| model | task | "
        + " | ".join(f"{m} PSNR (dB) | {m} SSIM" for m in methods)
        + " | ILO - CSGM (dB) | "
        + " | ".join(f"{m} s" for m in methods)
        + " |"
    )
    sep = "|" + "---|" * (3 + 3 * len(methods))
    lines = [head, sep]
    for model, task in keys:
        cell = {r["method"]: r for r in rows if r["model"] == model and r["task"] == task}
        vals = " | ".join(
            f"{cell[m]['psnr']:.2f} | {cell[m]['ssim']:.3f}" if m in cell else "- | -" for m in methods
        )
        gain = (
            f"{cell['ILO']['psnr'] - cell['CSGM']['psnr']:+.2f}" if "ILO" in cell and "CSGM" in cell else "-"
        )
        secs = " | ".join(f"{cell[m]['time_s']:.1f}" if m in cell else "-" for m in methods)
        lines.append(f"| {model} | {task} | {vals} | {gain} | {secs} |")
    return "\n".join(lines) + "\n"


def save_gallery(path: Path, tasks: dict[str, dict[str, Any]], title: str = "") -> None:
    """Rows truth / measurement / CSGM / ILO; a block of columns (one per image) for each task
    (each panel a ``(n, C, H, W)`` array or tensor on the CPU)."""
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
                img = np.clip(np.asarray(entry[rname][j]), 0, 1)
                if img.shape[0] == 1:
                    ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(img.transpose(1, 2, 0))
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
