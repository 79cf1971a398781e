"""What solving a folder costs beyond the solver: reading, measuring, writing (three files per
image, atomically) and the resume bookkeeping of `genprior solve --input-dir`.

For each (model, method), 64 generator samples (seed 7) are written as PNGs; then, in one
process, at each batch size:

* **solver alone**: the same batches of the same images, already in memory, measured and handed
  to the solver with the same seeds; only the solver calls are timed, after an untimed 2-image
  warm-up call;
* **folder solve**: :func:`genprior.folder.solve_folder` on the folder into an empty output
  folder, timed whole (model loading included).

The ratio folder / solver alone is the target of issue 12 (at most 1.15 at batch 32). Task:
inpainting with 80 % of the pixels missing, each method at its default settings, CPU.

    .venv/bin/python benchmarks/folder_overhead.py [--images 64] [--batches 32,1] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genprior.folder import FolderJob, derive_seed, folder_physics, solve_folder
from genprior.solvers.registry import get_method
from genprior.zoo import load_generator

CASES = (
    ("fmnist-stylegan2-32", "ilo"),
    ("fmnist-stylegan2-32", "csgm"),
    ("dcgan-faces-64", "ilo"),
    ("dcgan-faces-64", "csgm"),
    ("mnist-vae-20", "csgm"),
)


def solver_alone(job: FolderJob, G, x: torch.Tensor, names: list[str]) -> float:
    """Seconds of the solver calls alone on the folder's batches (measurements made outside)."""
    method = get_method(job.method)
    physics = folder_physics(job, tuple(x.shape[1:]), "cpu")
    total = 0.0
    for lo in range(0, len(names), job.batch_size):
        xb, nb = x[lo : lo + job.batch_size], names[lo : lo + job.batch_size]
        with torch.no_grad():
            y = physics.A(xb)
        config = method.make_config(job.settings, seed=derive_seed("solver", job.seed, nb[0]))
        solver = method.build(config, model=G)
        t0 = time.perf_counter()
        solver(y, physics, seeds=[derive_seed("start", job.seed, n) for n in nb])
        total += time.perf_counter() - t0
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batches", default="32,1", help="batch sizes, comma-separated")
    ap.add_argument("--cases", default=None, help="model:method pairs, comma-separated (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="keep the output folders here")
    args = ap.parse_args()
    cases = CASES if args.cases is None else [tuple(c.split(":")) for c in args.cases.split(",")]
    work = Path(tempfile.mkdtemp(prefix="folder-overhead-"))
    print(f"torch threads {torch.get_num_threads()}, {args.images} images, inpainting 80 % missing")
    print("| model | method | batch | solver alone (s) | folder solve (s) | ratio | s per image |")
    print("|---|---|---:|---:|---:|---:|---:|")
    try:
        for model, method in cases:
            G = load_generator(model)
            x = G.sample(args.images, seed=7).clamp(0, 1)
            names = [f"img{i:03d}.png" for i in range(args.images)]
            src = work / f"in-{model}"
            src.mkdir(exist_ok=True)
            for img, n in zip(x, names):
                arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
                Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(src / n)
            x = torch.stack(
                [torch.from_numpy(np.asarray(Image.open(src / n), dtype=np.float32) / 255) for n in names]
            )
            x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
            for bs in (int(b) for b in args.batches.split(",")):
                job = FolderJob(method, "inpaint", model, {"mask_ratio": 0.8}, {}, 0, bs)
                solver_alone(
                    FolderJob(method, "inpaint", model, {"mask_ratio": 0.8}, {}, 0, 2), G, x[:2], names[:2]
                )
                alone = solver_alone(job, G, x, names)  # after a 2-image warm-up of the same solver
                out = (args.out or work) / f"out-{model}-{method}-b{bs}"
                shutil.rmtree(out, ignore_errors=True)
                t0 = time.perf_counter()
                res = solve_folder(job, src, out, progress=False)
                wall = time.perf_counter() - t0
                assert len(res.done) == args.images and not res.failed
                print(
                    f"| {model} | {method} | {bs} | {alone:.2f} | {wall:.2f} | {wall / alone:.3f} | "
                    f"{wall / args.images:.3f} |",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
