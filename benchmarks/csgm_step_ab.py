"""CSGM's step against the bare forward + backward pass, one piece at a time (issue 11, the speed
section of docs/benchmarks.md): the bare pass; plus the operator, the loss and Adam; plus the
per-step record; plus the best-iterate tracker; genprior's CSGM itself. Milliseconds per step at
batch 32, minimum of the repeats, with the minor page faults per step. Run from the repository root, e.g.:

    STEPS=50 REP=4 OMP_NUM_THREADS=1 python benchmarks/csgm_step_ab.py dcgan-faces-64
"""

import math
import os
import resource
import sys
import time

import torch

from genprior.losses import fidelity
from genprior.physics import make_physics
from genprior.solvers.common import BestTracker, RunRecord
from genprior.solvers.csgm import CSGM, CSGMConfig
from genprior.zoo import load_generator

torch.set_num_threads(1)
model = sys.argv[1] if len(sys.argv) > 1 else "dcgan-faces-64"
steps, repeats, B = int(os.environ.get("STEPS", 20)), int(os.environ.get("REP", 5)), 32
G = load_generator(model)
physics = make_physics("inpaint", G.image_shape, seed=0, mask_ratio=0.5)
with torch.no_grad():
    y = physics(G.sample(B, seed=5))
inputs = G.sample_inputs(B, generator=torch.Generator().manual_seed(0))


def loop(kind):
    free = {k: inputs[k].clone().requires_grad_(True) for k in G.latent_names()}
    opt = torch.optim.Adam(list(free.values()), lr=0.01, foreach=True)
    rec = RunRecord(method="ab")
    tracker = BestTracker(B)

    def run():
        for _ in range(steps):
            x = G({**inputs, **free})
            if kind == "bare":
                x.square().mean().backward()
                continue
            err = fidelity(physics.A(x), y, "mse")
            if kind != "loss":
                rec.log_step(err, err, B, 0)
            if kind == "loss + record + best":
                tracker.update(err, x, 0)
            opt.zero_grad(set_to_none=True)
            err.sum().backward()
            opt.step()

    return run


runs = {k: loop(k) for k in ("bare", "loss", "loss + record", "loss + record + best")}
runs["genprior CSGM"] = lambda: CSGM(G, CSGMConfig(steps=steps, lr=0.01))(y, physics)
for f in runs.values():
    f()
best = {k: (math.inf, 0) for k in runs}
for _ in range(repeats):
    for k, f in runs.items():
        f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        f()
        t, flt = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
        best[k] = min(best[k], (t, flt))
for k, (t, flt) in best.items():
    print(
        f"{k:20s} {1e3 * t / steps:8.2f} ms/step  {t / best['bare'][0]:.3f} of bare  faults/step {flt / steps:.0f}"
    )
