"""ILO's relative l1 radius against CSGM, per image, on the face DCGAN.

Images: two generator samples (in range) and scikit-image's astronaut face (out of range).
Prints a Markdown table and writes it to --out.

    python benchmarks/ilo_radius.py --out docs/results/ilo_radius.md
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from datetime import date

import torch

from genprior import metrics
from genprior.demo import astronaut_face
from genprior.io import write_text_atomic
from genprior.physics import make_physics
from genprior.solvers import CSGM, ILO, CSGMConfig, ILOConfig
from genprior.zoo import load_generator

TASKS = {
    "inpaint 80%": ("inpaint", {"mask_ratio": 0.8}),
    "superres x4": ("superres", {"scale": 4}),
    "denoise 0.2": ("denoise", {"noise_std": 0.2}),
    "cs m=1200": ("cs", {"measurements": 1200, "noise_std": 0.01}),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="dcgan-faces-64")
    ap.add_argument("--radii", default="0.1,0.4,1.0,inf")
    ap.add_argument("--stages", default="2")
    ap.add_argument("--steps", default="150,200")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    G = load_generator(args.model)
    c, h, w = G.image_shape
    x = torch.cat([G.sample(2, seed=1000).clamp(0, 1), astronaut_face(h)])
    stages = tuple(int(s) for s in args.stages.split(","))
    steps = tuple(int(s) for s in args.steps.split(","))
    radii = [float(r) for r in args.radii.split(",")]
    lines = [
        f"ILO relative l1 radius vs CSGM on `{args.model}`: PSNR (dB) per image (sample 1, sample 2, astronaut).",
        f"ILO stages {stages}, steps {steps}; CSGM {sum(steps)} steps, lr 0.05.",
        f"`python benchmarks/ilo_radius.py {shlex.join(sys.argv[1:])}`,"
        f" {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, {date.today()}.",
        "",
        "| task | method | PSNR per image | mean |",
        "|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for label in args.tasks.split(","):
        task, kw = TASKS[label]
        physics = make_physics(task, (c, h, w), seed=0, **kw)
        torch.manual_seed(0)
        y = physics(x)
        solvers = [("CSGM", CSGM(G, CSGMConfig(steps=sum(steps), lr=0.05)))]
        solvers += [(f"ILO r={r:g}", ILO(G, ILOConfig(stages=stages, steps=steps, radius=r))) for r in radii]
        for name, s in solvers:
            t0 = time.perf_counter()
            p = metrics.psnr(s(y, physics), x)
            row = f"| {label} | {name} | {', '.join(f'{v:.2f}' for v in p.tolist())} | {p.mean():.2f} |"
            lines.append(row)
            print(row, f"({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.out:
        write_text_atomic(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
