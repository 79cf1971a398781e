"""``genprior train``: train the generative priors genprior ships.

* ``genprior train vae [--epochs N] [--out PATH] [--seed S] [--resume]``: the MNIST VAE of Bora
  et al. 2017 on the MNIST digits outside the held-out set.
* ``genprior train stylegan2 ...``: the Fashion-MNIST StyleGAN2; its options and its code live in
  :mod:`genprior.training.stylegan2` (``add_arguments(parser)`` and ``run(args)``), imported only
  when that sub-command runs or its help is asked for.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import UserError
from .common import add_device_argument, check_output, resolve_device

STYLEGAN2_MODULE = "genprior.training.stylegan2"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a generative prior (the MNIST VAE, the Fashion-MNIST StyleGAN2)",
        description="Train a generative prior. Checkpoints are written atomically and runs resume with --resume.",
    )
    sub = parser.add_subparsers(dest="model", required=True, metavar="MODEL")

    vae = sub.add_parser(
        "vae",
        help="the MNIST VAE of Bora et al. 2017 (20-d latent)",
        description=(
            "Train the MNIST VAE of Bora et al. 2017 (784-500-500-20, softplus, Adam lr 1e-3, batches of 100, "
            "Bernoulli cross-entropy + KL) on the 9,700 MNIST digits outside genprior's held-out set. "
            "Needs MNIST: run scripts/fetch_data.sh first."
        ),
    )
    vae.add_argument(
        "--epochs",
        type=int,
        default=200,
        help="total number of epochs to reach (default 200, as the bundled mnist-vae-20)",
    )
    vae.add_argument(
        "--out", type=Path, default=Path("mnist-vae-20.pt"), help="checkpoint path (default mnist-vae-20.pt)"
    )
    vae.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    vae.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    vae.add_argument("--batch-size", type=int, default=100, help="batch size (default 100)")
    vae.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    vae.add_argument(
        "--export",
        type=Path,
        default=None,
        metavar="PATH",
        help="also write the inference-only weights (no optimiser state) to PATH at the end",
    )
    vae.add_argument("--no-progress", action="store_true", help="no progress bar")
    vae.set_defaults(func=run_vae)

    # The StyleGAN2 trainer's options belong to genprior.training.stylegan2, which is imported
    # only when this sub-command runs: everything after "stylegan2" is handed to a parser built
    # from the module's add_arguments() (a prefix character nobody types keeps argparse from
    # reading "--help" or any option here).
    sg = sub.add_parser(
        "stylegan2",
        help="the Fashion-MNIST StyleGAN2 (32x32); see `genprior train stylegan2 --help`",
        description="Train the 32x32 Fashion-MNIST StyleGAN2.",
        add_help=False,
        prefix_chars="\x01",
    )
    sg.add_argument("stylegan2_argv", nargs=argparse.REMAINDER)
    sg.set_defaults(func=run_stylegan2)

    sc = sub.add_parser(
        "score",
        help="a score model of a generator's state at one stage (SGILO's prior)",
        description=(
            "Train a score model (VP SDE, epsilon prediction, EMA) of a generator's state at --stage on the "
            "generator's own samples; checkpoints go to OUT/checkpoint.pt and --resume continues bit for bit."
        ),
    )
    sc.add_argument("--model", required=True, help="a zoo name (see `genprior models`) or a checkpoint path")
    sc.add_argument(
        "--stage",
        default=None,
        help="the stage whose state is modelled (default 2; 0: StyleGAN2's w alone, round 0's space)",
    )
    _add_run_options(sc, 3000, "ScoreTrainConfig (batch, lr, width, depth, heads, ema, seed, ...)")
    sc.set_defaults(func=run_score)
    _register_ddpm(sub)
    _register_latent(sub)


def _add_run_options(p: argparse.ArgumentParser, default_steps: int, settings: str) -> None:
    """The options every step-seeded trainer takes (``train score``, ``train ddpm``)."""
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder of the training checkpoint")
    p.add_argument("--steps", default=None, help=f"total optimiser steps to reach (default {default_steps})")
    p.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help=f"any other setting of {settings}"
    )
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (with a checkpoint) after this long")
    p.add_argument(
        "--export", type=Path, default=None, metavar="PATH", help="write the EMA model to PATH at the end"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_argument(p)


def _register_ddpm(sub: argparse._SubParsersAction) -> None:
    dd = sub.add_parser(
        "ddpm",
        help="the pixel-space diffusion model on Fashion-MNIST (DPS and DiffPIR run on it)",
        description=(
            "Train an epsilon-prediction UNet (diffusers' UNet2DModel, built from arguments) with DDPM's linear "
            "schedule on the Fashion-MNIST training split at 32x32; checkpoints go to OUT/checkpoint.pt and "
            "--resume continues bit for bit."
        ),
    )
    _add_run_options(dd, 20000, "DDPMTrainConfig (batch, lr, warmup, ema, seed, widths, attention, ...)")
    dd.set_defaults(func=run_ddpm)


def _register_latent(sub: argparse._SubParsersAction) -> None:
    ae = sub.add_parser(
        "autoencoder",
        help="the KL autoencoder of the latent diffusion model, on Fashion-MNIST",
        description=(
            "Train a KL-regularised autoencoder (diffusers' AutoencoderKL, built from arguments; 4x8x8 latents) on "
            "the Fashion-MNIST training split at 32x32; checkpoints go to OUT/checkpoint.pt and --resume "
            "continues bit for bit. `train ldm --autoencoder` reads the file --export writes."
        ),
    )
    _add_run_options(ae, 12000, "AETrainConfig (batch, lr, kl_weight, widths, latent_channels, ...)")
    ae.set_defaults(func=run_autoencoder)
    ldm = sub.add_parser(
        "ldm",
        help="the latent diffusion model (ReSample, Latent-DPS and PSLD run on it)",
        description=(
            "Train an epsilon-prediction UNet (diffusers' UNet2DModel) with LDM's scaled-linear schedule on the "
            "latents of a frozen autoencoder (scaled to unit std); the exported file holds both."
        ),
    )
    ldm.add_argument(
        "--autoencoder",
        type=Path,
        default=None,
        metavar="FILE",
        help="the file `train autoencoder --export` wrote",
    )
    _add_run_options(ldm, 14261, "LDMTrainConfig (batch, lr, widths, attention, ...)")
    ldm.set_defaults(func=run_ldm)


def _settings(cls: type, pairs: list[tuple[str, str | None]]) -> dict[str, object]:
    """``--name value`` / ``--set name=value`` pairs typed from the config class ``cls``."""
    from ..solvers.registry import field_types, parse_value

    settings: dict[str, object] = {}
    kinds = field_types(cls)
    for name, text in pairs:
        if text is None:
            continue
        name = name.strip().replace("-", "_")
        if name not in kinds:
            raise UserError(f"--set {name}: not a setting of {cls.__name__}; use one of {', '.join(kinds)}")
        try:
            settings[name] = parse_value(text, kinds[name])
        except ValueError:
            what = {int: "an integer", float: "a number", bool: "true or false"}.get(
                kinds[name][0], "a value"
            )
            raise UserError(f"{name} = {text!r}: give {what} (--set {name}=VALUE)") from None
    return settings


def _max_seconds(args: argparse.Namespace) -> float | None:
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise UserError(f"--max-minutes {args.max_minutes}: give a positive number of minutes")
    return None if args.max_minutes is None else 60 * args.max_minutes


def _check_run_outputs(args: argparse.Namespace) -> None:
    """Before a trainer starts: its folder and its export can be written; a resumed run takes the
    checkpoint's settings, so --set (which it would not read) is refused."""
    if args.resume and args.set:
        raise UserError(
            f"--resume continues with the settings saved in {args.out}: drop --set {args.set[0]} "
            "(only --steps may change), or start a new run in another --out"
        )
    check_output(args.out, "--out", folder=True)
    if args.export is not None:
        check_output(args.export, "--export")


