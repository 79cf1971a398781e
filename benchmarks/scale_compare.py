"""The Ray engine against the local process pool on one bench config (docs/scale.md): both runs
from scratch into fresh folders, the rows compared without their timing columns, the wall times
side by side. Ray runs on a local instance with as many CPUs as the pool has workers.

    .venv/bin/python benchmarks/scale_compare.py [CONFIG] [--workers 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from genprior import bench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="benchmarks/configs/scale_check.toml")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="keep the two result folders here")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="scale-"))
    runs = {}
    for name, kw in (("pool", {"workers": args.workers}), ("ray", {"engine": "ray"})):
        shutil.rmtree(out / name, ignore_errors=True)
        if name == "ray":
            import ray

            ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        t0 = time.perf_counter()
        res = bench.run_bench(args.config, out / name, threads=1, progress=False, **kw)
        runs[name] = (res, time.perf_counter() - t0)
    (a, wa), (b, wb) = runs["pool"], runs["ray"]
    same = bench.comparable_rows(a.rows) == bench.comparable_rows(b.rows)
    print(f"config {args.config}: {len(a.rows)} rows, {a.executed} cells")
    print("| engine | wall (s) | rows |")
    print("|---|---:|---:|")
    print(f"| local process pool, {args.workers} workers | {wa:.1f} | {len(a.rows)} |")
    print(f"| Ray, local instance, {args.workers} CPUs | {wb:.1f} | {len(b.rows)} |")
    print(f"rows identical (timing columns aside): {same}; Ray / pool wall time {wb / wa:.3f}")


if __name__ == "__main__":
    main()
