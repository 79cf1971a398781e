"""Issue 10 (docs/sgilo.md, "Calibrating the std map on held-out measurements"): on one cell of
benchmarks/configs/sgilo_astronaut_holdout.toml (its measurements and its ``sgilo`` row's solver
seed), SGILO with ``holdout = 0.1``: the factor, the calibration, and the quantiles of
``|error| / std`` (the chains' own std, before the factor) on the unobserved pixels beside those
of ``|miss| / spread`` on the held-out entries: do the held-out entries stand for the unobserved
pixels? Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/sgilo_holdout_check.py "random missing pixels" 0.9
"""

import sys

import torch

from genprior import metrics
from genprior.bench.cache import get_generator
from genprior.bench.cell import Cell, cell_measurements, cell_solver_seed
from genprior.bench.config import load_config
from genprior.solvers.sgilo import SGILO, SGILOConfig

torch.set_num_threads(1)
cfg = load_config("benchmarks/configs/sgilo_astronaut_holdout.toml")
G = get_generator(cfg)
level = float(sys.argv[2])
cell = Cell(sys.argv[1], int(level) if level > 1 else level, "sgilo", 0, 0)
x, y, ps = cell_measurements(cfg, cell)
s = SGILO(G, SGILOConfig(seed=cell_solver_seed(cell), holdout=0.1, holdout_refit=False))
s(y, ps)
post, scale = s.last_samples, s.last_record.extra["holdout_scale"][0]
where = metrics.unobserved(ps, tuple(x.shape)).expand_as(x)
print(f"factor {scale:.2f}, calibration {metrics.coverage(x, post.mean, post.std, where).item():.3f}")
qs = (0.5, 0.8, 0.9, 0.95)
z = ((x - post.mean).abs() / (post.std / scale).clamp_min(1e-8))[where]
print("unobserved pixels, |error| / std:", [round(torch.quantile(z, q).item(), 2) for q in qs])
K, held = post.num_samples, s.last_holdout.bool()
ax = ps.A(post.samples.flatten(0, 1)).view(K, *y.shape)
spread = (ax.var(0) * (1 + 1 / K)).sqrt().clamp_min(1e-8)
zh = ((ax.mean(0) - y).abs() / spread)[held]
print(
    f"held-out entries ({held.sum().item()}), |miss| / spread:",
    [round(torch.quantile(zh, q).item(), 2) for q in qs],
)
