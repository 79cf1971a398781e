"""SGILO diagnostics for docs/sgilo.md (issue 10), on the six generator samples of
benchmarks/configs/sgilo_fmnist_calibration.toml and the bench's seeds and measurements.
Run from the repository root: python benchmarks/sgilo_chains.py ..."""

import json
import sys

import torch

from genprior import metrics
from genprior.bench.cache import get_generator
from genprior.bench.cell import Cell, cell_measurements, cell_solver_seed
from genprior.bench.config import load_config
from genprior.solvers.sgilo import SGILO, SGILOConfig

# the settings docs/sgilo.md measured these diagnostics at (the stage-2 model, no refinement),
# unless the command line's settings say otherwise
PINNED = {"score_stage": 2, "refine_steps": 0, "holdout": 0}  # holdout: as measured (before 2026-12-06)
cfg = load_config("benchmarks/configs/sgilo_fmnist_calibration.toml")
G = get_generator(cfg)
task = cfg.tasks[int(sys.argv[1])]
x, y, ps = cell_measurements(cfg, Cell(task.label, task.levels[0], "sgilo", 0, 0))
over = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
for label in sys.argv[3:] or ["sgilo-16"]:
    seed = cell_solver_seed(Cell(task.label, task.levels[0], label, 0, 0))
    s = SGILO(G, SGILOConfig(**{**PINNED, "seed": seed, **over}))
    xh = s(y, ps)
    r = s.last_record
    ce = torch.tensor(r.extra["chain_meas_err"])
    print(label, over, "psnr", metrics.psnr(xh, x).numpy().round(1))
    print(
        " start",
        [round(v, 4) for v in r.extra.get("start_meas_err", [])],
        "fit",
        [round(v, 4) for v in r.extra.get("fit_meas_err", [])],
    )
    print(
        " L",
        [round(v, 1) for v in r.extra["lik_curvature"]],
        "Lp",
        [round(v, 1) for v in r.extra.get("prior_curvature", [])],
    )
    print(" final step", [f"{v:.2e}" for v in r.extra.get("final_step", [])])
    print(
        " chain err (K x B) median/max per image",
        ce.median(0).values.numpy().round(4),
        ce.max(0).values.numpy().round(4),
    )
    for lvl in r.rounds[-1]["levels"][::3]:
        print("  level", round(lvl["sigma"], 3), [round(v, 4) for v in lvl["meas_err"]])
