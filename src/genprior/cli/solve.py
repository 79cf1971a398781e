"""``genprior solve``: reconstruct one image from simulated (or given) measurements, or every
image of a folder (``--input-dir``, :mod:`genprior.folder`)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

from ..errors import UserError
from .common import add_device_argument, check_output, resolve_device

TASKS = ("inpaint", "superres", "denoise", "cs", "colorize")


#: shortcut options and the config setting each one sets (the rest: --set NAME=VALUE)
SHORTCUTS = {
    "steps": "steps",
    "stages": "stages",
    "radius": "radius",
    "lr": "lr",
    "restarts": "restarts",
    "samples": "chains",
}


def register(sub: argparse._SubParsersAction) -> None:
    from ..solvers.registry import METHODS

    p = sub.add_parser(
        "solve",
        help="reconstruct an image with any method of the table (see `genprior methods`)",
        description="Simulate measurements of --input (or take them as given with --measured) and "
        "reconstruct the image with a method of the table (`genprior methods`), on a generative prior "
        "(--model) or, for the methods that need none, at the size of the input.",
    )
    p.add_argument(
        "--model",
        help="zoo name (see `genprior models`) or checkpoint path; "
        "the methods that need no model (lasso-*, dip) take the image size from --input",
    )
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--input", type=Path, help="clean image (PNG/JPEG/.npy in [0,1])")
    p.add_argument(
        "--input-dir",
        type=Path,
        help="a folder of clean images: solve each (with --out-dir; resumes when rerun)",
    )
    p.add_argument("--measured", action="store_true", help="--input is already the degraded measurement")
    g = p.add_argument_group("inpainting")
    g.add_argument("--mask", type=Path, help="mask PNG, white = observed")
    g.add_argument("--mask-ratio", type=float, help="fraction of pixels missing (random mask)")
    g.add_argument("--box", type=str, help="missing box X0,Y0,X1,Y1 in pixels")
    p.add_argument("--scale", type=int, default=4, help="super-resolution factor (2..16)")
    p.add_argument("--measurements", type=int, help="compressed sensing: number of measurements M")
    p.add_argument("--cs-operator", choices=("gaussian", "circulant"), default="gaussian")
    p.add_argument(
        "--noise-std", type=float, default=None, help="Gaussian noise std on y (denoise: default 0.1)"
    )
    m = p.add_argument_group("method")
    m.add_argument(
        "--method", choices=list(METHODS), default="ilo", help="default ilo; see `genprior methods`"
    )
    m.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the method's config, typed and checked from it; repeatable, e.g. "
        "--set radius=0.2 --set stages=1,2 (lists: comma-separated)",
    )
    m.add_argument("--steps", help="= --set steps=...: steps (ILO: per round, comma list, round 0 first)")
    m.add_argument("--stages", help="= --set stages=...: ILO's stages of rounds 1, 2, ... (comma list)")
    m.add_argument("--radius", help="= --set radius=...: ILO's l1 radius per state element, per round")
    m.add_argument("--lr", help="= --set lr=...: learning rate")
    m.add_argument("--restarts", help="= --set restarts=...: CSGM's random restarts")
    m.add_argument(
        "--samples",
        help="= --set chains=...: a posterior sampler's samples (sgilo, the diffusion solvers); writes "
        "OUT-std.png and OUT-samples.png (with --input-dir: NAME-std.png)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the measurements and the method (default 0; --set seed=N: the method's alone)",
    )
    p.add_argument("--resize", action="store_true", help="resize the input to the generator's size")
    p.add_argument("--out", type=Path, help="reconstruction PNG")
    f = p.add_argument_group("folders (--input-dir)")
    f.add_argument(
        "--out-dir", type=Path, help="per image NAME.png, NAME-compare.png, NAME.json; summary.csv"
    )
    f.add_argument("--batch-size", type=int, default=8, help="images per solver call (default 8)")
    f.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default) or ray: batches as Ray tasks",
    )
    f.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    p.add_argument("--side-by-side", type=Path, help="comparison PNG (default: OUT with -compare.png)")
    p.add_argument("--json", type=Path, help="JSON record of the run")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(p)
    p.set_defaults(func=run)


def _parse_box(text: str) -> tuple[int, int, int, int]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4:
        raise UserError(f"--box {text!r} is not X0,Y0,X1,Y1: give four integers, e.g. --box 8,8,24,24")
    return vals  # type: ignore[return-value]


def _measured_to_y(img: Any, args: argparse.Namespace, physics: Any, shape: tuple[int, int, int]) -> Any:
    """Turn an already-degraded image into the measurement vector of ``physics``."""
    c, h, w = shape
    if args.task == "cs":
        raise UserError(
            "--measured is not supported for --task cs: give the clean image and let genprior simulate y"
        )
    if args.task == "superres":
        want = (h // args.scale, w // args.scale)
        if tuple(img.shape[-2:]) != want:
            raise UserError(
                f"the measured low-resolution image is {img.shape[-1]}x{img.shape[-2]}; with --scale "
                f"{args.scale} it must be {want[1]}x{want[0]}"
            )
        return img
    if args.task == "inpaint":
        return physics.A(img)  # zero the missing pixels exactly as the operator does
    if args.task == "colorize":
        return img.mean(1, keepdim=True) if img.shape[1] == 3 else img
    return img


def _task_args(args: argparse.Namespace) -> dict[str, Any]:
    """The task's arguments of ``make_physics`` from the options (a mask as its file's path)."""
    masks_given = sum(v is not None for v in (args.mask, args.mask_ratio, args.box))
    if args.task == "inpaint" and masks_given != 1:
        raise UserError("inpainting needs exactly one of --mask, --mask-ratio or --box")
    if args.task != "inpaint" and masks_given:
        raise UserError(f"--mask/--mask-ratio/--box only apply to --task inpaint, not {args.task}")
    if args.task == "cs" and args.measurements is None:
        raise UserError("--task cs needs --measurements M (the number of measurements)")
    noise_std = args.noise_std if args.noise_std is not None else (0.1 if args.task == "denoise" else 0.0)
    out: dict[str, Any] = {"noise_std": noise_std}
    if args.task == "inpaint":
        out.update(
            mask=None if args.mask is None else str(args.mask),
            mask_ratio=args.mask_ratio,
            box=None if args.box is None else _parse_box(args.box),
        )
    elif args.task == "superres":
        out["scale"] = args.scale
    elif args.task == "cs":
        out.update(measurements=args.measurements, cs_operator=args.cs_operator)
    return out


def _check_io_options(args: argparse.Namespace) -> None:
    folder = args.input_dir is not None
    if folder and args.input is not None:
        raise UserError("give either --input (one image) or --input-dir (a folder), not both")
    if not folder and args.input is None:
        raise UserError("give the image to solve: --input IMAGE (or a folder: --input-dir DIR --out-dir OUT)")
    if folder:
        if args.out_dir is None:
            raise UserError("--input-dir needs --out-dir: the folder the results are written into")
        for opt, given in (("--out", args.out), ("--json", args.json), ("--side-by-side", args.side_by_side)):
            if given is not None:
                raise UserError(f"{opt} is for one image; with --input-dir every result goes into --out-dir")
        if args.measured:
            raise UserError("--measured is for one image: a folder holds clean images that genprior measures")
    else:
        if args.out is None:
            raise UserError("--input needs --out: the reconstruction PNG to write")
        if args.out_dir is not None or args.engine != "local" or args.address is not None:
            raise UserError("--out-dir, --engine and --address are for folders (--input-dir)")
    if args.seed is not None and args.seed < 0:
        raise UserError(f"--seed {args.seed}: give an integer >= 0")
    _check_outputs(args)


def _outputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The files one solve may write, with the option each comes from."""
    out = args.out
    stem = out.stem
    return [
        ("--out", out),
        ("--side-by-side", args.side_by_side or out.with_name(stem + "-compare.png")),
        ("--out", out.with_name(stem + "-std.png")),
        ("--out", out.with_name(stem + "-samples.png")),
    ] + ([("--json", args.json)] if args.json is not None else [])