def _run_trainer(args: argparse.Namespace, config_cls: type, train: Any, export: Any, **kw: Any) -> int:
    """A step-seeded trainer from its command line: the settings, the run, the export."""
    _check_run_outputs(args)
    pairs = [("steps", args.steps)] + [tuple(s.partition("=")[::2]) for s in args.set]
    cfg = config_cls(**_settings(config_cls, pairs))
    ck = train(
        args.out,
        config=cfg,
        resume=args.resume,
        max_seconds=_max_seconds(args),
        progress=not args.no_progress,
        device=resolve_device(args.device),
        **kw,
    )
    last = ck["history"][-1]["loss"] if ck["history"] else float("nan")
    print(
        f"wrote {args.out / 'checkpoint.pt'}: step {ck['step']} of {ck['config']['steps']}, loss {last:.4f}"
    )
    if args.export is not None:
        export(args.out / "checkpoint.pt", args.export)
        print(f"wrote {args.export} (the EMA model)")
    return 0


def run_ddpm(args: argparse.Namespace) -> int:
    from ..training.ddpm import DDPMTrainConfig, export_ddpm, train_ddpm

    return _run_trainer(args, DDPMTrainConfig, train_ddpm, export_ddpm)


def run_autoencoder(args: argparse.Namespace) -> int:
    from ..training.latent import AETrainConfig, export_autoencoder, train_autoencoder

    return _run_trainer(args, AETrainConfig, train_autoencoder, export_autoencoder)


