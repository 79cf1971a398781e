"""Train the 32x32 Fashion-MNIST StyleGAN2 (``genprior train stylegan2``).

The recipe of StyleGAN2 (Karras et al. 2020), scaled down so that it trains on a 2-core CPU:

* generator: :class:`genprior.generators.stylegan2.StyleGAN2Generator` with a small channel table,
  a short mapping network and grey (1-channel) output; discriminator: the residual
  :class:`genprior.generators.stylegan2_disc.StyleGAN2Discriminator`;
* non-saturating logistic loss; lazy R1 regularisation of D on real images every
  ``d_reg_every`` steps (weight ``r1_gamma / 2 * d_reg_every``); no path-length regulariser;
* style mixing with probability 0.9; an exponential moving average of G (``g_ema``, half-life
  ``ema_kimg`` thousand images);
* Adam, lr 0.002, betas (0, 0.99); D's learning rate and betas carry the lazy-regularisation
  correction ``c = d_reg_every / (d_reg_every + 1)``: lr * c and betas ** c;
* data: the Fashion-MNIST *train* split, zero-padded to 32x32, in [-1, 1].

Checkpoints follow the layout of rosinality's ``stylegan2-pytorch`` training script
(``{"g", "d", "g_ema", "g_optim", "d_optim", "args", "step", "rng"}``, ``args`` a plain dict) and
are written atomically to ``OUT/checkpoint.pt`` (plus ``OUT/checkpoint-STEP.pt`` every
``--keep-every`` steps). Runs resume bit for bit: the real batch of step ``s`` is a slice of a
permutation seeded with ``(seed, epoch)``; the latents, the mixing choices and the mixing points
come from one seeded :class:`torch.Generator`, and the generator's per-layer noise from the global
torch RNG; both RNG states are saved in every checkpoint.

:func:`export_model` turns a checkpoint into the inference-only file genprior bundles
(``{"g_ema", "latent_avg", "gaussian_fit", "config"}``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from ..generators.stylegan2_disc import StyleGAN2Discriminator
from ..io import atomic_path

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class SG2TrainConfig:
    """Hyper-parameters of a run (saved as ``args`` in every checkpoint)."""

    steps: int = 9000
    batch: int = 32
    seed: int = 0
    size: int = 32
    img_channels: int = 1
    style_dim: int = 128
    n_mlp: int = 4
    g_channels: str = "4:64,8:64,16:64,32:32"
    d_channels: str = "4:64,8:64,16:32,32:32"
    lr: float = 0.002
    lr_mlp: float = 0.01
    r1_gamma: float = 0.1
    d_reg_every: int = 16
    mixing: float = 0.9
    ema_kimg: float = 10.0
    ckpt_every: int = 200
    keep_every: int = 1000
    sample_every: int = 200
    log_every: int = 25


def parse_channels(text: str) -> dict[int, int]:
    """``"4:128,8:64"`` -> ``{4: 128, 8: 64}``."""
    out: dict[int, int] = {}
    try:
        for item in text.split(","):
            if item.strip():
                r, c = item.split(":")
                out[int(r)] = int(c)
    except ValueError:
        raise UserError(
            f"channel table {text!r} is malformed: write resolution:channels pairs, e.g. 4:128,8:128,16:64,32:32"
        ) from None
    if not out or any(c < 1 for c in out.values()):
        raise UserError(
            f"channel table {text!r} is empty or has a non-positive count: e.g. 4:128,8:128,16:64,32:32"
        )
    return out


def _check_config(cfg: SG2TrainConfig) -> None:
    if cfg.steps < 0:
        raise UserError(f"--steps {cfg.steps} is negative: give the total number of steps to reach")
    if cfg.batch < 2:
        raise UserError(f"--batch {cfg.batch} is too small: give at least 2")
    if not cfg.lr > 0:
        raise UserError(f"--lr {cfg.lr} is not positive: give a learning rate such as 0.002")
    if cfg.r1_gamma < 0:
        raise UserError(f"--r1 {cfg.r1_gamma} is negative: give a non-negative R1 weight")
    if cfg.d_reg_every < 1:
        raise UserError(f"--d-reg-every {cfg.d_reg_every} is not positive: give e.g. 16")
    if not 0 <= cfg.mixing <= 1:
        raise UserError(f"--mixing {cfg.mixing} is not a probability: give a value in [0, 1]")
    for name in ("g_channels", "d_channels"):
        table = parse_channels(getattr(cfg, name))
        r = cfg.size
        while r >= 4:
            if r not in table:
                raise UserError(
                    f"{name.replace('_', '-')} {getattr(cfg, name)!r} lacks resolution {r}: give 4..{cfg.size}"
                )
            r //= 2


# ---- models -------------------------------------------------------------------------------------
def build_generator(cfg: SG2TrainConfig | dict[str, Any]) -> nn.Module:
    from ..generators.stylegan2 import StyleGAN2Generator

    c = cfg if isinstance(cfg, dict) else asdict(cfg)
    return StyleGAN2Generator(**generator_kwargs(c))


def generator_kwargs(c: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of :class:`StyleGAN2Generator` for a run's config."""
    return {
        "size": int(c["size"]),
        "style_dim": int(c["style_dim"]),
        "n_mlp": int(c["n_mlp"]),
        "channels": parse_channels(c["g_channels"]),
        "img_channels": int(c["img_channels"]),
        "lr_mlp": float(c["lr_mlp"]),
    }


