"""Scan Lasso's alpha per task and basis on images that the generative-prior benchmark does not use.

The configs `benchmarks/configs/fmnist_prior.toml`, `faces_prior.toml` and `faces_astronaut.toml`
run Lasso at a few alphas; this scan chose their range. It prints, per task level and basis, the
mean PSNR of each alpha and the time per batch:

    python benchmarks/lasso_alpha_scan.py fmnist     # held-out Fashion-MNIST test images 52-55
    python benchmarks/lasso_alpha_scan.py faces      # four face-DCGAN samples of seed 77

(The benchmark uses the first 48 held-out images, and DCGAN samples of seed 1.)
"""

from __future__ import annotations

import argparse
import time

import torch

from genprior import bench
from genprior.solvers.sparse import Lasso

SETS = {
    "fmnist": dict(
        tasks=[("inpaint", 0.8, {}), ("superres", 4, {}), ("superres", 8, {}), ("denoise", 0.2, {}),
               ("cs", 50, {"noise_std": 0.01}), ("cs", 200, {"noise_std": 0.01})],
        alphas=[1e-1, 1e-2, 1e-3, 1e-4, 1e-5],
    ),
    "faces": dict(
        tasks=[("inpaint", 0.8, {"noise_std": 0.01}), ("superres", 4, {"noise_std": 0.01}), ("superres", 8, {"noise_std": 0.01}),
               ("denoise", 0.2, {}), ("cs", 200, {"noise_std": 0.01}), ("cs", 2500, {"noise_std": 0.01})],
        alphas=[1e-2, 1e-3, 1e-4, 1e-5, 1e-6],
    ),
}  # fmt: skip


def images(which: str) -> torch.Tensor:
    if which == "fmnist":
        from genprior.data import heldout

        return heldout("fmnist", n=56, size=32)[0][52:56]
    from genprior.zoo import load_generator

    return load_generator("dcgan-faces-64").sample(4, seed=77).clamp(0, 1).cpu()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("which", choices=sorted(SETS))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    x = images(args.which)
    shape = tuple(x.shape[1:])
    spec = SETS[args.which]
    for task, level, params in spec["tasks"]:
        t = bench.TaskSpec(label=task, type=task, vary=bench.LEVEL_PARAM[task], levels=[level], params=params)
        physics = bench.build_physics(t, level, shape, 0, "cpu")
        y = physics(x)
        for basis in ("dct", "wavelet", "pixel"):
            cells = []
            for alpha in spec["alphas"]:
                t0 = time.perf_counter()
                xh = Lasso(shape, basis=basis, alpha=alpha, max_entries=200_000_000)(y, physics)
                psnr = (-10 * torch.log10(((xh - x) ** 2).flatten(1).mean(1))).mean().item()
                cells.append(f"{alpha:g}: {psnr:.2f} dB ({time.perf_counter() - t0:.1f} s)")
            print(f"{task} {level} {basis:8s} " + ", ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
