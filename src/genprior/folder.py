"""Solving a folder of images: every image measured and reconstructed, in batches, resumable.

:func:`solve_folder` is the whole job; ``genprior solve --input-dir DIR --out-dir OUT`` calls it.

* **What decides an image's result**: the job (:class:`FolderJob`: method, settings, model, task,
  seed, batch size) and the file's name. The measurement operator comes from ``seed`` (one
  instrument for the folder: one mask, one CS matrix); the measurement noise of an image and,
  for the solvers that search a generator's latents, their starting point for it come from seeds
  derived from ``seed`` and the file's name; any other draw of the solver (Langevin noise,
  restarts of the projector's noise, and every draw of a diffusion solver, its start included)
  from ``seed`` and the name of its batch's first file, so a diffusion solver's answer for an
  image also depends on the batch it is in. Batches are a fixed partition of the sorted file list into
  runs of ``batch_size``, so a resumed run, a Ray run and an uninterrupted run solve the same
  batches with the same draws.
* **Only the driving process writes.** A batch is solved in this process or (``engine="ray"``) in
  a Ray task that returns its results; the driver then writes, per image, ``NAME.png`` (the
  reconstruction), ``NAME-compare.png`` (truth, measurement and reconstruction, labelled, scaled
  up without smoothing), for a posterior sampler with two samples or more ``NAME-std.png`` (its
  std map, white = the image's largest std, summarised in the record's ``posterior``) and
  ``NAME.json`` (the record), each atomically and the JSON last, and rewrites ``summary.csv``.
* **Resuming**: an image whose ``NAME.json`` exists is finished and is neither redone nor
  rewritten; a killed run (even ``kill -9``) started again with the same job solves the rest. A
  folder of another job is refused (``job.json`` holds its identity).
* **Bad files** (unreadable, the wrong size without ``resize``) get one line each and are
  skipped; the others finish; :attr:`FolderResult.failed` names them (the CLI then exits with 2).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bench.cell import derive_seed  # the bench's stable seeds, also for files
from .errors import UserError

FORMAT = "genprior-folder"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".npy")
ENGINES = ("local", "ray")
#: the temporary files of io.atomic_path (".NAME.RANDOM.SUFFIX"), left behind by a killed run
_TEMP = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.(png|json|csv)")
SUMMARY_COLUMNS = ("name", "status", "psnr", "ssim", "measurement_error", "batch", "solve_s", "error")


@dataclass(frozen=True)
class FolderJob:
    """What decides a folder's results; it checks itself (a bad value is a one-line UserError)."""

    method: str  # a method of the table (`genprior methods`)
    task: str  # inpaint, superres, denoise, cs or colorize
    model: str | None = None  # zoo name or checkpoint path; None for the methods that need none
    task_args: dict[str, Any] = field(default_factory=dict)  # make_physics' arguments (scale, noise_std, ...)
    settings: dict[str, Any] = field(default_factory=dict)  # the method's settings, as --set gives them
    seed: int = 0  # the operator's seed; with each file's name, its noise and start
    batch_size: int = 8  # images per solver call: the fixed partition of the sorted files
    resize: bool = False  # resize images to the generator's size instead of refusing them

    def __post_init__(self) -> None:
        from .physics.tasks import TASKS
        from .solvers.registry import get_method

        if self.task not in TASKS:
            raise UserError(f"unknown task {self.task!r}: choose one of {', '.join(TASKS)}")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise UserError(f"batch size {self.batch_size!r}: give an integer >= 1")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise UserError(f"seed {self.seed!r}: give an integer >= 0")
        method = get_method(self.method)
        if method.needs_model and self.model is None:
            raise UserError(f"method {self.method!r} needs a model: give a zoo name or a checkpoint path")
        if not method.needs_model and self.model is not None:
            raise UserError(f"method {self.method!r} uses no model: drop the model")
        method.make_config(self.settings, seed=self.seed)  # bad settings fail here

    def identity(self) -> dict[str, Any]:
        """The job as JSON (``job.json``); a mask tensor in ``task_args`` is kept as its digest."""
        d = dataclasses.asdict(self)
        d["task_args"] = {k: _jsonable(v) for k, v in self.task_args.items()}
        return d


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        import hashlib

        return "tensor:" + hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]
    return list(v) if isinstance(v, tuple) else v


