"""``genprior theory``: phase-transition experiments on random expansive ReLU networks.

    genprior theory expansion    --trials N --out DIR --seed S [--factors 1.5,2,3 --log-c 1,2 ...]
    genprior theory depth        --depths 1,2,3 --factors 2,3
    genprior theory measurements --ratios 1,2,4,8 --factor 4
    genprior theory noise        --levels 0,1e-3,1e-2
    genprior theory langevin     --sigmas 0.5,0.1,0.01
    genprior theory all          (every experiment at its defaults)

Each writes ``theory_<name>.csv`` (per trial), ``theory_<name>_summary.csv``, ``theory_<name>.json``
into ``--out`` and ``theory_<name>.png`` into ``--figures`` (default: ``--out``); a rerun resumes
the finished trials (stored one file each in ``theory_<name>_trials/``). Numbers are parsed here
(not by argparse) so that a bad value is a one-line error with exit status 2 from
:func:`genprior.cli.main`.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from ..errors import UserError

_LISTS = {
    # option: (kind, lower bound, inclusive)
    "factors": (float, 1.0, True),
    "log_c": (float, 0.0, False),
    "depths": (int, 1, True),
    "ratios": (float, 0.0, False),
    "levels": (float, 0.0, True),
    "sigmas": (float, 0.0, False),
}
_SCALARS = {
    "trials": (int, 1, True),
    "seed": (int, 0, True),
    "k": (int, 1, True),
    "depth": (int, 1, True),
    "factor": (float, 1.0, True),
    "gd_steps": (int, 1, True),
    "burn_in": (int, 0, True),
    "samples": (int, 1, True),
}


def _num(text: str, kind, lo, inclusive, opt: str):
    try:
        v = kind(text) if kind is float else int(text, 10)
    except (TypeError, ValueError):
        raise UserError(
            f"--{opt.replace('_', '-')} {text!r}: give {'an integer' if kind is int else 'a number'}"
        ) from None
    if kind is float and not math.isfinite(v):
        raise UserError(f"--{opt.replace('_', '-')} {text!r}: give a finite number")
    if v < lo or (v == lo and not inclusive):
        rel = ">=" if inclusive else ">"
        raise UserError(f"--{opt.replace('_', '-')} {text!r}: every value must be {rel} {lo:g}")
    return v


def _list(text: str, opt: str) -> list:
    kind, lo, inc = _LISTS[opt]
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise UserError(f"--{opt.replace('_', '-')} {text!r}: give a comma-separated list, e.g. 1,2,4")
    vals = [_num(p, kind, lo, inc, opt) for p in parts]
    if len(set(vals)) != len(vals):
        raise UserError(f"--{opt.replace('_', '-')} {text!r}: values repeat")
    return vals


def _methods(text: str) -> list[str]:
    vals = [p.strip() for p in str(text).split(",") if p.strip()]
    if not vals:
        raise UserError("--methods: give a comma-separated list of methods")
    return vals


#: experiment -> options it accepts (beyond the common ones)
_OPTIONS: dict[str, tuple[str, ...]] = {
    "expansion": ("k", "depth", "factors", "log_c", "methods", "gd_steps"),
    "depth": ("k", "depths", "factors", "methods", "gd_steps"),
    "measurements": ("k", "depth", "factor", "ratios", "methods", "gd_steps"),
    "noise": ("k", "depth", "factor", "levels", "methods", "gd_steps"),
    "langevin": ("k", "depth", "factor", "sigmas", "methods", "burn_in", "samples", "gd_steps"),
}
_HELP = {
    "k": "latent size k (default 10; 8 for depth)",
    "depth": "number of layers",
    "factor": "constant expansion factor n_i / n_{i-1}",
    "factors": "comma-separated constant expansion factors (>= 1)",
    "log_c": "comma-separated constants c of the schedule n_i = c n_{i-1} log n_{i-1}",
    "depths": "comma-separated depths",
    "ratios": "comma-separated m/k values",
    "levels": "comma-separated relative noise levels nu (y = x + nu rms(x) xi)",
    "sigmas": "comma-separated noise levels sigma (y = x + sigma xi)",
    "methods": "comma-separated methods",
    "gd_steps": "gradient-descent iterations (default 1000)",
    "burn_in": "Langevin burn-in steps (default 1000)",
    "samples": "Langevin samples kept per chain (default 100)",
}
_METHOD_HELP = {
    "expansion": "lp, gd, gd-noflip (default lp,gd)",
    "depth": "lp, gd, gd-noflip (default lp,gd)",
    "measurements": "lp-inpaint, gd, gd+lp, gd+plp, gd-noflip (default lp-inpaint,gd,gd+lp,gd+plp)",
    "noise": "lp-linf, lp-l1, lp-linf-3s, lp-l1-3s, gd, gd-noflip (default: all but gd-noflip)",
    "langevin": "langevin, mala, gd (default langevin,mala,gd)",
}
_DESCR = {
    "expansion": "exact-recovery rate vs expansion factor (constant factors vs the c n log n schedule)",
    "depth": "exact-recovery rate vs depth at constant expansion factors",
    "measurements": "exact-recovery rate vs m/k (LP on m observed outputs; GD, GD+layer-wise LP, GD+pattern LP with Gaussian A)",
    "noise": "latent error vs noise level (l-inf LP, l1 LP, each naive and noise-thresholded; gradient descent)",
    "langevin": "Langevin posterior mean error, spread and coverage vs noise level",
}


def _common(p: argparse.ArgumentParser, name: str | None) -> None:
    from ..theory import DEFAULT_TRIALS

    tr = (
        f"trials per cell (default {DEFAULT_TRIALS[name]})"
        if name
        else "trials per cell (default: each experiment's)"
    )
    p.add_argument("--trials", default=None, metavar="N", help=tr)
    p.add_argument(
        "--out", default="runs/theory", metavar="DIR", help="folder of the tables (default runs/theory)"
    )
    p.add_argument(
        "--figures", default=None, metavar="DIR", help="folder of the PNG figures (default: --out)"
    )
    p.add_argument("--seed", default="0", metavar="S", help="base seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "theory",
        help="phase-transition experiments: inverting random expansive ReLU networks",
        description="Phase-transition experiments on random expansive ReLU networks: layer-wise LP "
        "inversion, gradient descent with sign flip, Langevin sampling. Writes CSV/JSON tables and PNG "
        "figures; a rerun resumes the finished trials.",
    )
    sub = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    for name in _OPTIONS:
        q = sub.add_parser(name, help=_DESCR[name], description=_DESCR[name])
        _common(q, name)
        for opt in _OPTIONS[name]:
            h = _METHOD_HELP[name] if opt == "methods" else _HELP[opt]
            q.add_argument(f"--{opt.replace('_', '-')}", dest=opt, default=None, help=h)
        q.set_defaults(func=_run)
    q = sub.add_parser("all", help="every experiment at its default settings")
    _common(q, None)
    q.set_defaults(func=_run)


def _kwargs(name: str, args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    for opt in _OPTIONS[name]:
        v = getattr(args, opt, None)
        if v is None:
            continue
        if opt in _LISTS:
            vals = _list(v, opt)
            kw[opt] = sorted(vals, reverse=(opt == "sigmas"))
        elif opt == "methods":
            kw[opt] = _methods(v)
        else:
            kind, lo, inc = _SCALARS[opt]
            kw["n_samples" if opt == "samples" else opt] = _num(v, kind, lo, inc, opt)
    return kw


def _run(args: argparse.Namespace) -> int:
    from .. import theory

    seed = _num(args.seed, int, 0, True, "seed")
    trials = None if args.trials is None else _num(args.trials, int, 1, True, "trials")
    names = list(_OPTIONS) if args.experiment == "all" else [args.experiment]
    for name in names:
        kw = _kwargs(name, args) if args.experiment != "all" else {}
        exp = theory.BUILDERS[name](**kw)
        n_trials = trials if trials is not None else theory.DEFAULT_TRIALS[name]
        res = theory.run_experiment(
            exp, args.out, n_trials, seed, args.figures, progress=not args.no_progress
        )
        keys = [k for k in exp.cell_keys if k != "widths"] + ["widths"]
        print(f"== theory {name}: {res.ran} trials run, {res.reused} reused ==")
        print(theory.format_summary(res.summary, keys))
        for what, path in res.paths.items():
            print(f"{what}: {path}")
    return 0
