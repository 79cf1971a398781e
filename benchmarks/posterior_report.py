"""Posterior samplers in a finished `genprior bench` run (``chains >= 2``): per (task, level,
method), the calibration (the share of unobserved true pixels inside mean +- 2 std) as its mean
+- standard error and its range over the images, and what the mean of the samples gains over one
sample in PSNR (per image, mean +- standard error); then, where the rows have it, the range over the
images of the mean std per pixel and how many images exceed ``WIDE``. Runs nothing: it reads
``RUN/results.json``.

    python benchmarks/posterior_report.py runs/diffusion_chains
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genprior import bench

#: a mean std per pixel above this, for images in [0, 1], says little about any pixel
WIDE = 0.3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished run's --out folder")
    args = p.parse_args(argv)
    try:
        rows = json.loads((args.run / "results.json").read_text())["rows"]
    except (OSError, ValueError, KeyError) as e:
        print(
            f"error: {args.run} holds no readable bench result ({type(e).__name__}): give a finished run's --out folder",
            file=sys.stderr,
        )
        return 2
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("calibration") is not None:
            groups.setdefault((r["task"], json.dumps(r["level"]), r["method"]), []).append(r)
    if not groups:
        print(
            f"error: {args.run} has no posterior sampler with 2 samples or more: run one with chains >= 2",
            file=sys.stderr,
        )
        return 2
    print("| task | level | method | calibration | its range | mean − one sample (dB) |")
    print("|---|---|---|---:|---:|---:|")
    spreads = []
    for (task, level, method), rs in groups.items():
        cal = [r["calibration"] for r in rs]
        m, se = bench.mean_se(cal)
        g, gse = bench.mean_se([r["psnr"] - r["psnr_sample"] for r in rs])
        print(
            f"| {task} | {level} | {method} | {m:.3f} ± {se:.3f} | {min(cal):.2f}-{max(cal):.2f} | {g:+.2f} ± {gse:.2f} |"
        )
        std = [r["std_mean"] for r in rs if r.get("std_mean") is not None]
        if std:
            wide = sum(s > WIDE for s in std)
            spreads.append(
                f"| {task} | {level} | {method} | {min(std):.3f}-{max(std):.3f} | {wide} of {len(std)} |"
            )
    if spreads:  # how wide the std maps are, per image
        print(f"\n| task | level | method | mean std per pixel, its range | images above {WIDE} |")
        print("|---|---|---|---:|---:|")
        print("\n".join(spreads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
