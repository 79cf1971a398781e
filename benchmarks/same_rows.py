"""Does a bench run repeat another's rows? For every (task, level, method, image) the two runs
share, the largest PSNR difference and whether the stored reconstructions are the same; one line
per (task, level, method). Where both rows have a calibration (posterior samplers, which may
scale the same samples' std maps differently), its paired difference too, RUN minus OTHER, mean
+- standard error over the images, and on how many rows the mean std per pixel differs, with the
range of RUN's over OTHER's there. Runs nothing: it reads both ``results.json``.

    python benchmarks/same_rows.py runs/diffusion_gallery runs/latent_fmnist_48_ldm8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genprior import bench


def _rows(folder: Path) -> dict[tuple, dict]:
    data = json.loads((folder / "results.json").read_text())
    return {(r["task"], json.dumps(r["level"]), r["method"], r["seed"], r["image"]): r for r in data["rows"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished run's --out folder")
    p.add_argument("other", type=Path, help="the run to compare it with")
    args = p.parse_args(argv)
    try:
        a, b = _rows(args.run), _rows(args.other)
    except (OSError, ValueError, KeyError) as e:
        print(
            f"error: not a readable bench result ({type(e).__name__}: {e}): give two finished runs' --out folders",
            file=sys.stderr,
        )
        return 2
    groups: dict[tuple, list[tuple[float, bool | None, float | None, float | None]]] = {}
    for k, r in a.items():
        if k in b:
            same_pic = (
                None
                if "recon_png" not in r or "recon_png" not in b[k]
                else r["recon_png"] == b[k]["recon_png"]
            )
            cal = (
                r["calibration"] - b[k]["calibration"]
                if r.get("calibration") is not None and b[k].get("calibration") is not None
                else None
            )
            std = (
                r["std_mean"] / b[k]["std_mean"]
                if r.get("std_mean") is not None and b[k].get("std_mean")  # a ratio: the other's is not 0
                else None
            )
            groups.setdefault(k[:3], []).append((abs(r["psnr"] - b[k]["psnr"]), same_pic, cal, std))
    if not groups:
        print("the runs share no (task, level, method, image)")
        return 0
    for (task, level, method), d in groups.items():
        pics = [s for _, s, _, _ in d if s is not None]
        pic = f", the same pictures on {sum(pics)} of {len(pics)}" if pics else ""
        cals = [c for _, _, c, _ in d if c is not None]
        if len(cals) >= 2:
            m, se = bench.mean_se(cals)
            pic += f", calibration difference {m:+.3f} ± {se:.3f}"
        stds = [x for *_, x in d if x is not None]
        moved = [x for x in stds if x != 1]
        if stds:
            pic += f", mean std per pixel different on {len(moved)} of {len(stds)}"
            pic += f" ({min(moved):.3g}-{max(moved):.3g} times the other's)" if moved else ""
        print(
            f"{task} {level} {method}: {len(d)} rows, largest PSNR difference {max(x for x, *_ in d):.2g} dB{pic}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
