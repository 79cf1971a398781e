"""Quality of genprior's bundled generators (see docs/models.md for the numbers and how they were made).

    # (re)train the two feature classifiers and write them into genprior/assets/models/
    OMP_NUM_THREADS=2 python benchmarks/quality.py --train-classifiers
    # Fréchet distance + nearest-training-image distances of the bundled generators
    OMP_NUM_THREADS=2 python benchmarks/quality.py --json quality.json
    # ... of an exported StyleGAN2 (a training run's checkpoint: genprior train stylegan2 --export-only)
    OMP_NUM_THREADS=2 python benchmarks/quality.py --only fmnist --stylegan2 model.pt
    # ... of diffusion models, pixel or latent (DDIM, --ddpm-steps steps), beside the StyleGAN2 at the same n
    OMP_NUM_THREADS=2 python benchmarks/quality.py --only fmnist --ddpm fmnist-ddpm-32 --ddpm fmnist-ldm-32 -n 2000
    # sample grids for docs/models.md (docs/figures/samples_*.png); with --ddpm, of those models only
    OMP_NUM_THREADS=2 python benchmarks/quality.py --figures docs/figures
    OMP_NUM_THREADS=2 python benchmarks/quality.py --figures docs/figures --ddpm fmnist-ldm-32 --ddpm fmnist-ldm8-32

For each generator: ``n`` samples (default 10,000) against the training set in the penultimate
feature space of the data set's classifier (:mod:`genprior.quality`), the floor (real test images
vs the training set), and the mean L2 distance (pixels in [0, 1]) from 1,000 samples and from
1,000 test images to their nearest training image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from genprior import quality as Q
from genprior.io import write_json_atomic


def train_classifiers(epochs: dict[str, int], seed: int = 0) -> dict[str, dict]:
    out = {}
    for name, ep in epochs.items():
        xtr, ytr = Q.dataset_images(name, "train")
        xte, yte = Q.dataset_images(name, "test")
        t0 = time.time()
        model = Q.train_classifier(xtr, ytr, epochs=ep, seed=seed)
        secs = time.time() - t0
        acc = Q.accuracy(model, xte, yte)
        info = {
            "dataset": name,
            "train_images": len(xtr),
            "test_images": len(xte),
            "test_accuracy": acc,
            "epochs": ep,
            "seed": seed,
            "train_seconds": round(secs, 1),
            "image_size": int(xtr.shape[-1]),
        }
        path = Q.MODELS_DIR / Q.CLASSIFIERS[name]
        Q.save_classifier(path, model, info)
        print(f"{name}: test accuracy {acc:.4f} ({len(xte)} images), {secs:.0f} s -> {path}", flush=True)
        out[name] = info
    return out


def sampler_stylegan2(truncation: float = 1.0, path: Path | None = None):
    from genprior.generators.stylegan2 import load_stylegan2

    path = Q.MODELS_DIR / "fmnist-stylegan2-32.pt" if path is None else path
    if not path.is_file():
        return None
    g, latent_avg = load_stylegan2(str(path), "cpu")
    g.eval()
    dim = int(latent_avg.shape[-1])

    @torch.no_grad()
    def sample(b: int, seed: int) -> torch.Tensor:
        z = torch.randn(b, dim, generator=torch.Generator().manual_seed(10_000 + seed))
        kw = {"randomize_noise": True}
        if truncation < 1:
            kw.update(truncation=truncation, truncation_latent=latent_avg)
        img, _ = g([z], **kw)
        return (img + 1) / 2

    return sample


def sampler_ddpm(name_or_path: str, steps: int):  # a pixel or a latent diffusion model
    from genprior.zoo import load_diffusion

    model = load_diffusion(name_or_path)

    def sample(b: int, seed: int) -> torch.Tensor:
        return model.sample(b, steps=steps, seed=30_000 + seed)

    return sample


def sampler_vae():
    try:
        from genprior.zoo import load_generator

        gen = load_generator("mnist-vae-20")
    except Exception as e:
        print(f"mnist-vae-20: skipped ({type(e).__name__}: {e})", file=sys.stderr)
        return None
    gen.eval()

    @torch.no_grad()
    def sample(b: int, seed: int) -> torch.Tensor:
        return gen.sample(b, seed=20_000 + seed)

    return sample


def evaluate(name: str, dataset: str, sample, n: int) -> dict:
    torch.manual_seed(0)  # StyleGAN2's per-layer noise comes from the global RNG
    clf = Q.load_classifier(dataset)
    xtr, _ = Q.dataset_images(dataset, "train")
    xte, _ = Q.dataset_images(dataset, "test")
    t0 = time.time()
    samples = Q.generate(sample, n)
    if samples.shape[1:] != xtr.shape[1:]:
        raise SystemExit(
            f"{name}: samples have shape {tuple(samples.shape[1:])}, data {tuple(xtr.shape[1:])}"
        )
    rep = Q.quality_report(clf, samples, xtr, xte)
    rep.update(model=name, dataset=dataset, classifier_test_accuracy=clf.info.get("test_accuracy"),
               seconds=round(time.time() - t0, 1))  # fmt: skip
    print(json.dumps(rep), flush=True)
    return rep


def write_figures(folder: Path, ddpm: list[str] | None = None, ddpm_steps: int = 50) -> None:
    """64-sample grids: of the bundled generators and the training sets, or with ``ddpm`` only
    of those diffusion models (``samples_<name>.png``, DDIM with ``ddpm_steps`` steps)."""
    from genprior.training.stylegan2 import save_grid

    for ref in ddpm or []:
        out = folder / f"samples_{Path(ref).stem}.png"
        save_grid(out, sampler_ddpm(ref, ddpm_steps)(64, 99).clamp(0, 1), nrow=8, scale=2)
        print(f"wrote {out}")
    if ddpm:
        return
    torch.manual_seed(0)
    for name, ds, make in (
        ("fmnist-stylegan2-32", "fmnist", sampler_stylegan2),
        ("mnist-vae-20", "mnist", sampler_vae),
    ):
        s = make()
        if s is not None:
            save_grid(folder / f"samples_{name}.png", s(64, 99).clamp(0, 1), nrow=8, scale=2)
            print(f"wrote {folder / f'samples_{name}.png'}")
        x, _ = Q.dataset_images(ds, "train")
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:64]
        save_grid(folder / f"samples_{ds}-train.png", x[idx], nrow=8, scale=2)
        print(f"wrote {folder / f'samples_{ds}-train.png'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--train-classifiers", action="store_true", help="(re)train and save the two classifiers")
    p.add_argument("--epochs-fmnist", type=int, default=3)
    p.add_argument("--epochs-mnist", type=int, default=10)
    p.add_argument("--only", choices=["fmnist", "mnist"], default=None, help="one data set only")
    p.add_argument("-n", type=int, default=10_000, help="generator samples (default 10,000)")
    p.add_argument("--truncation", type=float, default=1.0, help="StyleGAN2 truncation psi (default 1: none)")
    p.add_argument(
        "--stylegan2",
        type=Path,
        default=None,
        metavar="FILE",
        help="measure this exported Fashion-MNIST StyleGAN2 (`genprior train stylegan2 --export`) instead of the bundled one",
    )
    p.add_argument(
        "--ddpm",
        action="append",
        default=[],
        metavar="NAME|FILE",
        help="also measure this diffusion model, pixel or latent (repeatable)",
    )
    p.add_argument("--ddpm-steps", type=int, default=50, help="its DDIM steps (default 50)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument(
        "--figures",
        type=Path,
        default=None,
        metavar="DIR",
        help="only write sample grids into DIR (with --ddpm: those models')",
    )
    args = p.parse_args(argv)
    results: dict = {}
    if args.figures is not None:
        write_figures(args.figures, args.ddpm, args.ddpm_steps)
        return 0
    if args.train_classifiers:
        ep = {"fmnist": args.epochs_fmnist, "mnist": args.epochs_mnist}
        if args.only:
            ep = {args.only: ep[args.only]}
        results["classifiers"] = train_classifiers(ep)
    else:
        results["generators"] = []
        todo = [
            (
                str(args.stylegan2 or "fmnist-stylegan2-32"),
                "fmnist",
                lambda: sampler_stylegan2(args.truncation, args.stylegan2),
            ),
            ("mnist-vae-20", "mnist", sampler_vae),
        ]
        for ref in args.ddpm:
            todo.append(
                (
                    f"{ref} (DDIM {args.ddpm_steps})",
                    "fmnist",
                    lambda ref=ref: sampler_ddpm(ref, args.ddpm_steps),
                )
            )
        for name, ds, make in todo:
            if args.only and ds != args.only:
                continue
            s = make()
            if s is None:
                print(f"{name}: not available, skipped", file=sys.stderr)
                continue
            results["generators"].append(evaluate(name, ds, s, args.n))
    if args.json:
        write_json_atomic(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
