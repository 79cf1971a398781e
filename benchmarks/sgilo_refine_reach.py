"""Issue 10 (docs/sgilo.md, "The refinement's radius"): on one cell of
benchmarks/configs/sgilo_astronaut_randomize.toml (its measurements and its ``sgilo-s0`` row's
solver seed), SGILO with each JSON override given, on top of radius 0.2 (the default when the
docs' figures ran): PSNR, calibration, the refinement's floor and each chain's measurement error
after it (does the refinement reach its floor?). Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/sgilo_refine_reach.py cs 1000 '{}' '{"refine_radius": 0.4}'
"""

import json
import sys
import time

import torch

from genprior import metrics
from genprior.bench.cache import get_generator
from genprior.bench.cell import Cell, cell_measurements, cell_solver_seed
from genprior.bench.config import load_config
from genprior.solvers.sgilo import SGILO, SGILOConfig

# the defaults until 2026-12-05 and -06, at which the docs' figures ran
AS_MEASURED = {"refine_radius": 0.2, "holdout": 0}
torch.set_num_threads(1)
cfg = load_config("benchmarks/configs/sgilo_astronaut_randomize.toml")
G = get_generator(cfg)
task, level = sys.argv[1], int(sys.argv[2])
cell = Cell(task, level, "sgilo-s0", 0, 0)
x, y, ps = cell_measurements(cfg, cell)
for over in [json.loads(a) for a in sys.argv[3:]] or [{}]:
    t = time.time()
    s = SGILO(G, SGILOConfig(**{"seed": cell_solver_seed(cell), **AS_MEASURED, **over}))
    x_hat = s(y, ps)
    post, rec = s.last_samples, s.last_record
    cal = metrics.coverage(x, post.mean, post.std, metrics.unobserved(ps, tuple(x.shape))).item()
    errs = " ".join(f"{v:.2g}" for v in torch.tensor(rec.extra["chain_meas_err"]).flatten().tolist())
    print(
        f"{over}: psnr {metrics.psnr(x_hat, x).item():.2f} cal {cal:.3f} floor {rec.extra['refine_floor']:.1e} "
        f"chain errors [{errs}] {time.time() - t:.0f} s"
    )