def build_discriminator(cfg: SG2TrainConfig | dict[str, Any]) -> StyleGAN2Discriminator:
    c = cfg if isinstance(cfg, dict) else asdict(cfg)
    return StyleGAN2Discriminator(
        size=int(c["size"]), channels=parse_channels(c["d_channels"]), img_channels=int(c["img_channels"])
    )


def requires_grad(model: nn.Module, flag: bool) -> None:
    for p in model.parameters():
        p.requires_grad_(flag)


@torch.no_grad()
def accumulate(ema: nn.Module, model: nn.Module, decay: float) -> None:
    src = dict(model.named_parameters())
    for name, p in ema.named_parameters():
        p.mul_(decay).add_(src[name].detach(), alpha=1 - decay)


# ---- data ---------------------------------------------------------------------------------------
def fmnist_training_images(size: int = 32) -> Tensor:
    """The 60,000 Fashion-MNIST training images, ``(N, 1, size, size)`` uint8."""
    from ..data import load_fashion_mnist

    images, _ = load_fashion_mnist("train", pad_to=size)
    return torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)


def _epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch + 1) % (2**63))
    return torch.randperm(n, generator=g)


class _Batches:
    """The real batch of step ``s``: batches of a seeded per-epoch permutation (last one dropped)."""

    def __init__(self, images: Tensor, batch: int, seed: int) -> None:
        if len(images) < batch:
            raise UserError(
                f"--batch {batch} is larger than the data set ({len(images)} images): give a smaller batch"
            )
        self.images, self.batch, self.seed = images, batch, seed
        self.per_epoch = len(images) // batch
        self._epoch, self._perm = -1, None

    def __call__(self, step: int) -> Tensor:
        epoch, j = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, _epoch_permutation(len(self.images), self.seed, epoch)
        idx = self._perm[j * self.batch : (j + 1) * self.batch]
        x = self.images[idx]
        if x.dtype == torch.uint8:
            return x.float() / 127.5 - 1.0
        return x.float() * 2.0 - 1.0  # float images in [0, 1]


def mixing_styles(
    batch: int, dim: int, prob: float, n_latent: int, gen: torch.Generator
) -> tuple[list[Tensor], int | None]:
    """Latent codes for one step: two with probability ``prob`` (style mixing), else one; and the
    mixing point, all drawn from ``gen``."""
    u = float(torch.rand((), generator=gen))
    if prob > 0 and u < prob:
        z = torch.randn(2, batch, dim, generator=gen)
        inject = int(torch.randint(1, n_latent, (), generator=gen))
        return [z[0], z[1]], inject
    return [torch.randn(batch, dim, generator=gen)], None


# ---- checkpoints --------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike, ckpt: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
        os.chmod(tmp, 0o644)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    from ..generators.checkpoint import safe_load

    ck = safe_load(path)
    if not isinstance(ck, dict) or not {"g", "d", "g_ema", "g_optim", "d_optim", "args", "step"} <= set(ck):
        raise UserError(
            f"{path} is not a genprior StyleGAN2 training checkpoint: give the checkpoint.pt of a `genprior train stylegan2` run"
        )
    return ck


