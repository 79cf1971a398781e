"""Pictures of a finished `genprior bench` run: the truth, the measurement and each method's
reconstruction (with its PSNR), one row per (task, level, image), as one PNG. Runs nothing: the
reconstructions are the ones the run stored (``recon_png`` in ``RUN/results.json``; runs before
2026-12-06 stored none), the truth and the measurements come from CONFIG.

    python benchmarks/gallery.py benchmarks/configs/diffusion_gallery.toml runs/diffusion_gallery \\
        --images 1 2 3 4 --task box --out docs/figures/diffusion_gallery_box.png

``genprior bench`` itself writes ``RUN/gallery.png``: the grid's first image, every task and method.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genprior import bench
from genprior.bench.gallery import save_gallery
from genprior.errors import UserError


def _canon(d: dict) -> str:
    return json.dumps(d, sort_keys=True, default=str)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config", type=Path, help="the run's bench config file")
    p.add_argument("run", type=Path, help="the run's --out folder")
    p.add_argument("--images", type=int, nargs="+", default=[0], help="the grid's image indexes (default 0)")
    p.add_argument("--task", action="append", help="a task label (repeat; default: all)")
    p.add_argument("--method", action="append", help="a method label (repeat; default: all)")
    p.add_argument("--side", type=int, default=96, help="pixels per picture, at least (default 96)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = p.parse_args(argv)
    try:
        if args.side < 8:
            raise UserError(f"--side {args.side}: give at least 8 pixels")
        cfg = bench.load_config(args.config)
        path = args.run / "results.json"
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(
                f"{path} is not a readable bench result ({type(e).__name__}): give a finished run's --out folder"
            ) from None
        stored = dict(results.get("config") or {})
        stored.pop("classifier_path", None)  # runs before 2026-12-06 kept where the classifier lay
        if _canon(stored) != _canon(cfg.identity()):
            raise UserError(
                f"{args.run} holds the results of another config than {args.config}: give the run's own config"
            )
        save_gallery(
            args.out,
            cfg,
            results["rows"],
            images=args.images,
            tasks=args.task,
            methods=args.method,
            side=args.side,
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
