"""``genprior convert IN.pkl OUT.pt``: an NVIDIA network pickle (stylegan2-ada-pytorch, stylegan3
with ``--cfg=stylegan2``) to a rosinality-layout checkpoint, read without running code from it."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert an NVIDIA StyleGAN2(-ADA) network pickle to a rosinality .pt checkpoint",
        description=(
            "Read G_ema of an NVIDIA network pickle without executing anything stored in it, and write "
            "a rosinality stylegan2-pytorch checkpoint ({'g_ema', 'latent_avg', 'config'}) atomically. "
            "StyleGAN3, the resnet and orig architectures and conditional generators are refused."
        ),
    )
    p.add_argument("input", type=Path, help="the network pickle (.pkl)")
    p.add_argument("output", type=Path, help="the checkpoint to write (.pt)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UserError
    from ..generators.nvidia import write_converted

    if args.output.resolve() == args.input.resolve():
        raise UserError(f"output {args.output} is the input: give another path for the .pt file")
    ckpt = write_converted(args.input, args.output)
    sd = ckpt["g_ema"]
    size = 2 ** (sum(1 for k in sd if k.startswith("to_rgbs.") and k.endswith(".conv.weight")) + 2)
    print(
        f"wrote {args.output}: a {size}x{size} StyleGAN2, w of {sd['style.1.weight'].shape[0]} dimensions, "
        f"conv_clamp {ckpt['config']['conv_clamp']}"
    )
    return 0
