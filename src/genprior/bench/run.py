"""Running a bench grid: the cells still to do, in this process or in worker processes, each
stored the moment it is finished; then the tables and plots of every cell's rows."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..resume import UnitStore
from .cache import device_of, get_generator, get_images
from .cell import Cell, build_physics, cells_of, code_fingerprint, method_model, run_cell
from .config import FORMAT, FORMAT_VERSION, BenchConfig, load_config
from .gallery import save_gallery
from .report import summarize, write_outputs


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def _cell_job(cfg_dict: dict[str, Any], cell: Cell) -> tuple[Cell, list[dict[str, Any]], float]:
    """Run one cell; runs in the main process, a worker process or a Ray task, and writes
    nothing (the driver stores what it returns)."""
    cfg = BenchConfig.from_dict(cfg_dict)
    t0 = time.perf_counter()
    devices = [torch.cuda.current_device()] if device_of(cfg).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # run_cell seeds torch: leave the caller's RNG alone
        rows = run_cell(cfg, cell)
    return cell, rows, time.perf_counter() - t0


@dataclass
class BenchResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    executed: int
    skipped: int
    files: list[Path]
    #: stored cells run again because the code they depend on changed
    stale: int = 0


def _prepare_out(out: Path, cfg: BenchConfig, resume: bool, config_text: str | None) -> Path:
    from ..io import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    cells_dir = out / "cells"
    meta_path = out / "config.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            old_hash = meta.get("hash")
        except (OSError, ValueError):
            old_hash = None
        if old_hash not in (cfg.hash(), cfg.hash_before_2026_12_06()):
            raise UserError(
                f"{out} holds the results of a different bench config (or of other generator weights): "
                "use another --out directory or delete that one"
            )
        if not resume and cells_dir.is_dir():
            UnitStore(cells_dir, cfg.hash()).clear()
    elif out.is_dir() and any(out.iterdir()) and not cells_dir.is_dir():
        raise UserError(f"{out} is not empty and holds no bench results: use a new or empty --out directory")
    cells_dir.mkdir(exist_ok=True)
    write_json_atomic(
        meta_path,
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "hash": cfg.hash(),
            "config": cfg.identity(),
            "config_text": config_text,
        },
    )
    return cells_dir


def run_bench(
    config: str | os.PathLike | BenchConfig,
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    resume: bool = True,
    threads: int = 1,
    progress: bool = True,
    on_cell_done: Callable[[Cell, int], None] | None = None,
    config_text: str | None = None,
    engine: str = "local",
    address: str | None = None,
) -> BenchResult:
    """Run (or finish) a benchmark and write its tables and plots into ``out_dir``.

    Args:
        config: a config file path or an already validated :class:`BenchConfig`.
        workers: cells run in this many processes (spawned); 1 runs them in this process.
        resume: keep the finished cells found in ``out_dir`` (same config only); False runs all.
        threads: torch threads per cell (the same in every process, so the results do not depend
            on ``workers``).
        on_cell_done: called as ``on_cell_done(cell, n_done)`` after each newly finished cell has
            been stored (tests use it to interrupt a run).
        engine: ``"local"`` (this process, or ``workers`` processes) or ``"ray"``: every cell a Ray
            task (on the cluster at ``address``, else a local Ray instance) with ``threads`` CPUs and
            a GPU when the grid runs on CUDA; the cells come back here to be stored.
    """
    text = config_text
    if not isinstance(config, BenchConfig):
        path = Path(config)
        cfg = load_config(path)
        text = path.read_text(encoding="utf-8", errors="replace")
    else:
        cfg = config
    if workers < 1:
        raise UserError(f"--workers {workers}: give at least 1")
    if engine not in ("local", "ray"):
        raise UserError(f"unknown engine {engine!r}: use local or ray")
    if engine == "ray" and workers != 1:
        raise UserError(
            "--workers is for the local engine: Ray runs as many cells at once as its cluster has room for"
        )
    if threads < 1:
        raise UserError(f"--threads {threads}: give at least 1")
    out = Path(out_dir)

    # validate everything that can fail before any cell runs: weights, images, physics, solvers
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        G = get_generator(cfg)
        x_all, _, _ = get_images(cfg, G)
        if cfg.image_count() == 0 or len(x_all) == 0:
            raise UserError("the config selects no images")
        for t in cfg.tasks:
            for lv in t.levels:
                build_physics(t, lv, G.image_shape, 0, "cpu")
        for m in cfg.methods:  # a method's own model must make the grid's images
            own = method_model(cfg, m)
            if own is not None and tuple(own.image_shape) != tuple(G.image_shape):
                raise UserError(
                    f"method {m.label!r}: model {m.model} makes {tuple(own.image_shape)} images but the grid's "
                    f"are {tuple(G.image_shape)}: give a model of the same image shape"
                )
        if cfg.lpips:
            from ..losses.lpips import lpips_distance

            try:
                lpips_distance(x_all[:1], x_all[:1], net=cfg.lpips_net)
            except UserError:
                raise
            except Exception as e:
                raise UserError(
                    f"LPIPS ({cfg.lpips_net}) is not usable here ({type(e).__name__}: {e}): set lpips = false"
                ) from None
        cells_dir = _prepare_out(out, cfg, resume, text)
        all_cells = cells_of(cfg)
        done: dict[Cell, list[dict[str, Any]]] = {}
        h = cfg.hash()
        code = {m.label: code_fingerprint(cfg, m.label) for m in cfg.methods}
        stale = 0
        for unit in UnitStore(cells_dir, h):
            try:
                cell = Cell(**unit.data["cell"])
                rows_ = list(unit.data["rows"])
            except (KeyError, TypeError):
                continue  # damaged: the cell is run again
            if cell.method in code and unit.code != code[cell.method]:
                stale += 1  # computed by other code: run it again
                continue
            done[cell] = rows_
        pending = [c for c in all_cells if c not in done]
        skipped = len(all_cells) - len(pending)
        executed = _run_cells(
            cfg, pending, cells_dir, workers, threads, progress, done, on_cell_done, engine, address
        )
    finally:
        torch.set_num_threads(old_threads)

    rows = [r for c in all_cells for r in done[c]]
    summary = summarize(rows)
    files = write_outputs(out, cfg, rows, summary)
    save_gallery(out / "gallery.png", cfg, rows)  # the grid's first image, every task and method
    files.append(out / "gallery.png")
    return BenchResult(out, rows, summary, executed, skipped, files, stale)


def _run_cells(
    cfg: BenchConfig,
    pending: list[Cell],
    cells_dir: Path,
    workers: int,
    threads: int,
    progress: bool,
    done: dict[Cell, list[dict[str, Any]]],
    on_cell_done: Callable[[Cell, int], None] | None,
    engine: str = "local",
    address: str | None = None,
) -> int:
    from tqdm.auto import tqdm

    if not pending:
        return 0
    bar = tqdm(total=len(pending), disable=not progress, unit="cell", desc="bench", dynamic_ncols=True)
    n = 0
    cfg_dict = cfg.to_dict()
    store = UnitStore(cells_dir, cfg.hash())

    def finished(cell: Cell, rows: list[dict[str, Any]], wall: float) -> None:
        nonlocal n
        data = {"cell": dataclasses.asdict(cell), "wall_s": wall, "rows": rows}
        store.save(cell.key, data, code_fingerprint(cfg, cell.method))
        done[cell] = rows
        n += 1
        bar.set_postfix_str(f"{cell.task} {cell.level} {cell.method}", refresh=False)
        bar.update(1)
        if on_cell_done is not None:
            on_cell_done(cell, n)

    try:
        if engine == "ray":
            from ..scale import ray_map

            tasks = [(cfg_dict, c) for c in pending]
            for _, (cell, rows, wall) in ray_map(_cell_job, tasks, device_of(cfg), address, threads):
                finished(cell, rows, wall)
        elif workers == 1:
            for cell in pending:
                _, rows, wall = _cell_job(cfg_dict, cell)
                finished(cell, rows, wall)
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(threads,)
            ) as ex:
                futs = [ex.submit(_cell_job, cfg_dict, c) for c in pending]
                try:
                    for fut in as_completed(futs):
                        finished(*fut.result())
                except BaseException:
                    for f in futs:
                        f.cancel()
                    raise
    finally:
        bar.close()
    return n
