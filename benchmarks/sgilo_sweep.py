"""SGILO diagnostics for docs/sgilo.md (issue 10), on the six generator samples of
benchmarks/configs/sgilo_fmnist_calibration.toml and the bench's seeds and measurements.
Run from the repository root: python benchmarks/sgilo_sweep.py ..."""

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
for o in sys.argv[1:]:
    over = json.loads(o)
    out = []
    for task in cfg.tasks:
        cell = Cell(task.label, task.levels[0], "sgilo", 0, 0)
        x, y, ps = cell_measurements(cfg, cell)
        s = SGILO(G, SGILOConfig(**{**PINNED, "seed": cell_solver_seed(cell), **over}))
        xh = s(y, ps)
        post = s.last_samples
        cal = metrics.coverage(x, post.mean, post.std, metrics.unobserved(ps, x.shape))
        ce = torch.tensor(s.last_record.extra["chain_meas_err"])
        out.append(
            f"{task.type}: psnr {metrics.psnr(xh, x).mean():.2f} cal {cal.mean():.3f} chain_err {ce.median():.4f}"
        )
    print(o, " | ".join(out), flush=True)
