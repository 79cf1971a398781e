"""One cell of a bench grid: its measurements, its solve, its rows; and the code it depends on.

A cell is ``(task, level, method, image batch, seed)``. Its measurement operator and noise come
from a seed derived from ``(seed, task, level, batch)``, so every method sees the same measurements
of the same images (a paired comparison), and the solver's initialisation from ``(seed, method,
task, level, batch)``. This module and what it imports are the whole computation of a cell: its
:func:`code_fingerprint` covers them, and nothing here imports the report code.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import UserError
from ..io import png_b64
from ..resume import UnitStore
from ..resume import code_fingerprint as _fingerprint
from ..solvers.registry import DIFFUSION, METHODS
from .cache import device_of, get_classifier, get_generator, get_images
from .config import BenchConfig, MethodSpec, TaskSpec


@dataclass(frozen=True, eq=False)
class Cell:
    task: str
    level: Any
    method: str
    batch: int
    seed: int

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cell) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def key(self) -> str:
        return json.dumps([self.task, self.level, self.method, self.batch, self.seed])

    @property
    def file_name(self) -> str:
        return UnitStore.file_name(self.key)


def cells_of(cfg: BenchConfig) -> list[Cell]:
    """All cells, in the order the results are reported (task, level, method, seed, batch)."""
    n_batches = math.ceil(cfg.image_count() / cfg.batch_size)
    out = []
    for t in cfg.tasks:
        for lv in t.levels:
            for m in cfg.methods:
                if m.tasks is not None and t.label not in m.tasks:
                    continue
                for s in cfg.seeds:
                    for b in range(n_batches):
                        out.append(Cell(t.label, lv, m.label, b, s))
    return out


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from any JSON-able parts (independent of process and hash salt)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little") & 0x7FFFFFFF


def build_physics(
    task: TaskSpec, level: Any, image_shape: Sequence[int], seed: int, device: torch.device | str
) -> Any:
    """The physics of one (task, level); ``cs_scale = "unscaled"`` rescales deepinv's Gaussian
    matrix from ``N(0, 1/m)`` to ``N(0, 1)`` entries (Bora et al.'s code), noise unchanged."""
    from ..physics import make_physics

    params = dict(task.params)
    scale = params.pop("cs_scale", "deepinv")
    params[task.vary] = tuple(level) if isinstance(level, list) else level
    physics = make_physics(task.type, image_shape, seed=seed, device=device, **params)
    if scale == "unscaled":
        with torch.no_grad():
            physics.rescale(math.sqrt(int(params["measurements"])))
        physics.genprior_cs_scale = "unscaled"
    return physics


def cell_measurements(cfg: BenchConfig, cell: Cell) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The images of ``cell``'s batch (on the grid's device), its physics and its measurements
    ``y``: what every method of the cell sees (they depend on the seed, task, level and batch)."""
    dev = device_of(cfg)
    G = get_generator(cfg)
    x_all, _, _ = get_images(cfg, G)
    lo = cell.batch * cfg.batch_size
    x = x_all[lo : lo + cfg.batch_size].to(dev)
    task = next(t for t in cfg.tasks if t.label == cell.task)
    op_seed = derive_seed("operator", cell.seed, cell.task, cell.level, cell.batch)
    physics = build_physics(task, cell.level, G.image_shape, op_seed, dev)
    with torch.no_grad():
        y = physics(x)
    return x, y, physics


def cell_solver_seed(cell: Cell, seed_label: str | None = None) -> int:
    """The seed of ``cell``'s solver; rows that share a ``seed_label`` see the same draws."""
    return derive_seed("solver", cell.seed, seed_label or cell.method, cell.task, cell.level, cell.batch)


