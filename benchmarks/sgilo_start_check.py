"""SGILO diagnostics for docs/sgilo.md (issue 10), on the six generator samples of
benchmarks/configs/sgilo_fmnist_calibration.toml and the bench's seeds and measurements.
Run from the repository root: python benchmarks/sgilo_start_check.py ..."""

import torch

from genprior import metrics
from genprior.bench.cache import get_generator
from genprior.bench.cell import Cell, cell_measurements, cell_solver_seed
from genprior.bench.config import load_config
from genprior.score.model import modelled_tensors
from genprior.solvers.common import RunRecord
from genprior.solvers.sgilo import SGILO, SGILOConfig

cfg = load_config("benchmarks/configs/sgilo_fmnist_calibration.toml")
G = get_generator(cfg)
for task in cfg.tasks:
    cell = Cell(task.label, task.levels[0], "sgilo", 0, 0)
    x, y, ps = cell_measurements(cfg, cell)
    s = SGILO(G, SGILOConfig(score_stage=2, refine_steps=0, seed=cell_solver_seed(cell), holdout=0))
    inputs, rec = s._warm_start(y, ps)
    S = s.score_model
    shared = S.latents
    with torch.no_grad():
        e0 = metrics.measurement_error(G(inputs), y, ps)
        u0 = S.normalize(modelled_tensors(G, S.stage, inputs, shared))
    r = RunRecord(method="x")
    s._refit(u0, inputs, y, ps, shared, r)
    print(
        task.label,
        "round0",
        e0.numpy().round(4),
        "mean-w",
        [round(v, 4) for v in r.extra["start_meas_err"]],
        "fit",
        [round(v, 5) for v in r.extra["fit_meas_err"]],
    )
