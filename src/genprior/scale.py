"""Scale-out on Ray (an optional extra: ``pip install ray``; ``scripts/setup.sh`` installs it).

Work units (a folder's image batches, a bench grid's cells) become Ray tasks that return their
results to the driving process, which writes them: a multi-node cluster needs no shared disk.
Each task asks for a GPU when the device is CUDA and runs with the driver's number of torch
threads, so its results are those of a local run. A model given as a checkpoint file travels to
the workers through Ray's object store (the workers need not see the driver's disk).
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import UserError


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError("--engine ray needs Ray: pip install ray (scripts/setup.sh installs it)") from None
    return ray


def init_ray(address: str | None) -> Any:
    """``ray.init`` on the cluster at ``address`` (``auto``: the one this machine belongs to), or a
    local instance when None; a session already started is kept."""
    ray = _ray()
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise UserError(
                f"could not start or reach Ray at {address or 'a local instance'} ({e}): check --address"
            ) from None
    return ray


def _call(fn: Callable[..., Any], threads: int, *args: Any) -> Any:
    torch.set_num_threads(threads)
    return fn(*args)


def ray_map(
    fn: Callable[..., Any],
    tasks: Sequence[tuple[Any, ...]],
    device: torch.device | str,
    address: str | None,
    threads: int,
    shared: tuple[Any, ...] = (),
) -> Iterator[tuple[int, Any]]:
    """``fn(*task, *shared)`` for every task as Ray tasks; yields ``(index, result)`` as they
    finish. ``shared`` is put into the object store once and given to every task."""
    ray = init_ray(address)
    gpu = torch.device(device).type == "cuda"
    remote = ray.remote(num_cpus=threads, num_gpus=1 if gpu else 0, max_retries=0)(_call)
    refs_shared = [ray.put(s) for s in shared]
    running = {remote.remote(fn, threads, *t, *refs_shared): i for i, t in enumerate(tasks)}
    try:
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)
            i = running.pop(ready[0])
            yield i, ray.get(ready[0])
    finally:  # a stop (Ctrl-C, an error) ends the tasks still running by ending their processes:
        # an interrupted task can leave its worker half-way through an import (matplotlib's,
        # through deepinv's SSIM, then failed in the next task with `KeyError: 'Rectangle:kwdoc'`)
        for ref in running:
            ray.cancel(ref, force=True)


def model_blob(model: str | None) -> bytes | None:
    """The bytes of ``model`` when it is a checkpoint file (sent to the workers), else None."""
    if model is None or not Path(model).expanduser().is_file():
        return None
    return Path(model).expanduser().read_bytes()


@functools.lru_cache(maxsize=4)
def _load(model: str, needs: str, device: str, digest: str) -> Any:
    from .zoo import load_model

    return load_model(model, needs, device=device)


def worker_generator(model: str, needs: str, device: str, blob: bytes | None = None) -> Any:
    """The model ``model`` (of the kind a method ``needs``) in a worker process, loaded once per
    process; ``blob`` (the file's bytes) is written under the cache folder first, so the worker
    needs no access to the driver's disk."""
    if blob is None:
        return _load(model, needs, str(device), "")
    from .generators.stylegan2 import default_cache_dir

    digest = hashlib.sha256(blob).hexdigest()
    path = default_cache_dir() / "ray-models" / f"{digest[:40]}{Path(model).suffix}"
    if not path.is_file():
        from .io import write_bytes_atomic

        write_bytes_atomic(path, blob)
    return _load(os.fspath(path), needs, str(device), digest)