def _config_from_args(d: dict[str, Any]) -> SG2TrainConfig:
    names = {f.name for f in fields(SG2TrainConfig)}
    return SG2TrainConfig(**{k: v for k, v in d.items() if k in names})


# ---- sample grids -------------------------------------------------------------------------------
def image_grid(images: Tensor, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """``(N, C, H, W)`` images in [0, 1] -> one uint8 grid (H', W') or (H', W', 3)."""
    images = images.detach().float().clamp(0, 1).cpu()
    n, c, h, w = images.shape
    ncol = min(nrow, n)
    nrows = math.ceil(n / ncol)
    grid = torch.ones(c, nrows * (h + pad) + pad, ncol * (w + pad) + pad)
    for i in range(n):
        r, q = divmod(i, ncol)
        grid[
            :, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w
        ] = images[i]
    arr = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return arr[..., 0] if c == 1 else arr


def save_grid(path: str | os.PathLike, images: Tensor, nrow: int = 8, scale: int = 1) -> None:
    from PIL import Image

    im = Image.fromarray(image_grid(images, nrow))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
        os.chmod(tmp, 0o644)


@torch.no_grad()
def sample_images(
    g: nn.Module, z: Tensor, truncation: float = 1.0, latent_avg: Tensor | None = None
) -> Tensor:
    """Images in [0, 1] from a rosinality-style generator (native range [-1, 1])."""
    kw: dict[str, Any] = {"randomize_noise": False}
    if truncation < 1 and latent_avg is not None:
        kw.update(truncation=truncation, truncation_latent=latent_avg)
    img, _ = g([z], **kw)
    return (img + 1) / 2


# ---- training -----------------------------------------------------------------------------------
def train_stylegan2(
    out: str | os.PathLike,
    config: SG2TrainConfig | None = None,
    *,
    resume: bool = False,
    images: Tensor | None = None,
    progress: bool = True,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Train (or continue) a run in folder ``out``; return the last checkpoint.

    Args:
        out: run folder: ``checkpoint.pt``, ``samples/STEP.png``, ``log.jsonl``.
        config: hyper-parameters. On ``resume`` those of the checkpoint are used, except
            ``steps`` (the total to reach) and the I/O intervals, which may change.
        resume: continue from ``out/checkpoint.pt``; without it an existing checkpoint is an error.
        images: training images ``(N, C, size, size)``, uint8 or float in [0, 1]; default the
            Fashion-MNIST train split padded to 32x32.
        max_seconds: stop (and checkpoint) after this much wall time.
    """
    out = Path(out)
    ckpt_path = out / CHECKPOINT_NAME
    config = config or SG2TrainConfig()
    ck: dict[str, Any] | None = None
    if resume:
        if not ckpt_path.is_file():
            raise UserError(
                f"--resume given but {ckpt_path} does not exist: drop --resume to start a new run"
            )
        ck = load_checkpoint(ckpt_path)
        saved = _config_from_args(ck["args"])
        for k in ("steps", "ckpt_every", "keep_every", "sample_every", "log_every"):
            setattr(saved, k, getattr(config, k))
        config = saved
    elif ckpt_path.exists():
        raise UserError(
            f"{ckpt_path} already exists: pass --resume to continue that run, or choose another --out"
        )
    _check_config(config)
    cfg = config

    torch.manual_seed(cfg.seed)  # initial weights: the constructors draw from the global RNG
    g = build_generator(cfg)
    d = build_discriminator(cfg)
    g_ema = copy.deepcopy(g).eval()
    requires_grad(g_ema, False)

    c = cfg.d_reg_every / (cfg.d_reg_every + 1)
    g_optim = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(0.0, 0.99))
    d_optim = torch.optim.Adam(d.parameters(), lr=cfg.lr * c, betas=(0.0, 0.99**c))
    gen = torch.Generator()
    step = 0
    if ck is not None:
        g.load_state_dict(ck["g"])
        d.load_state_dict(ck["d"])
        g_ema.load_state_dict(ck["g_ema"])
        g_optim.load_state_dict(ck["g_optim"])
        d_optim.load_state_dict(ck["d_optim"])
        step = int(ck["step"])
        gen.set_state(ck["rng"]["gen"])
        torch.set_rng_state(ck["rng"]["torch"])
    else:
        gen.manual_seed(cfg.seed + 1)
        torch.manual_seed(cfg.seed + 2)

    if images is None:
        images = fmnist_training_images(cfg.size)
    if images.shape[1:] != (cfg.img_channels, cfg.size, cfg.size):
        raise UserError(
            f"training images have shape {tuple(images.shape[1:])}, expected {(cfg.img_channels, cfg.size, cfg.size)}"
        )
    batches = _Batches(images, cfg.batch, cfg.seed)
    n_latent = int(g.n_latent)
    decay = 0.5 ** (cfg.batch / (cfg.ema_kimg * 1000.0)) if cfg.ema_kimg > 0 else 0.0
    z_fixed = torch.randn(64, cfg.style_dim, generator=torch.Generator().manual_seed(cfg.seed + 12345))

    out.mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    log_path = out / "log.jsonl"
    elapsed0 = float(ck.get("elapsed", 0.0)) if ck is not None else 0.0
    t0 = time.time()

    def checkpoint() -> dict[str, Any]:
        return {
            "g": g.state_dict(),
            "d": d.state_dict(),
            "g_ema": g_ema.state_dict(),
            "g_optim": g_optim.state_dict(),
            "d_optim": d_optim.state_dict(),
            "args": asdict(cfg),
            "step": step,
            "rng": {"gen": gen.get_state(), "torch": torch.get_rng_state()},
            "elapsed": elapsed0 + time.time() - t0,
        }

    from tqdm.auto import tqdm

    bar = tqdm(
        total=cfg.steps,
        initial=min(step, cfg.steps),
        disable=not progress,
        desc="train stylegan2",
        unit="step",
    )
    stats: dict[str, float] = {}
    acc = {"d": 0.0, "g": 0.0, "real": 0.0, "fake": 0.0, "n": 0}
    g.train()
    d.train()
    last: dict[str, Any] | None = None
    try:
        while step < cfg.steps:
            real = batches(step)

            # ---- D: logistic loss on real and fake
            requires_grad(g, False)
            requires_grad(d, True)
            styles, inject = mixing_styles(cfg.batch, cfg.style_dim, cfg.mixing, n_latent, gen)
            with torch.no_grad():
                fake, _ = g(styles, inject_index=inject)
            fake_pred = d(fake)
            real_pred = d(real)
            d_loss = F.softplus(fake_pred).mean() + F.softplus(-real_pred).mean()
            d.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optim.step()

            # ---- D: lazy R1 on real images
            if cfg.r1_gamma > 0 and step % cfg.d_reg_every == 0:
                real_r = real.detach().requires_grad_(True)
                pred = d(real_r)
                (grad,) = torch.autograd.grad(pred.sum(), real_r, create_graph=True)
                r1 = grad.pow(2).flatten(1).sum(1).mean()
                d.zero_grad(set_to_none=True)
                (cfg.r1_gamma / 2 * r1 * cfg.d_reg_every + 0 * pred[0, 0]).backward()
                d_optim.step()
                stats["r1"] = float(r1.detach())

            # ---- G: non-saturating loss
            requires_grad(g, True)
            requires_grad(d, False)
            styles, inject = mixing_styles(cfg.batch, cfg.style_dim, cfg.mixing, n_latent, gen)
            fake, _ = g(styles, inject_index=inject)
            g_loss = F.softplus(-d(fake)).mean()
            g.zero_grad(set_to_none=True)
            g_loss.backward()
            g_optim.step()
            accumulate(g_ema, g, decay)

            step += 1
            acc["d"] += float(d_loss.detach())
            acc["g"] += float(g_loss.detach())
            acc["real"] += float(real_pred.detach().mean())
            acc["fake"] += float(fake_pred.detach().mean())
            acc["n"] += 1
            if not (math.isfinite(float(d_loss.detach())) and math.isfinite(float(g_loss.detach()))):
                raise RuntimeError(
                    f"training diverged at step {step} (d_loss {float(d_loss)}, g_loss {float(g_loss)})"
                )
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                n = max(acc["n"], 1)
                rec = {
                    "step": step,
                    "d_loss": acc["d"] / n,
                    "g_loss": acc["g"] / n,
                    "real_score": acc["real"] / n,
                    "fake_score": acc["fake"] / n,
                    "r1": stats.get("r1", float("nan")),
                    "elapsed_s": round(elapsed0 + time.time() - t0, 1),
                }
                acc = {"d": 0.0, "g": 0.0, "real": 0.0, "fake": 0.0, "n": 0}
                bar.set_postfix(d=f"{rec['d_loss']:.3f}", g=f"{rec['g_loss']:.3f}", r1=f"{rec['r1']:.3f}")
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            if cfg.sample_every and (step % cfg.sample_every == 0 or step == cfg.steps):
                g_ema.eval()
                save_grid(out / "samples" / f"{step:06d}.png", sample_images(g_ema, z_fixed), scale=2)
            if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps:
                last = checkpoint()
                save_checkpoint(ckpt_path, last)
                if cfg.keep_every and step % cfg.keep_every == 0:
                    save_checkpoint(out / f"checkpoint-{step:06d}.pt", last)
            if max_seconds is not None and time.time() - t0 > max_seconds:
                break
    finally:
        bar.close()
    # only here, between two steps: an interrupted step leaves the last periodic checkpoint
    last = checkpoint()
    save_checkpoint(ckpt_path, last)
    return last


# ---- export -------------------------------------------------------------------------------------
@torch.no_grad()
def export_model(
    checkpoint: str | os.PathLike | dict[str, Any],
    out: str | os.PathLike,
    *,
    n_fit: int = 100_000,
    seed: int = 0,
    extra_config: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the inference-only model ``{"g_ema", "latent_avg", "gaussian_fit", "config"}``.

    ``latent_avg`` is the mean of the mapping network's output over ``n_fit`` standard normal
    codes; ``gaussian_fit`` is :func:`genprior.generators.stylegan2.fit_gaussian` on the same
    generator. ``config`` holds the constructor arguments and the training facts (steps, time).
    """
    from ..generators.stylegan2 import fit_gaussian

    ck = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    args = dict(ck["args"])
    g = build_generator(args)
    g.load_state_dict(ck["g_ema"])
    g.eval()
    gz = torch.Generator().manual_seed(seed)
    latent_avg = g.mean_latent(n_fit, generator=gz).reshape(-1)
    fit = fit_gaussian(g, n=n_fit, seed=seed)
    kwargs = generator_kwargs(args)
    config = {
        **{k: v for k, v in kwargs.items() if k != "channels"},
        "channels": {int(k): int(v) for k, v in kwargs["channels"].items()},
        "n_latent": int(g.n_latent),
        "dataset": "fashion-mnist train split, zero-padded to 32x32, [-1, 1]",
        "training": {
            "steps": int(ck["step"]),
            "batch": int(args["batch"]),
            "seed": int(args["seed"]),
            "r1_gamma": float(args["r1_gamma"]),
            "wall_time_s": round(float(ck.get("elapsed", 0.0)), 1),
            "d_channels": str(args["d_channels"]),
            "mixing": float(args["mixing"]),
            "ema_kimg": float(args["ema_kimg"]),
        },
        **(extra_config or {}),
    }
    blob = {
        "g_ema": {k: v.detach().clone().contiguous() for k, v in g.state_dict().items()},
        "latent_avg": latent_avg.detach().clone(),
        "gaussian_fit": {k: v.detach().clone() for k, v in _fit_dict(fit).items()},
        "config": config,
    }
    with atomic_path(out) as tmp:
        torch.save(blob, tmp)
        os.chmod(tmp, 0o644)  # package data: readable by everyone
    return blob


def _fit_dict(fit: Any) -> dict[str, Tensor]:
    if isinstance(fit, dict):
        return {"mean": fit["mean"], "std": fit["std"]}
    if isinstance(fit, (tuple, list)):
        return {"mean": fit[0], "std": fit[1]}
    return {"mean": fit.mean, "std": fit.std}


# ---- CLI ----------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    dflt = SG2TrainConfig()
    parser.add_argument(
        "--steps", type=int, default=dflt.steps, help=f"total number of steps to reach (default {dflt.steps})"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("runs/fmnist-stylegan2"),
        help="run folder (checkpoint.pt, samples/, log.jsonl)",
    )
    parser.add_argument("--batch", type=int, default=dflt.batch, help=f"batch size (default {dflt.batch})")
    parser.add_argument("--seed", type=int, default=dflt.seed, help=f"random seed (default {dflt.seed})")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument(
        "--style-dim",
        type=int,
        default=dflt.style_dim,
        help=f"latent / style size (default {dflt.style_dim})",
    )
    parser.add_argument(
        "--n-mlp", type=int, default=dflt.n_mlp, help=f"mapping network depth (default {dflt.n_mlp})"
    )
    parser.add_argument(
        "--g-channels",
        default=dflt.g_channels,
        help=f"generator channels per resolution (default {dflt.g_channels})",
    )
    parser.add_argument(
        "--d-channels",
        default=dflt.d_channels,
        help=f"discriminator channels per resolution (default {dflt.d_channels})",
    )
    parser.add_argument("--lr", type=float, default=dflt.lr, help=f"Adam learning rate (default {dflt.lr})")
    parser.add_argument(
        "--r1", type=float, default=dflt.r1_gamma, help=f"R1 weight gamma (default {dflt.r1_gamma})"
    )
    parser.add_argument(
        "--d-reg-every",
        type=int,
        default=dflt.d_reg_every,
        help=f"lazy R1 interval (default {dflt.d_reg_every})",
    )
    parser.add_argument(
        "--mixing", type=float, default=dflt.mixing, help=f"style-mixing probability (default {dflt.mixing})"
    )
    parser.add_argument(
        "--ema-kimg",
        type=float,
        default=dflt.ema_kimg,
        help=f"g_ema half-life in thousands of images (default {dflt.ema_kimg})",
    )
    parser.add_argument(
        "--ckpt-every",
        type=int,
        default=dflt.ckpt_every,
        help=f"checkpoint interval in steps (default {dflt.ckpt_every})",
    )
    parser.add_argument(
        "--keep-every",
        type=int,
        default=dflt.keep_every,
        help=f"keep a numbered checkpoint every N steps (default {dflt.keep_every}; 0: never)",
    )
    parser.add_argument(
        "--sample-every",
        type=int,
        default=dflt.sample_every,
        help=f"sample grid interval (default {dflt.sample_every}; 0: never)",
    )
    parser.add_argument(
        "--max-minutes", type=float, default=None, help="stop (and checkpoint) after this much wall time"
    )
    parser.add_argument(
        "--export",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the inference-only model (g_ema, latent_avg, gaussian_fit) to PATH at the end",
    )
    parser.add_argument(
        "--export-only", action="store_true", help="do not train: export --out's checkpoint to --export"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.export_only:
        if args.export is None:
            raise UserError("--export-only needs --export PATH")
        export_model(out / CHECKPOINT_NAME, args.export)
        print(f"wrote {args.export}")
        return 0
    cfg = SG2TrainConfig(
        steps=args.steps, batch=args.batch, seed=args.seed, style_dim=args.style_dim, n_mlp=args.n_mlp,
        g_channels=args.g_channels, d_channels=args.d_channels, lr=args.lr, r1_gamma=args.r1,
        d_reg_every=args.d_reg_every, mixing=args.mixing, ema_kimg=args.ema_kimg, ckpt_every=args.ckpt_every,
        keep_every=args.keep_every, sample_every=args.sample_every,
    )  # fmt: skip
    max_s = args.max_minutes * 60 if args.max_minutes is not None else None
    ck = train_stylegan2(out, cfg, resume=args.resume, progress=not args.no_progress, max_seconds=max_s)
    print(f"wrote {out / CHECKPOINT_NAME}: step {ck['step']}, {ck['elapsed'] / 60:.1f} min")
    if args.export is not None:
        export_model(ck, args.export)
        print(f"wrote {args.export}")
    return 0
