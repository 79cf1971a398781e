"""SGILO diagnostics for docs/sgilo.md (issue 10), on the six generator samples of
benchmarks/configs/sgilo_fmnist_calibration.toml and the bench's seeds and measurements.
Run from the repository root: python benchmarks/sgilo_start_check.py ..."""

import torch

from genprior.bench.cell import build_physics, derive_seed, get_generator, get_images
from genprior.bench.config import load_config
from genprior.score.model import modelled_tensors
from genprior.solvers.common import RunRecord
from genprior.solvers.sgilo import SGILO, SGILOConfig

cfg = load_config("benchmarks/configs/sgilo_fmnist_calibration.toml")
G = get_generator(cfg)
x, ids, labels = get_images(cfg, G)
for ti in range(3):
    task = cfg.tasks[ti]
    lv = task.levels[0]
    ps = build_physics(task, lv, G.image_shape, derive_seed("operator", 0, task.label, lv, 0), "cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        y = ps(x)
    s = SGILO(G, SGILOConfig(seed=derive_seed("solver", 0, "sgilo", task.label, lv, 0)))
    inputs, rec = s._warm_start(y, ps)
    S = s.score_model
    shared = S.latents
    with torch.no_grad():
        e0 = (ps.A(G(inputs)) - y).flatten(1).pow(2).mean(1)
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
