"""Seconds per image of a latent solver on several latent models, measured in one process
(docs/diffusion.md, "A larger latent"): each model in turn, ``--repeats`` rounds, on the first
``--images`` held-out Fashion-MNIST images as one batch, at 80 % missing pixels (noiseless: the
fits run all their steps) and at CS m = 200 with noise 0.01 (the fits stop at their floor).

    OMP_NUM_THREADS=1 python benchmarks/latent_model_speed.py [--models fmnist-ldm-32,fmnist-ldm8-32]
"""

from __future__ import annotations

import argparse
import time

import torch

from genprior.data import heldout
from genprior.metrics import measurement_error
from genprior.physics import make_physics
from genprior.solvers.registry import make_solver
from genprior.zoo import load_diffusion

TASKS = {
    "80 % missing": ("inpaint", {"mask_ratio": 0.8}),
    "CS m = 200, noise 0.01": ("cs", {"measurements": 200, "noise_std": 0.01}),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="fmnist-ldm-32,fmnist-ldm8-32", help="comma-separated latent models")
    p.add_argument("--method", default="resample", help="a latent method of the table")
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    names = [n for n in args.models.split(",") if n]
    models = {n: load_diffusion(n) for n in names}
    x = heldout("fmnist", args.images, size=32)[0]
    print(f"{args.method}, {args.images} images, torch threads {torch.get_num_threads()}")
    print("| task | " + " | ".join(names) + " | ratio to the first |")
    print("|---|" + "---:|" * (len(names) + 1))
    for label, (task, kw) in TASKS.items():
        ph = make_physics(task, (1, 32, 32), seed=0, **kw)
        y = ph(x)
        secs: dict[str, list[float]] = {n: [] for n in names}
        errs: dict[str, float] = {}
        for _ in range(args.repeats):
            for n in names:
                t = time.perf_counter()
                out = make_solver(args.method, models[n], seed=0)(y, ph)
                secs[n].append((time.perf_counter() - t) / len(x))
                errs[n] = float(measurement_error(out, y, ph).mean())
        best = {n: min(v) for n, v in secs.items()}
        cells = [f"{best[n]:.2f} s (residual {errs[n]:.1e})" for n in names]
        ratios = ", ".join(f"{best[n] / best[names[0]]:.2f}" for n in names[1:])
        print(f"| {label} | " + " | ".join(cells) + f" | {ratios} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