def _check_outputs(args: argparse.Namespace) -> None:
    """Every output can be written, and none is the input (checked before any work)."""
    if args.input_dir is not None:
        check_output(args.out_dir, "--out-dir", folder=True)
        return
    for flag, path in _outputs(args):
        if args.input is not None and path.absolute() == args.input.absolute():
            raise UserError(f"{flag} {path} would overwrite --input {args.input}: give another path")
        check_output(path, flag)


def run_folder(args: argparse.Namespace, method: Any) -> int:
    from ..folder import FolderJob, solve_folder

    settings = _method_settings(method, args)
    if "seed" in settings:
        raise UserError(
            "--set seed: with --input-dir the solver's seeds come from --seed and each file's name; give --seed"
        )
    job = FolderJob(
        method=args.method,
        task=args.task,
        model=None if args.model is None else str(args.model),
        task_args=_task_args(args),
        settings=settings,
        seed=args.seed or 0,
        batch_size=args.batch_size,
        resize=args.resize,
    )
    res = solve_folder(
        job,
        args.input_dir,
        args.out_dir,
        device=resolve_device(args.device),
        engine=args.engine,
        address=args.address,
        progress=not args.quiet,
    )
    n = len(res.done) + len(res.skipped)
    print(
        f"wrote {len(res.done)} images into {args.out_dir} ({len(res.skipped)} finished before, "
        f"{len(res.failed)} failed; {n} done in all; summary.csv)"
    )
    return 2 if res.failed else 0


