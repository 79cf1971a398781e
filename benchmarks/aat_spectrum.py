"""The spectrum of ``A A^T`` for the benchmark's linear operators on 32x32 greyscale images: how
far each is from the ``A A^T = I`` that PSLD's gluing formula ``A^T y + (I - A^T A) x`` assumes
(docs/diffusion.md, the PSLD bullet; :mod:`genprior.physics.project`). ``A`` is built column by
column. Run from the repository root:

    OMP_NUM_THREADS=1 python benchmarks/aat_spectrum.py
"""

import torch

from genprior.physics import make_physics

SHAPE = (1, 32, 32)
n = SHAPE[1] * SHAPE[2]
rows = [
    ("superres", {"scale": 4}),
    ("superres", {"scale": 8}),
    ("cs", {"measurements": 50}),
    ("cs", {"measurements": 100}),
    ("cs", {"measurements": 200}),
    ("inpaint", {"mask_ratio": 0.8}),
]
print("| task | setting | measurements | smallest eigenvalue of A A^T | largest |")
print("|---|---|---:|---:|---:|")
for task, kw in rows:
    physics = make_physics(task, SHAPE, seed=0, **kw)
    dense = physics.A(torch.eye(n).view(n, *SHAPE)).flatten(1).T.double()  # (m, n)
    if task == "inpaint":  # deepinv keeps the image's shape: the observed pixels are the measurements
        dense = dense[dense.abs().sum(1) > 0]
    ev = torch.linalg.eigvalsh(dense @ dense.T)
    print(f"| {task} | {kw} | {dense.shape[0]} | {ev.min().item():.4g} | {ev.max().item():.4g} |")