def run_ldm(args: argparse.Namespace) -> int:
    from ..training.latent import LDMTrainConfig, export_ldm, train_ldm

    return _run_trainer(args, LDMTrainConfig, train_ldm, export_ldm, autoencoder=args.autoencoder)


def _stylegan2_module() -> ModuleType | None:
    try:
        return importlib.import_module(STYLEGAN2_MODULE)
    except ModuleNotFoundError as e:
        if e.name in (STYLEGAN2_MODULE, "genprior.training"):
            return None
        raise


def run_stylegan2(args: argparse.Namespace) -> int:
    mod = _stylegan2_module()
    if mod is None or not hasattr(mod, "run") or not hasattr(mod, "add_arguments"):
        raise UserError(
            f"StyleGAN2 training is not available in this install ({STYLEGAN2_MODULE} is missing): "
            "update genprior, or use a bundled model (see genprior.list_models())"
        )
    from . import OneLineParser

    parser = OneLineParser(
        prog="genprior train stylegan2", description="Train the 32x32 Fashion-MNIST StyleGAN2."
    )
    mod.add_arguments(parser)
    sub_args = parser.parse_args(list(args.stylegan2_argv))
    sub_args.command, sub_args.model = args.command, args.model
    return int(mod.run(sub_args) or 0)


def run_vae(args: argparse.Namespace) -> int:
    from ..training.vae import VAETrainConfig, export_weights, train_vae

    if args.epochs < 1:
        raise UserError(f"--epochs {args.epochs} is not positive: give at least 1")
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size} is not positive: give at least 1")
    if not args.lr > 0:
        raise UserError(f"--lr {args.lr} is not positive: give a learning rate such as 1e-3")
    cfg = VAETrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    from ..data import heldout

    ck = train_vae(
        args.out, cfg, resume=args.resume, progress=not args.no_progress, eval_images=heldout("mnist")[0]
    )
    tr = ck["train"]
    last = tr["history"][-1] if tr["history"] else None
    msg = f"wrote {args.out}: epoch {tr['epoch']}, step {tr['step']}"
    if last:
        msg += f", train loss {last['loss']:.2f} nats (rec {last['rec']:.2f}, KL {last['kl']:.2f})"
        if "eval_loss" in last:
            msg += f", held-out loss {last['eval_loss']:.2f}"
    print(msg)
    if args.export is not None:
        export_weights(args.out, args.export)
        print(f"wrote {args.export} (inference weights)")
    return 0


def run_score(args: argparse.Namespace) -> int:
    from ..training.score import ScoreTrainConfig, export_score, loss_by_level, train_score
    from ..zoo import load_generator

    _check_run_outputs(args)
    pairs = [("stage", args.stage), ("steps", args.steps)] + [tuple(s.partition("=")[::2]) for s in args.set]
    settings = _settings(ScoreTrainConfig, pairs)
    max_seconds = _max_seconds(args)
    device = resolve_device(args.device)
    G = load_generator(args.model)
    cfg = ScoreTrainConfig(**settings)
    ck = train_score(
        G,
        args.out,
        cfg,
        resume=args.resume,
        generator_name=str(args.model),
        max_seconds=max_seconds,
        progress=not args.no_progress,
        device=device,
    )
    last = ck["history"][-1]["loss"] if ck["history"] else float("nan")
    print(
        f"wrote {args.out / 'checkpoint.pt'}: step {ck['step']} of {ck['config']['steps']}, loss {last:.4f}"
    )
    if args.export is not None:
        export_score(args.out / "checkpoint.pt", args.export)
        from ..score.model import StateScoreModel

        m = StateScoreModel.load(args.export).to(device)
        for r in loss_by_level(m, G.to(device)):
            print(f"  held-out denoising loss at sigma {r['sigma']:.3g}: {r['loss']:.4f}")
        print(f"wrote {args.export} (the EMA score model)")
    return 0