@dataclass
class FolderResult:
    out_dir: Path
    done: list[str]  # file names solved by this call
    skipped: list[str]  # file names finished before this call
    failed: dict[str, str]  # file name -> the one-line reason
    solve_s: float  # seconds inside the solver, summed over this call's batches
    wall_s: float  # seconds of the whole call
    files: list[Path] = field(default_factory=list)


def list_images(input_dir: str | os.PathLike) -> list[Path]:
    """The image files of ``input_dir`` (by suffix, not recursive), sorted by name; two files with
    the same stem are refused (their outputs would share names)."""
    d = Path(input_dir)
    if not d.is_dir():
        raise UserError(f"input folder {d} does not exist or is not a folder: give a folder of images")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{d} holds no images ({', '.join(IMAGE_SUFFIXES)}): give a folder of images")
    seen: dict[str, Path] = {}
    for p in files:
        if p.stem in seen:
            raise UserError(f"{seen[p.stem].name} and {p.name} share the name {p.stem!r}: rename one of them")
        seen[p.stem] = p
    return files


# ---------------------------------------------------------------------------------------------
# one batch: measure, solve (runs in the driver or in a Ray task; writes nothing)
# ---------------------------------------------------------------------------------------------
def folder_physics(job: FolderJob, shape: Sequence[int], device: Any) -> Any:
    """The folder's operator: the task's physics with its seed derived from the job's seed (a
    mask given as a file's path is read here)."""
    from .physics import load_mask, make_physics

    kw = dict(job.task_args)
    if isinstance(kw.get("mask"), str):
        kw["mask"] = load_mask(kw["mask"], tuple(shape))
    return make_physics(job.task, tuple(shape), seed=derive_seed("operator", job.seed), device=device, **kw)


def result_label(method: str, psnr: float | None) -> str:
    """The reconstruction's label in a comparison picture."""
    return f"{method}, PSNR {psnr:.2f} dB" if psnr is not None else method


def solve_batch(
    job: FolderJob, names: Sequence[str], x: torch.Tensor, first_name: str, generator: Any, device: Any
) -> tuple[list[dict[str, Any]], float]:
    """Measure and reconstruct one batch ``x`` (B, C, H, W) of files ``names``; ``first_name`` is
    the first file of the batch in the partition (its solver seed). Returns per image
    ``{"name", "x_hat", "preview", "measurement_error", "psnr", "ssim"}`` (arrays on the CPU) and
    the seconds spent in the solver."""
    from . import metrics
    from .physics import measurement_preview
    from .solvers.common import GenerativeSolver
    from .solvers.registry import get_method

    method = get_method(job.method)
    x = x.to(device)
    shape = tuple(x.shape[1:])
    physics = folder_physics(job, shape, device)
    sigma = float(job.task_args.get("noise_std") or 0.0)
    with torch.no_grad():
        y = physics.A(x)
        if sigma > 0:
            noise = [
                torch.randn(
                    y.shape[1:], generator=torch.Generator().manual_seed(derive_seed("noise", job.seed, n))
                )
                for n in names
            ]
            y = y + sigma * torch.stack(noise).to(y.device, y.dtype)
    config = method.make_config(job.settings, seed=derive_seed("solver", job.seed, first_name))
    solver = method.build(config, model=generator, image_shape=shape, device=device)
    kw: dict[str, Any] = {}
    if isinstance(solver, GenerativeSolver):
        kw["seeds"] = [derive_seed("start", job.seed, n) for n in names]
    t0 = time.perf_counter()
    x_hat = solver(y, physics, **kw)
    solve_s = time.perf_counter() - t0
    with torch.no_grad():
        err = metrics.measurement_error(x_hat, y, physics)
        psnr, ssim = metrics.psnr(x_hat, x), metrics.ssim(x_hat, x)
        preview = measurement_preview(y, physics, shape)
    rec = getattr(solver, "last_record", None)
    post = getattr(rec, "posterior", None)
    if post is not None and post.num_samples < 2:
        post = None
    if post is not None:  # a posterior sampler's std map and its coverage of the true pixels
        cover = metrics.coverage(x, post.mean, post.std, metrics.unobserved(physics, tuple(x.shape)))
    out = []
    for i, n in enumerate(names):
        p = float(psnr[i])
        out.append(
            {
                "name": n,
                "x_hat": x_hat[i].detach().cpu().numpy(),
                "truth": x[i].detach().cpu().numpy(),
                "preview": preview[i].detach().cpu().numpy(),
                "measurement_error": float(err[i]),
                "psnr": p if np.isfinite(p) else None,
                "ssim": float(ssim[i]),
            }
        )
        if post is not None:
            out[-1]["std"] = post.std[i].detach().cpu().numpy()
            out[-1]["posterior"] = {"samples": post.num_samples, "calibration": float(cover[i])}
            if "holdout_scale" in rec.extra:
                out[-1]["posterior"]["holdout_scale"] = rec.extra["holdout_scale"][i]
    return out, solve_s


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------
def _prepare_out(out: Path, job: FolderJob) -> None:
    from .io import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    meta = out / "job.json"
    ident = {"format": FORMAT, "job": job.identity()}
    if meta.is_file():
        for p in out.iterdir():  # what a killed run was writing: its finished files are whole
            if _TEMP.fullmatch(p.name) and p.is_file():
                p.unlink()
        try:
            old = json.loads(meta.read_text())
        except (OSError, ValueError):
            old = None
        if old != json.loads(json.dumps(ident, default=str)):
            raise UserError(
                f"{out} holds the results of another folder job (method, settings, model, task, seed or "
                "batch size differ): use another --out-dir or delete that one"
            )
        return
    if any(out.iterdir()):
        raise UserError(f"{out} is not empty and holds no folder results: use a new or empty --out-dir")
    write_json_atomic(meta, ident)


