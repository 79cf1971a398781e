"""What the latent model's autoencoder can reach (docs/diffusion.md): its reconstruction PSNR on
the 300 held-out Fashion-MNIST test images (the floor of any latent solver on a clean image), and
the mean residual of that reconstruction on the benchmark's first ``--count`` images (8; the
benchmark has 48) under its tasks and the three images (0-based) where it is largest, beside the
floor ReSample's fits stop at under each (``LatentDiffusion.recon_floor``).
With ``--fp32 FILE`` (an export of the same training run in float32), also the largest change of a
noise prediction that the bundled float16 weights make. With ``--reach``, how far a latent can
explain the box's observed pixels at all: L-BFGS from each clean image's own encoding on its box
residual (as ReSample's fits measure it, the decoded image clamped to [0, 1]), and on how many
images the best latent found stays above the floor.

    OMP_NUM_THREADS=2 python benchmarks/autoencoder_floor.py [--model fmnist-ldm-32] [--count 8] [--fp32 FILE] [--reach]
"""

from __future__ import annotations

import argparse

import torch

from genprior import metrics
from genprior.data import heldout
from genprior.physics import make_physics
from genprior.zoo import load_diffusion

BOX = (8, 8, 24, 24)  # the benchmark's box, for its row and for --reach


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fmnist-ldm-32")
    p.add_argument("--count", type=int, default=8, help="the residuals on this many of the first test images")
    p.add_argument("--fp32", default=None, metavar="FILE", help="the same model exported in float32")
    p.add_argument(
        "--reach", action="store_true", help="the best latent's box residual, from each image's encoding"
    )
    args = p.parse_args(argv)
    m = load_diffusion(args.model)
    x = heldout("fmnist", size=32)[0]
    if not 1 <= args.count <= len(x):
        p.error(f"--count {args.count}: give 1 to {len(x)} (the held-out test images)")
    with torch.no_grad():
        r = m.decode(m.encode(x)).clamp(0, 1)
    psnr = metrics.psnr(r, x)
    print(
        f"reconstruction of {len(x)} held-out images: PSNR {psnr.mean():.2f} ± {psnr.std() / len(psnr) ** 0.5:.2f} dB, "
        f"MSE {float((r - x).pow(2).mean()):.2e}"
    )
    tasks = [
        ("80 % missing", {"mask_ratio": 0.8}, "inpaint"),
        ("box", {"box": BOX}, "inpaint"),
        ("super-resolution x4", {"scale": 4}, "superres"),
        ("super-resolution x8", {"scale": 8}, "superres"),
        ("denoising 0.2", {"noise_std": 0.2}, "denoise"),
    ] + [(f"cs m = {n}", {"measurements": n, "noise_std": 0.01}, "cs") for n in (50, 100, 200)]
    for label, kw, task in tasks:
        ph = make_physics(task, (1, 32, 32), seed=0, **kw)
        y = ph(x[: args.count])
        each = metrics.measurement_error(r[: args.count], y, ph)
        worst = each.argsort(descending=True)[:3].tolist()
        print(
            f"{label}: residual per measurement entry of the reconstruction, first {args.count} images: "
            f"{float(each.mean()):.2e} (largest on images {worst}); "
            f"ReSample's floor (recon_floor): {m.recon_floor(ph):.1e}"
        )
    if args.reach:
        reach(m, x[: args.count])
    if args.fp32:
        f = load_diffusion(args.fp32)
        g = torch.Generator().manual_seed(0)
        z = torch.randn((4, *m.latent_shape), generator=g)
        t = torch.tensor([10, 200, 500, 900])
        with torch.no_grad():
            d = float((m.eps(z, t) - f.eps(z, t)).abs().max())
            size = float(f.eps(z, t).abs().mean())
        print(
            f"float16 against float32: largest change of a noise prediction {d:.1e} (mean magnitude {size:.2f})"
        )
    return 0


def reach(m, x: torch.Tensor, rounds: int = 5, iters: int = 200) -> None:
    """The box residual per measurement entry of the best latent L-BFGS finds from each image's
    own encoding, against the floor ReSample's fits stop at."""
    ph = make_physics("inpaint", (1, 32, 32), seed=0, box=BOX)
    y, floor = ph(x), m.recon_floor(ph)
    with torch.no_grad():
        z = m.encode(x)
    z.requires_grad_(True)
    opt = torch.optim.LBFGS([z], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = metrics.measurement_error(m.decode(z).clamp(0, 1), y, ph).sum()
        loss.backward()
        return loss

    for _ in range(rounds):
        opt.step(closure)
    with torch.no_grad():
        each = metrics.measurement_error(m.decode(z).clamp(0, 1), y, ph)
    above = (each > floor).nonzero().flatten().tolist()
    ratios = ", ".join(f"{i}: {float(each[i]) / floor:.2f}x" for i in above)
    print(
        f"box: the best latent from each image's encoding ({rounds} x {iters} L-BFGS steps): residual "
        f"{float(each.mean()):.2e} on average, above the floor {floor:.2e} on {len(above)} of {len(x)} images"
        + (f" ({ratios})" if above else "")
        + f"; with every other image on the floor, the mean would be {float(each.clamp_min(floor).mean()):.2e}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
