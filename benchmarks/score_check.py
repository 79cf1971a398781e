"""Check a score model of a generator's state by itself (docs/sgilo.md, "The score models").

    OMP_NUM_THREADS=1 python benchmarks/score_check.py --model fmnist-stylegan2-32 \
        --score src/genprior/assets/models/score-fmnist-stylegan2-32-s2.pt --dataset fmnist --n 2000

1. The Fréchet distance to the training set in the data set's classifier space
   (:mod:`genprior.quality`), for the same number of images, of
   * the generator's own samples (``G.sample_native_inputs``);
   * the generator's states at the stage (with the shared tail latent where the score model
     covers it: StyleGAN2's ``w``) pushed through the tail with the other inputs (noise) of
     *another* sample: the best a model of these tensors can reach;
   * states drawn with the reverse SDE (``StateScoreModel.sample``), with the same tail inputs;
   * a Gaussian with the state's mean and scale (what the score model starts from), likewise;
   * for reference, the generator on independent draws of every input (``G.sample_inputs``: for
     StyleGAN2 independent Gaussianised W+ rows, the space ILO and PULSE search).
2. The held-out denoising loss by noise level, on generator states of a seed training never used,
   beside the loss of the Gaussian baseline (``eps = sqrt(1 - abar) u``, the network's output at
   initialisation).
"""

from __future__ import annotations

import argparse
import time

import torch

from genprior import quality as Q
from genprior.io import write_json_atomic
from genprior.score.model import StateScoreModel, modelled_tensors, split_modelled
from genprior.training.score import loss_by_level
from genprior.zoo import load_generator


def native(G, n, seed):
    return G.sample_native_inputs(n, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def images_from_states(G, S, modelled, seed):
    """The tail on modelled tensors (the state, then the shared tail latent if the model covers
    it) with the other inputs of another sample of the generator."""
    state, inputs = split_modelled(modelled, native(G, modelled[0].shape[0], seed), S.latents)
    return G.tail(S.stage, state, inputs).clamp(0, 1)


ROWS = ("generator", "generator states with other tail", "score model", "gaussian", "independent inputs")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--score", required=True)
    ap.add_argument(
        "--dataset",
        default="fmnist",
        help="classifier and training set of the FD (fmnist, mnist), or none: no FD (the face DCGAN)",
    )
    ap.add_argument("--n", type=int, default=2000, help="images per FD")
    ap.add_argument("--sde-steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--rows", default=",".join(ROWS), help=f"comma list of FD rows (default all: {', '.join(ROWS)})"
    )
    args = ap.parse_args(argv)

    G = load_generator(args.model)
    S = StateScoreModel.load(args.score)
    S.check_generator(G)
    k = S.stage
    out = {"model": args.model, "score": args.score, "stage": k, "n": args.n, "sde_steps": args.sde_steps}
    rows = []
    if args.dataset != "none":
        clf = Q.load_classifier(args.dataset)
        xtr, _ = Q.dataset_images(args.dataset, "train")
        mu_t, cov_t = Q.gaussian_stats(Q.features(clf, xtr))
    names = [r for r in args.rows.split(",") if r]
    if any(r not in ROWS for r in names):
        ap.error(f"--rows: choose from {', '.join(ROWS)}")
    for name in names if args.dataset != "none" else ():
        t0 = time.time()
        imgs = []
        for b in range(0, args.n, args.batch):
            nb = min(args.batch, args.n - b)
            if name.startswith("generator"):
                inputs = native(G, nb, 50_000 + b)
                with torch.no_grad():
                    states = modelled_tensors(G, k, inputs, S.latents)
                if name == "generator":
                    with torch.no_grad():
                        imgs.append(G(inputs).clamp(0, 1))
                    continue
            elif name == "independent inputs":
                g = torch.Generator().manual_seed(90_000 + b)
                with torch.no_grad():
                    imgs.append(G(G.sample_inputs(nb, generator=g)).clamp(0, 1))
                continue
            elif name == "score model":
                states = S.sample(nb, steps=args.sde_steps, seed=60_000 + b)
            else:
                g = torch.Generator().manual_seed(70_000 + b)
                states = S.denormalize(tuple(torch.randn((nb, *s), generator=g) for s in S.shapes))
            imgs.append(images_from_states(G, S, states, 80_000 + b))
        x = torch.cat(imgs)
        mu, cov = Q.gaussian_stats(Q.features(clf, x))
        fd = Q.frechet_distance(mu, cov, mu_t, cov_t)
        rows.append({"states": name, "fd": fd, "seconds": round(time.time() - t0, 1)})
        print(f"{name:>32}: FD {fd:.2f} ({args.n} images, {rows[-1]['seconds']} s)", flush=True)
    out["fd"] = rows
    levels = loss_by_level(S, G, n=1024)
    net = S.net
    zero = {k_: torch.zeros_like(v) for k_, v in net.state_dict().items()}
    trained = {k_: v.clone() for k_, v in net.state_dict().items()}
    net.load_state_dict(zero)
    base = loss_by_level(S, G, n=1024)
    net.load_state_dict(trained)
    print("denoising loss on held-out states (eps MSE):")
    print("| t | sigma | score model | Gaussian baseline |\n|---|---|---|---|")
    for a, b in zip(levels, base):
        print(f"| {a['t']:g} | {a['sigma']:.3g} | {a['loss']:.4f} | {b['loss']:.4f} |")
        a["gaussian_loss"] = b["loss"]
    out["loss_by_level"] = levels
    if args.json:
        write_json_atomic(args.json, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
