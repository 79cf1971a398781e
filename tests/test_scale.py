"""Scale-out on Ray: what a stopped map leaves behind."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def _task(mode: str, folder: str) -> int:
    """A Ray task: ``quick`` returns at once; ``hang`` notes its process and waits (a cell or a
    batch that a stop interrupts); ``pid`` says which process it ran in."""
    if mode == "hang":
        (Path(folder) / str(os.getpid())).touch()
        end = time.time() + 60
        while time.time() < end:  # Python code, as an import runs: an interrupt lands at once
            pass
    return -1 if mode == "quick" else os.getpid()


def test_a_stopped_map_ends_its_running_tasks_processes(tmp_path, ray_session):
    """Tasks still running when a map stops end with their processes, so no later task runs in a
    process a stop interrupted half-way (an interrupted import there failed the next task)."""
    from ray import cloudpickle

    from genprior.scale import ray_map

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import tests/
    d = str(tmp_path)
    tasks = [("quick", d), ("hang", d), ("hang", d)]
    run = ray_map(_task, tasks, "cpu", None, 1)
    assert next(run) == (0, -1)
    t0 = time.time()
    while len(os.listdir(d)) < 2 and time.time() - t0 < 120:
        time.sleep(0.2)
    hung = {int(p) for p in os.listdir(d)}
    assert len(hung) == 2
    run.close()  # the stop: the two hanging tasks are cancelled
    pids = {pid for _, pid in ray_map(_task, [("pid", d)] * 6, "cpu", None, 1)}
    assert pids and not pids & hung
