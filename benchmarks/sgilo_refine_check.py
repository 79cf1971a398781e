"""SGILO's refinement settings on the first 4 held-out Fashion-MNIST test images (docs/sgilo.md,
issue 10): ILO (the prior benchmark's settings) and SGILO on the stage-0 model with each JSON
override given, per row, PSNR of the mean, calibration, share of chains the refinement moved,
seconds. Run from the repository root:

    python benchmarks/sgilo_refine_check.py denoise '{"refine_tolerance": 1.0}' '{"refine_tolerance": 1.2}'

The first argument is the rows: ``cs`` (m = 25, 200), ``denoise`` (sigma 0.2) or ``both``. The
refinement fits the shared measurements (``refine_randomize`` off) at radius 0.2, as the docs'
figures were measured; an override may change either."""

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from genprior import metrics
from genprior.bench.cache import get_generator
from genprior.bench.cell import Cell, cell_measurements, cell_solver_seed
from genprior.bench.config import load_config
from genprior.solvers.ilo import ILO, ILOConfig
from genprior.solvers.sgilo import SGILO, SGILOConfig

ROWS = {
    "cs": '[[tasks]]\ntype = "cs"\nlevels = [25, 200]\nnoise_std = 0.01\n',
    "denoise": '[[tasks]]\ntype = "denoise"\nlevels = [0.2]\n',
}
HEAD = """name = "SGILO refinement check"
generator = "fmnist-stylegan2-32"
seeds = [0]
batch_size = 4
[images]
source = "heldout"
dataset = "fmnist"
count = 4
"""

AS_MEASURED = {"score_stage": 0, "refine_randomize": False, "refine_radius": 0.2, "holdout": 0}
torch.set_num_threads(1)
which = sys.argv[1]
rows = "".join(ROWS.values()) if which == "both" else ROWS[which]
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "check.toml"
    path.write_text(HEAD + rows + '[[methods]]\nname = "ilo"\n')
    cfg = load_config(path)
G = get_generator(cfg)
overrides = [json.loads(o) for o in sys.argv[2:]]
for task in cfg.tasks:
    for level in task.levels:
        cell = Cell(task.label, level, "sgilo", 0, 0)
        x, y, ps = cell_measurements(cfg, cell)
        seed = cell_solver_seed(cell)
        x_ilo = ILO(G, ILOConfig(radius=0.2, stages=(1, 2, 3), noise_floor="auto", seed=seed))(y, ps)
        line = [f"{task.type} {level}", f"ilo {metrics.psnr(x_ilo, x).mean():.2f}"]
        for over in overrides:
            t0 = time.time()
            s = SGILO(G, SGILOConfig(**{"seed": seed, **AS_MEASURED, **over}))
            x_hat = s(y, ps)
            post = s.last_samples
            cal = metrics.coverage(x, post.mean, post.std, metrics.unobserved(ps, x.shape)).mean()
            moved = s.last_record.extra.get("refined_share")
            share = "-" if moved is None else f"{sum(moved) / len(moved):.2f}"
            line.append(
                f"{over} {metrics.psnr(x_hat, x).mean():.2f} cal {cal:.2f} moved {share} {time.time() - t0:.0f}s"
            )
        print(" | ".join(line), flush=True)
