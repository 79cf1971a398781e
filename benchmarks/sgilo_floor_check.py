"""Issue 10: does a discrepancy floor separate SGILO from ILO on the face DCGAN's rows? On the
cells of benchmarks/configs/sgilo_faces_s0.toml (its measurements and its ``sgilo-s0`` row's solver
seeds): ILO without a floor and with ``noise_floor="auto"``; SGILO's defaults, and with the
refinement's floor removed (``refine_tolerance`` 0: below Morozov's 1, which the config refuses,
so set after it is checked: a diagnostic only), both with the refinement on the shared
measurements at radius 0.2 (``refine_randomize`` off, ``refine_radius`` 0.2, as the docs' figures
were measured). PSNR per image, SGILO's calibration, seconds.

    OMP_NUM_THREADS=1 python benchmarks/sgilo_floor_check.py cs:1000
"""

import sys
import time

import torch

from genprior import metrics
from genprior.bench.cache import get_generator
from genprior.bench.cell import Cell, cell_measurements, cell_solver_seed
from genprior.bench.config import load_config
from genprior.solvers.ilo import ILO, ILOConfig
from genprior.solvers.sgilo import SGILO, SGILOConfig

torch.set_num_threads(1)
cfg = load_config("benchmarks/configs/sgilo_faces_s0.toml")
G = get_generator(cfg)
want = sys.argv[1:]  # rows as type:level, e.g. cs:1000
for task in cfg.tasks:
    for level in task.levels:
        if f"{task.type}:{level}" not in want:
            continue
        cell = Cell(task.label, level, "sgilo-s0", 0, 0)
        x, y, ps = cell_measurements(cfg, cell)
        seed = cell_solver_seed(cell)
        out = [f"{task.type} {level}"]
        for name in ("ilo", "ilo floor", "sgilo tol1", "sgilo tol0"):
            if name.startswith("ilo"):
                s = ILO(G, ILOConfig(seed=seed, noise_floor="auto" if name == "ilo floor" else None))
            else:
                s = SGILO(G, SGILOConfig(seed=seed, refine_randomize=False, refine_radius=0.2, holdout=0))
                if name == "sgilo tol0":
                    s.config.refine_tolerance = 0.0
            t0 = time.time()
            p = metrics.psnr(s(y, ps), x)
            cal = ""
            if name.startswith("sgilo"):
                post = s.last_samples
                cov = metrics.coverage(x, post.mean, post.std, metrics.unobserved(ps, x.shape)).mean()
                cal = f" cal {cov:.3f}"
            per = " ".join(f"{v:.1f}" for v in p.tolist())
            out.append(f"{name} {p.mean():.2f} [{per}]{cal} {time.time() - t0:.0f}s")
        print(" | ".join(out), flush=True)
