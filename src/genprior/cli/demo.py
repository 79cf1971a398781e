"""``genprior demo``: the main job on the bundled defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_device_argument, int_list, resolve_device


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="ILO vs CSGM on the bundled models, every task (about a minute on 2 CPU cores)",
        description="Run ILO and CSGM on the bundled models for inpainting, super-resolution x4, "
        "denoising, compressed sensing and colorization; write galleries and a PSNR/SSIM table.",
    )
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default demo-out)")
    p.add_argument(
        "--models", type=lambda s: tuple(v for v in s.split(",") if v), help="comma list of zoo names"
    )
    p.add_argument("--images", type=int, default=None, help="images per model (default 4)")
    p.add_argument("--ilo-steps", type=int_list, help="ILO steps per round, round 0 first (default 75,50,50)")
    p.add_argument("--csgm-steps", type=int, help="CSGM steps (default: ILO's total)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--workers",
        type=int,
        help="solves (one task, one method each) run side by side in N processes (default: one per core)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per process on a CPU (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoConfig, run_demo
    from ..errors import UserError

    cfg = DemoConfig(out=args.out, seed=args.seed, device=str(resolve_device(args.device)))
    if args.models:
        cfg.models = args.models
    if args.images is not None:
        if args.images < 1:
            raise UserError("--images must be at least 1")
        cfg.n_images = args.images
    if args.ilo_steps:
        cfg.ilo_steps = tuple(args.ilo_steps)
    for flag in ("workers", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag} {value}: give at least 1")
    if args.workers is not None:
        cfg.workers = args.workers
    cfg.threads = args.threads
    if args.csgm_steps is not None:
        cfg.csgm_steps = args.csgm_steps
    run_demo(cfg, progress=not args.quiet)
    return 0