def _trim_heap() -> None:
    """Give the C heap's free memory back to the system (glibc's ``malloc_trim``; elsewhere nothing)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """The peak memory a block uses above what was in use at its start, in MiB (``peak_mb``): on
    CUDA the allocator's peak; elsewhere the peak resident set size of the process, read from
    ``/proc/self/statm`` every 5 ms by a thread (None where there is no ``/proc``), after glibc's
    ``malloc_trim`` has returned the memory freed earlier (without it, a block that reuses freed
    memory shows no growth). It is the peak of the whole batch, not of one image."""

    def __init__(self, device: Any, interval: float = 0.005) -> None:
        self.device, self.interval = torch.device(device), interval
        self.peak_mb: float | None = None

    @staticmethod
    def _rss() -> int | None:
        import os

        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self) -> PeakMemory:
        import threading

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        _trim_heap()
        self._base = self._rss()
        self._top = self._base
        self._stop = threading.Event()

        def watch() -> None:
            while not self._stop.wait(self.interval):
                self._top = max(self._top, self._rss() or 0)

        self._thread = threading.Thread(target=watch, daemon=True) if self._base is not None else None
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._top = max(self._top, self._rss() or 0)
            self.peak_mb = (self._top - self._base) / 2**20


def run_cell(cfg: BenchConfig, cell: Cell) -> list[dict[str, Any]]:
    """Solve one cell; returns its rows (one per image)."""
    from .. import metrics

    dev = device_of(cfg)
    G = get_generator(cfg)
    _, ids, labels = get_images(cfg, G)
    x, y, physics = cell_measurements(cfg, cell)
    lo = cell.batch * cfg.batch_size
    hi = lo + len(x)
    task = next(t for t in cfg.tasks if t.label == cell.task)
    mspec = next(m for m in cfg.methods if m.label == cell.method)
    method = METHODS[mspec.name]

    solver_seed = cell_solver_seed(cell, mspec.seed_label)
    torch.manual_seed(solver_seed)
    config = method.make_config(mspec.settings, seed=solver_seed)
    solver = method.build(
        config, model=method_model(cfg, mspec), image_shape=tuple(G.image_shape), device=dev
    )
    t0, c0 = time.perf_counter(), time.process_time()
    with PeakMemory(dev) as mem:
        x_hat = solver(y, physics)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    x_hat = x_hat.detach().to(dev).float()
    if tuple(x_hat.shape) != tuple(x.shape):
        raise RuntimeError(f"{cell.method} returned shape {tuple(x_hat.shape)} for images {tuple(x.shape)}")

    with torch.no_grad():
        cols: dict[str, list[Any]] = {
            "psnr": metrics.psnr(x_hat, x).tolist(),
            "ssim": metrics.ssim(x_hat, x).tolist(),
            "mse": metrics.mse(x_hat, x).tolist(),
            "meas_err": metrics.measurement_error(x_hat, y, physics).tolist(),
        }
        if cfg.lpips:
            from ..losses.lpips import lpips_distance

            cols["lpips"] = lpips_distance(x_hat, x, net=cfg.lpips_net).tolist()
        post = getattr(solver.last_record, "posterior", None)
        if post is not None:  # a posterior sampler: one sample's quality, the calibration
            one = post.samples[0].to(dev).float()
            cols["psnr_sample"] = metrics.psnr(one, x).tolist()
            if post.num_samples > 1:
                where = metrics.unobserved(physics, tuple(x.shape))
                cols["calibration"] = metrics.coverage(x, post.mean.to(dev), post.std.to(dev), where).tolist()
                scale = solver.last_record.extra.get("holdout_scale")
                if scale is not None:  # the std map as the samples drew it, before `holdout` scaled it
                    raw = post.std_raw.to(dev)
                    cols["calibration_raw"] = metrics.coverage(x, post.mean.to(dev), raw, where).tolist()
                cols["std_mean"] = post.std.flatten(1).mean(1).tolist()
        clf = get_classifier(cfg, G)
        if clf is not None:
            pred = clf(x_hat).argmax(1).cpu()
            truth = labels[lo:hi] if labels is not None else clf(x).argmax(1).cpu()
            cols["pred"] = pred.tolist()
            cols["correct"] = (pred == truth).float().tolist()
    rows = []
    for i in range(hi - lo):
        row: dict[str, Any] = {
            "task": task.label,
            "task_type": task.type,
            "level_param": task.vary,
            "level": cell.level,
            "method": mspec.label,
            "method_name": mspec.name,
            "seed": cell.seed,
            "batch": cell.batch,
            "image": lo + i,
            "image_id": ids[lo + i],
            "label": int(labels[lo + i]) if labels is not None else None,
        }
        for k in ("psnr", "ssim", "mse", "lpips", "meas_err", "pred", "correct"):
            row[k] = cols[k][i] if k in cols else None
        for k in ("psnr_sample", "calibration", "calibration_raw", "std_mean"):  # posterior samplers only
            if k in cols:
                row[k] = cols[k][i]
        row["recon_png"] = png_b64(x_hat[i])  # the reconstruction, 8-bit (gallery.png)
        row["time_s"] = elapsed / (hi - lo)
        row["cpu_s"] = cpu / (hi - lo)
        row["peak_mb"] = mem.peak_mb
        rows.append(row)
    return rows


def method_model(cfg: BenchConfig, mspec: MethodSpec) -> Any:
    """The model a method runs on: its own (``model = ...``), else the grid's generator; None for
    a method that needs none."""
    needs = METHODS[mspec.name].needs
    if not METHODS[mspec.name].needs_model:
        return None
    if needs == DIFFUSION and mspec.model is None:
        raise UserError(
            f"method {mspec.label!r} needs its diffusion model: set model = "
            f'"{"fmnist-ldm-32" if METHODS[mspec.name].module.endswith("latent") else "fmnist-ddpm-32"}" (or a file)'
        )
    if mspec.model is None:
        return get_generator(cfg)
    return get_generator(cfg, mspec.model, mspec.model_sha256, needs)


def code_fingerprint(cfg: BenchConfig, method_label: str) -> str:
    """The fingerprint of the code a method's cells run (:func:`genprior.resume.code_fingerprint`
    of this module, the solver's and the config's modules): a cell stored by other code is stale,
    and resuming runs it again."""
    m = METHODS[next(s.name for s in cfg.methods if s.label == method_label)]
    return _fingerprint((__name__, m.module, m.config.partition(":")[0]))