def _finished(out: Path, files: list[Path]) -> dict[str, dict[str, Any]]:
    """The records of the files already solved (``NAME.json`` readable and naming the file)."""
    done = {}
    for f in files:
        p = out / f"{f.stem}.json"
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(rec, dict) and rec.get("file") == f.name:
            done[f.name] = rec
    return done


def _read(f: Path, shape: tuple[int, int, int] | None, resize: bool) -> torch.Tensor:
    from .io import read_image_file

    t = read_image_file(f, None if shape is None else shape[0], None if shape is None else shape[1:], resize)
    if shape is not None and tuple(t.shape[1:]) != shape:
        raise UserError(f"{f.name} is {tuple(t.shape[1:])}, not {shape}: give images of one size")
    return t


def _write_image_results(
    out: Path, job: FolderJob, r: dict[str, Any], f: Path, batch: int, solve_s: float, n_batch: int
) -> dict[str, Any]:
    from .io import save_comparison, save_image, save_std_map, write_json_atomic

    x_hat, truth, preview = (torch.tensor(r[k]) for k in ("x_hat", "truth", "preview"))
    save_image(out / f"{f.stem}.png", x_hat)
    psnr = r["psnr"]
    label = f"{job.method} {psnr:.2f} dB" if psnr is not None else job.method
    save_comparison(
        out / f"{f.stem}-compare.png", [("truth", truth), ("measurement", preview), (label, x_hat)]
    )
    extra: dict[str, Any] = {}
    if "std" in r:  # a posterior sampler's: NAME-std.png (white = the image's largest std)
        extra["posterior"] = {
            **r["posterior"],
            **save_std_map(out / f"{f.stem}-std.png", torch.tensor(r["std"])),
        }
    rec = {
        "file": f.name,
        "status": "done",
        "psnr": psnr,
        "ssim": r["ssim"],
        "measurement_error": r["measurement_error"],
        "batch": batch,
        "solve_s": solve_s / n_batch,
        "measurement_seed": derive_seed("noise", job.seed, f.name),
        "start_seed": derive_seed("start", job.seed, f.name),
        "written_by": os.getpid(),
        "job": job.identity(),
        **extra,
    }
    write_json_atomic(out / f"{f.stem}.json", rec)  # last: its presence means the image is finished
    return rec


def _write_summary(
    out: Path, files: list[Path], records: dict[str, dict[str, Any]], failed: dict[str, str]
) -> Path:
    from .io import write_text_atomic

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for f in files:
        if f.name in records:
            w.writerow({"name": f.name, **records[f.name], "error": ""})
        elif f.name in failed:
            w.writerow({"name": f.name, "status": "failed", "error": failed[f.name]})
    path = out / "summary.csv"
    write_text_atomic(path, buf.getvalue())
    return path