def run(args: argparse.Namespace) -> int:
    import torch

    from .. import metrics
    from ..folder import result_label
    from ..io import save_comparison, save_image, save_std_map, write_json_atomic
    from ..physics import load_mask, make_physics, measurement_preview
    from ..solvers.registry import get_method

    method = get_method(args.method)
    _check_io_options(args)
    if args.input_dir is not None:
        return run_folder(args, method)
    config = _method_config(method, args)  # bad settings fail before anything is loaded
    device = resolve_device(args.device)
    t_start = time.perf_counter()
    task_args = _task_args(args)
    G, (c, h, w), truth, img = _model_and_input(method, args, device)
    if task_args.get("mask") is not None:
        task_args["mask"] = load_mask(task_args["mask"], (c, h, w))
    seed = args.seed or 0  # of the measurements (and of the method, unless --set seed= gives its own)
    physics = make_physics(args.task, (c, h, w), seed=seed, device=device, **task_args)
    if args.measured:
        y = _measured_to_y(img.to(device), args, physics, (c, h, w))
    else:
        torch.manual_seed(seed)
        y = physics(truth)
    if not torch.isfinite(y).all():
        raise UserError("the measurements hold NaN or infinite values: check the input and --noise-std")

    solver = method.build(config, model=G, image_shape=(c, h, w), device=device)
    x_hat = solver(y, physics, progress=not args.quiet)
    rec = solver.last_record
    assert rec is not None

    result: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"},
        "model": None if args.model is None else str(args.model),
        "device": str(device),
        "image_shape": [c, h, w],
        "method": args.method,
        "config": {k: v for k, v in dataclasses.asdict(config).items() if not callable(v)},
        "measurement_error": float(metrics.measurement_error(x_hat, y, physics)[0]),
        "time_s": time.perf_counter() - t_start,
        "solve_time_s": rec.time_s,
        "record": rec.to_dict(),
    }
    if truth is not None:
        result["psnr"] = _finite(float(metrics.psnr(x_hat, truth)[0]))
        result["ssim"] = float(metrics.ssim(x_hat, truth)[0])

    preview = measurement_preview(y, physics, (c, h, w)).to(device)
    panels = ([("truth", truth[0])] if truth is not None else []) + [
        ("measurement", preview[0]),
        (result_label(args.method, result.get("psnr")), x_hat[0]),
    ]
    sep = torch.ones(1, c, h, 2, device=device)
    compare = args.side_by_side or args.out.with_name(args.out.stem + "-compare.png")

    post = getattr(rec, "posterior", None)
    written = [args.out, compare]
    if post is not None and post.num_samples > 1:
        std_png = args.out.with_name(args.out.stem + "-std.png")
        grid_png = args.out.with_name(args.out.stem + "-samples.png")
        result["posterior"] = {"samples": post.num_samples, **save_std_map(std_png, post.std[0])}
        if "holdout_scale" in rec.extra:  # the std map calibrated on held-out measurements (`holdout`)
            result["posterior"]["holdout_scale"] = rec.extra["holdout_scale"][0]
        if truth is not None:
            where = metrics.unobserved(physics, tuple(truth.shape))
            result["posterior"]["calibration"] = float(metrics.coverage(truth, post.mean, post.std, where)[0])
            result["posterior"]["calibration_pixels"] = int(where.sum())
        n_show = min(post.num_samples, 8)
        tiles = [t for s in post.samples[:n_show, 0] for t in (s, sep[0])][:-1]
        save_image(grid_png, torch.cat(tiles, dim=2))
        written += [std_png, grid_png]
    save_image(args.out, x_hat[0])
    save_comparison(compare, panels)
    if args.json is not None:
        write_json_atomic(args.json, result)
    msg = "wrote " + ", ".join(str(p) for p in written)
    if args.json is not None:
        msg += f" and {args.json}"
    if truth is not None:
        msg += f"  (PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.3f})"
        if "calibration" in result.get("posterior", {}):
            msg += f"  (calibration {result['posterior']['calibration']:.3f})"
    print(msg)
    return 0


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _method_config(method: Any, args: argparse.Namespace) -> Any:
    """The method's config from --set and the shortcut options, checked by the config itself;
    its seed is --seed's (0 by default) unless --set seed= gives another."""
    settings = _method_settings(method, args)
    if "seed" in settings and args.seed is not None and settings["seed"] != args.seed:
        raise UserError(f"--seed {args.seed} and --set seed={settings['seed']} disagree: give one of them")
    return method.make_config(settings, seed=None if "seed" in settings else (args.seed or 0))


