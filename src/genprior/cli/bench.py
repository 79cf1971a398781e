"""``genprior bench``: run a benchmark grid from a config file; resumable and parallel."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="compare methods over a grid of tasks, measurement levels and images",
        description="Run every cell (task x level x method x image batch x seed) of a benchmark config "
        "(TOML or JSON, see docs/benchmarks.md) and write results.csv, results.json, summary.csv/.md "
        "and plots into --out. Finished cells are kept: a killed run started again with the same "
        "config and --out goes on where it stopped.",
    )
    p.add_argument("config", type=Path, help="benchmark config (.toml or .json)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--workers", type=int, default=1, help="run cells in N processes (default 1)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads per cell (default 1; results do not depend on --workers)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=True,
        help="keep the cells already finished in --out (default, same config only)",
    )
    g.add_argument("--no-resume", dest="resume", action="store_false", help="run every cell again")
    p.add_argument("--device", default=None, help="override the config's device (cpu, cuda, auto)")
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default: this process or --workers processes) or ray: every cell a Ray task",
    )
    p.add_argument(
        "--address", help="with --engine ray: the Ray cluster's address (default: a local instance)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import load_config, run_bench

    if args.workers < 1:
        raise UserError(f"--workers {args.workers}: give at least 1")
    if args.threads < 1:
        raise UserError(f"--threads {args.threads}: give at least 1")
    cfg = load_config(args.config)
    from .common import check_output

    check_output(args.out, "--out", folder=True)
    text = args.config.read_text(encoding="utf-8", errors="replace")
    if args.device is not None:
        from .common import resolve_device

        resolve_device(args.device)
        cfg.device = args.device
    res = run_bench(
        cfg,
        args.out,
        workers=args.workers,
        resume=args.resume,
        threads=args.threads,
        progress=not args.quiet,
        config_text=text,
        engine=args.engine,
        address=args.address,
    )
    stale = f" ({res.stale} of them again: their code changed)" if res.stale else ""
    print(
        f"bench {cfg.name}: {res.executed} cell(s) run{stale}, {res.skipped} resumed, {len(res.rows)} rows; "
        f"wrote {', '.join(p.name for p in res.files)} in {res.out_dir}"
    )
    return 0