def solve_folder(
    job: FolderJob,
    input_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    device: torch.device | str = "cpu",
    engine: str = "local",
    address: str | None = None,
    progress: bool = True,
    on_batch_done: Callable[[int, list[str]], None] | None = None,
) -> FolderResult:
    """Reconstruct every image of ``input_dir`` into ``out_dir`` (see the module docstring).

    Args:
        engine: ``"local"`` solves the batches one after another in this process; ``"ray"`` runs
            them as Ray tasks (on the cluster at ``address``, or a local Ray instance), each asking
            for a GPU when ``device`` is CUDA, and writes their results here.
        on_batch_done: called as ``on_batch_done(batch_index, file_names)`` after a batch's files
            are written (tests use it to interrupt a run).
    """
    from tqdm.auto import tqdm

    from .solvers.registry import get_method

    t_start = time.perf_counter()
    if engine not in ENGINES:
        raise UserError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    device = torch.device(device)
    files = list_images(input_dir)
    out = Path(out_dir)
    G, shape = None, None
    if get_method(job.method).needs_model:
        from .zoo import load_model

        G = load_model(str(job.model), get_method(job.method).needs, device=device)
        shape = tuple(G.image_shape)
    if shape is not None:
        folder_physics(job, shape, "cpu")  # bad task arguments fail before anything is written
    _prepare_out(out, job)
    records = _finished(out, files)
    skipped = [f.name for f in files if f.name in records]
    failed: dict[str, str] = {}
    batches = [files[i : i + job.batch_size] for i in range(0, len(files), job.batch_size)]
    bar = tqdm(
        total=len(files),
        initial=len(skipped),
        disable=not progress,
        unit="image",
        desc="solve",
        dynamic_ncols=True,
    )

    def load(b: int) -> tuple[list[Path], torch.Tensor | None]:
        nonlocal shape
        good, xs = [], []
        for f in batches[b]:
            if f.name in records:
                continue
            try:
                t = _read(f, shape, job.resize)
            except UserError as e:
                failed[f.name] = str(e)
                print(f"genprior solve: skipped {f.name}: {e}", file=sys.stderr)
                bar.update(1)
                continue
            shape = shape or tuple(t.shape[1:])
            good.append(f)
            xs.append(t)
        return good, (torch.cat(xs) if xs else None)

    done: list[str] = []
    solve_total = 0.0

    def finished(b: int, good: list[Path], results: list[dict[str, Any]], solve_s: float) -> None:
        nonlocal solve_total
        solve_total += solve_s
        for f, r in zip(good, results):
            records[f.name] = _write_image_results(out, job, r, f, b, solve_s, len(good))
            done.append(f.name)
            bar.update(1)
        _write_summary(out, files, records, failed)
        if on_batch_done is not None:
            on_batch_done(b, [f.name for f in good])

    pending = [b for b in range(len(batches)) if any(f.name not in records for f in batches[b])]
    try:
        if engine == "local":
            for b in pending:
                good, x = load(b)
                if x is not None:
                    results, solve_s = solve_batch(
                        job, [f.name for f in good], x, batches[b][0].name, G, device
                    )
                    finished(b, good, results, solve_s)
        else:
            from .scale import model_blob, ray_map

            loaded = {b: load(b) for b in pending}
            work = [(b, good, x) for b, (good, x) in loaded.items() if x is not None]
            tasks = [(job, [f.name for f in good], x.numpy(), batches[b][0].name) for b, good, x in work]
            shared = (str(device), model_blob(job.model))
            for i, (results, solve_s) in ray_map(
                _ray_batch, tasks, device, address, torch.get_num_threads(), shared
            ):
                b, good, _ = work[i]
                finished(b, good, results, solve_s)
    finally:
        bar.close()
    summary = _write_summary(out, files, records, failed)
    return FolderResult(out, done, skipped, failed, solve_total, time.perf_counter() - t_start, [summary])


def _ray_batch(
    job: FolderJob, names: list[str], x: np.ndarray, first_name: str, device: str, blob: bytes | None
) -> tuple[list[dict[str, Any]], float]:
    """One batch in a Ray task: the model is loaded (once per worker process) there."""
    from .scale import worker_generator
    from .solvers.registry import get_method

    needs = get_method(job.method).needs
    G = worker_generator(job.model, needs, device, blob) if job.model is not None else None
    return solve_batch(job, names, torch.tensor(x), first_name, G, device)