def _method_settings(method: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The settings --set and the shortcut options give, each parsed and typed from the config."""
    from ..solvers.registry import parse_setting

    settings: dict[str, Any] = {}
    for flag, name in SHORTCUTS.items():
        text = getattr(args, flag)
        if text is not None:
            k, v = parse_setting(method, f"{name}={text}", flag=f"--{flag}")
            settings[k] = v
    for item in args.settings:
        k, v = parse_setting(method, item)
        if k in settings:
            raise UserError(
                f"--set {item}: {k} is given twice (also by a shortcut option or an earlier --set): give it once"
            )
        settings[k] = v
    return settings


def _model_and_input(
    method: Any, args: argparse.Namespace, device: Any
) -> tuple[Any, tuple[int, int, int], Any, Any]:
    """``(model or None, image shape (C, H, W) of the unknown, truth or None, the input image)``.
    A method that needs no model solves at the input's own size."""
    from ..io import read_image_file

    if method.needs_model:
        if args.model is None:
            raise UserError(
                f"method {method.name!r} needs --model: a zoo name (see `genprior models`) or a checkpoint path"
            )
        from ..zoo import load_model

        G = load_model(str(args.model), method.needs, device=device)
        c, h, w = G.image_shape
        if args.measured:
            channels = 1 if args.task == "colorize" else c
            return (
                G,
                (c, h, w),
                None,
                read_image_file(
                    args.input, channels, None if args.task == "superres" else (h, w), args.resize
                ),
            )
        truth = read_image_file(args.input, c, (h, w), args.resize).to(device)
        return G, (c, h, w), truth, truth
    if args.model is not None:
        raise UserError(
            f"method {method.name!r} uses no model: drop --model (it solves at the size of --input)"
        )
    if args.resize:
        raise UserError(
            f"--resize needs a model's image size; method {method.name!r} solves at the size of --input"
        )
    img = read_image_file(args.input, None, None, False)
    c, h, w = img.shape[1:]
    if args.task == "colorize" and not args.measured and c != 3:
        raise UserError(f"--task colorize needs a colour --input, and {args.input} is grey")
    if not args.measured:
        return None, (c, h, w), img.to(device), img.to(device)
    if args.task == "superres":
        h, w = h * args.scale, w * args.scale
    return None, (3 if args.task == "colorize" else c, h, w), None, img
