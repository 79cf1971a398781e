"""Issue 10 (docs/sgilo.md, "What is left"): how closely SGILO's refined chains reproduce clean,
fully observed Fashion-MNIST training images (the generator's range plus the refinement's l1
balls), as the RMS per-pixel residual of each chain and of the mean, and ILO's beside it. Run
from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/sgilo_range_residual.py 8
"""

import sys
import time

import numpy as np
import torch
from deepinv.physics import Inpainting

from genprior.data import load_fashion_mnist
from genprior.solvers.ilo import ILO, ILOConfig
from genprior.solvers.sgilo import SGILO, SGILOConfig
from genprior.zoo import load_generator

torch.set_num_threads(1)
n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
images, _ = load_fashion_mnist("train", as_float=True)
x = torch.from_numpy(images[np.random.default_rng(123).permutation(len(images))[:n]]).unsqueeze(1)
G = load_generator("fmnist-stylegan2-32")
physics = Inpainting(img_size=(1, 32, 32), mask=torch.ones(1, 32, 32))  # every pixel, no noise
y = physics.A(x)
t = time.time()
s = SGILO(G, SGILOConfig(seed=0, refine_radius=0.2, holdout=0))  # the defaults when the docs' figure ran
s(y, physics)
post = s.last_samples
res = post.samples - x.unsqueeze(0)
print(
    f"sgilo ({time.time() - t:.0f} s): RMS residual per chain {res.pow(2).mean().sqrt():.4f}, "
    f"of the mean {(post.mean - x).pow(2).mean().sqrt():.4f}"
)
t = time.time()
x_ilo = ILO(G, ILOConfig(radius=0.2, stages=(1, 2, 3), seed=0))(y, physics)
print(f"ilo ({time.time() - t:.0f} s): RMS residual {(x_ilo - x).pow(2).mean().sqrt():.4f}")
