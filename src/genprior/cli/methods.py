"""``genprior methods`` and ``genprior models``: what the method table and the model zoo hold."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "methods",
        help="list the methods (`genprior solve --method`, bench configs), what each needs",
        description="List the method table: each method's name, the model it needs and what it does. "
        "With --settings, also every setting `--set NAME=VALUE` can give, with its default.",
    )
    p.add_argument("--settings", action="store_true", help="also list each method's settings and defaults")
    p.set_defaults(func=run_methods)
    q = sub.add_parser(
        "models",
        help="list the bundled models (`--model NAME`), whether their weights are installed",
        description="List the model zoo: each model's name, image shape, what it is, and whether its "
        "weights are installed (with the command that installs them when not).",
    )
    q.set_defaults(func=run_models)


def run_methods(args: argparse.Namespace) -> int:
    import dataclasses

    from ..solvers.registry import METHODS, settable

    width = max(len(n) for n in METHODS)
    nw = max(len(m.needs) for m in METHODS.values())
    for m in METHODS.values():
        print(f"{m.name:<{width}}  needs {m.needs:<{nw}}  {m.description}")
        if args.settings:
            defaults = {f.name: f.default for f in dataclasses.fields(m.config_class())}
            fixed = "".join(f"  ({k} = {v!r} fixed)" for k, v in m.fixed)
            print(" " * (width + 2) + ", ".join(f"{k}={defaults[k]!r}" for k in settable(m)) + fixed)
    return 0


def run_models(args: argparse.Namespace) -> int:
    from ..zoo import list_models

    models = list_models()
    width = max(len(m["name"]) for m in models)
    for m in models:
        shape = "x".join(map(str, m["image_shape"]))
        state = "installed" if m["installed"] else f"not installed: {m['install_hint']}"
        print(f"{m['name']:<{width}}  {shape:<8}  {m['description']}  [{state}]")
    print(
        f"{'a path':<{width}}  {'':<8}  a StyleGAN2 (rosinality g_ema or NVIDIA .pkl), genprior VAE, DCGAN, DDPM or LDM file"
    )
    from ..generators.checkpoint import safe_load
    from ..zoo import score_model_files

    print("score models (the prior of `--method sgilo`, matched to a generator by its weights):")
    for f in score_model_files():
        d = safe_load(f)
        info = d.get("info", {})
        print(
            f"  {f.name}  stage {d['stage']} of {info.get('generator', '?')}, {info.get('steps', '?')} steps"
        )
    if not score_model_files():
        print(
            "  none bundled: train one with `genprior train score --model NAME --stage K --out DIR --export FILE`"
        )
    return 0
