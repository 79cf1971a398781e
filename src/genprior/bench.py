"""``genprior bench``: run a grid of (task x level x method x image batch x seed) cells and compare.

A benchmark is described by a config file (TOML, or JSON with the same structure)::

    name = "bora_mnist"             # optional, for titles
    generator = "mnist-vae-20"      # zoo name or checkpoint path (relative to the config file)
    seeds = [0]                     # every cell is run once per seed
    batch_size = 50                 # images solved together in one cell
    device = "cpu"                  # cpu | cuda | auto
    lpips = false                   # add an LPIPS column (net: lpips_net = "alex" | "vgg")
    classifier = "auto"             # "auto", "none", "mnist", "fmnist" or a classifier file
    plot_metrics = ["mse"]          # one PNG per metric, error bars = standard error
    xscale = "linear"               # or "log"; yscale likewise (name and plot settings can change
                                    # between runs: they are not part of the config's identity)

    [images]
    source = "heldout"              # "heldout" (dataset = "mnist" | "fmnist"), "samples", "files",
                                    # or "astronaut" (scikit-image's astronaut face, RGB generators)
    dataset = "mnist"
    count = 300
    # samples: count = 16, seed = 1 (images G(z), z ~ N(0, I))
    # files:   paths = ["a.png", "b.png"], resize = false

    [[tasks]]
    type = "cs"                     # inpaint | superres | denoise | cs | colorize
    name = "cs"                     # label (default: the type); must be unique
    vary = "measurements"           # the level parameter (default per type, see LEVEL_PARAM)
    levels = [10, 25, 50]
    noise_std = 0.1                 # any fixed make_physics() argument
    cs_operator = "gaussian"
    cs_scale = "unscaled"           # "deepinv" (A ~ N(0, 1/m), default) or "unscaled" (N(0, 1))

    [[methods]]
    name = "csgm"                   # a name of METHODS
    label = "CSGM"                  # optional (default: the name); must be unique
    tasks = ["cs"]                  # optional: run on these task labels only
    steps = 1000                    # everything else: the method's settings
    restarts = 10

Cells and determinism. A cell is ``(task, level, method, image batch, seed)``. Its measurement
operator and noise are drawn from a seed derived from ``(seed, task, level, batch)`` -- so every
method sees the *same* measurements of the same images (a paired comparison) -- and the solver's
initialisation from ``(seed, method, task, level, batch)``. Every cell runs with a fixed number of
torch threads (1 by default), in any process: the table is bit-for-bit the same with any
``--workers`` (the ``time_s`` column aside).

Results. ``OUT/cells/<hash>.json`` holds each finished cell (written atomically), which is what
resuming reads, with a fingerprint of the source code it depends on (:func:`code_fingerprint`):
a stored cell whose solver code has changed since is run again. ``OUT/config.json`` holds the
normalised config and its hash. At the end, ``results.csv``
and ``results.json`` hold one row per image and cell, ``summary.csv`` / ``summary.md`` the mean and
standard error per (task, level, method), and ``plot_<metric>.png`` one panel per task, one line
per method.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

FORMAT = "genprior-bench"
FORMAT_VERSION = 1

#: the parameter a task's levels set, unless the task says ``vary = ...``
LEVEL_PARAM = {
    "cs": "measurements",
    "inpaint": "mask_ratio",
    "superres": "scale",
    "denoise": "noise_std",
    "colorize": "noise_std",
}
#: fixed make_physics arguments a task may set (plus cs_scale, handled here)
TASK_PARAMS = ("mask", "mask_ratio", "box", "scale", "measurements", "cs_operator", "noise_std", "cs_scale")
CS_SCALES = ("deepinv", "unscaled")
IMAGE_SOURCES = ("heldout", "samples", "files", "astronaut")
METRIC_COLUMNS = ("psnr", "ssim", "mse", "lpips", "meas_err", "correct", "time_s", "cpu_s")
ROW_COLUMNS = (
    "task", "task_type", "level_param", "level", "method", "method_name", "seed", "batch",
    "image", "image_id", "label", "psnr", "ssim", "mse", "lpips", "meas_err", "pred", "correct",
    "time_s", "cpu_s",
)  # fmt: skip
#: columns that legitimately differ between two runs of the same config
TIMING_COLUMNS = ("time_s", "cpu_s")

_TOP_KEYS = (
    "name", "generator", "seeds", "batch_size", "device", "lpips", "lpips_net", "classifier",
    "plot_metrics", "xscale", "yscale", "plot_best_of", "images", "tasks", "methods",
)  # fmt: skip
#: settings that change only how results are shown (not part of the config's identity)
PRESENTATION_KEYS = ("name", "plot_metrics", "xscale", "yscale", "plot_best_of")


# ==== methods ====================================================================================
@dataclass(frozen=True)
class MethodInfo:
    """An entry of the method registry.

    ``build(generator, image_shape, settings, seed, device)`` returns a callable ``solver(y, physics)``;
    ``config_class()`` the dataclass its settings fill (for validation), or None to skip checks.
    """

    name: str
    needs_generator: bool
    module: str
    description: str
    build: Callable[..., Any]
    config_class: Callable[[], Any]


def _import(module: str, method: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            raise UserError(
                f"method {method!r} is not available in this install ({module} is missing): update genprior"
            ) from None
        raise


def _config_from(cls: Any, settings: Mapping[str, Any], method: str, seed: int | None) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(settings) - names)
    if unknown:
        allowed = ", ".join(sorted(n for n in names if n != "perceptual"))
        raise UserError(f"method {method!r} has no setting {unknown[0]!r}: its settings are {allowed}")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
    if seed is not None and "seed" in names:
        kw["seed"] = seed
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise UserError(f"method {method!r}: bad settings ({e})") from None


def _find_config_class(mod: Any, prefer: str) -> Any:
    cls = getattr(mod, prefer, None)
    if cls is not None and dataclasses.is_dataclass(cls):
        return cls
    return None


def _ilo_cfg() -> Any:
    from .solvers.ilo import ILOConfig

    return ILOConfig


def _csgm_cfg() -> Any:
    from .solvers.csgm import CSGMConfig

    return CSGMConfig


def _build_ilo(G: Any, shape: tuple[int, int, int], s: dict[str, Any], seed: int, device: Any = None) -> Any:
    from .solvers.ilo import ILO, ILOConfig

    return ILO(G, _config_from(ILOConfig, s, "ilo", seed))


def _build_csgm(G: Any, shape: tuple[int, int, int], s: dict[str, Any], seed: int, device: Any = None) -> Any:
    from .solvers.csgm import CSGM, CSGMConfig

    return CSGM(G, _config_from(CSGMConfig, s, "csgm", seed))


def _baseline(
    module: str,
    cls_name: str,
    cfg_name: str,
    method: str,
    with_generator: bool,
    extra: dict[str, Any] | None = None,
):
    """A builder for a baseline solver ``cls_name(generator or image_shape, config)``."""

    def cfg_class() -> Any:
        return _find_config_class(_import(module, method), cfg_name)

    def build(G: Any, shape: tuple[int, int, int], s: dict[str, Any], seed: int, device: Any = None) -> Any:
        mod = _import(module, method)
        cls = getattr(mod, cls_name, None)
        if cls is None:
            raise UserError(
                f"method {method!r} is not available in this install ({module}.{cls_name} is missing): update genprior"
            )
        settings = {**(extra or {}), **s}
        first = G if with_generator else shape
        kw: dict[str, Any] = {}
        if not with_generator and device is not None:
            import inspect

            try:
                if "device" in inspect.signature(cls).parameters:
                    kw["device"] = device
            except (TypeError, ValueError):
                pass
        cfg_cls = _find_config_class(mod, cfg_name)
        if cfg_cls is not None:
            cfg = _config_from(cfg_cls, settings, method, seed)
            return cls(first, cfg, **kw)
        try:
            return cls(first, **settings, **kw)
        except TypeError as e:
            raise UserError(f"method {method!r}: bad settings ({e})") from None

    return build, cfg_class


def _registry() -> dict[str, MethodInfo]:
    out: dict[str, MethodInfo] = {
        "ilo": MethodInfo(
            "ilo", True, "genprior.solvers.ilo", "Intermediate Layer Optimization", _build_ilo, _ilo_cfg
        ),
        "csgm": MethodInfo(
            "csgm", True, "genprior.solvers.csgm", "CSGM (Bora et al. 2017)", _build_csgm, _csgm_cfg
        ),
    }
    specs = (
        ("pulse", True, "genprior.solvers.pulse", "PULSE", "PULSEConfig", None, "PULSE (Menon et al. 2020)"),
        (
            "projector",
            True,
            "genprior.solvers.projector",
            "StyleGAN2Projector",
            "ProjectorConfig",
            None,
            "StyleGAN2 projector",
        ),
        (
            "lasso-dct",
            False,
            "genprior.solvers.sparse",
            "Lasso",
            "LassoConfig",
            {"basis": "dct"},
            "Lasso in the DCT basis",
        ),
        (
            "lasso-wavelet",
            False,
            "genprior.solvers.sparse",
            "Lasso",
            "LassoConfig",
            {"basis": "wavelet"},
            "Lasso in a wavelet basis",
        ),
        (
            "lasso-pixel",
            False,
            "genprior.solvers.sparse",
            "Lasso",
            "LassoConfig",
            {"basis": "pixel"},
            "Lasso in the pixel basis",
        ),
        ("dip", False, "genprior.solvers.dip", "DeepImagePrior", "DIPConfig", None, "Deep Image Prior"),
    )
    for name, needs_g, module, cls_name, cfg_name, extra, desc in specs:
        build, cfg_class = _baseline(module, cls_name, cfg_name, name, needs_g, extra)
        out[name] = MethodInfo(name, needs_g, module, desc, build, cfg_class)
    return out


METHODS: dict[str, MethodInfo] = _registry()


# ==== config =====================================================================================
@dataclass
class TaskSpec:
    label: str
    type: str
    vary: str
    levels: list[Any]
    params: dict[str, Any]


@dataclass
class MethodSpec:
    label: str
    name: str
    settings: dict[str, Any]
    tasks: list[str] | None = None


@dataclass
class ImageSpec:
    source: str
    dataset: str | None = None
    count: int | None = None
    seed: int = 0
    paths: list[str] = field(default_factory=list)
    resize: bool = False


@dataclass
class BenchConfig:
    name: str
    generator: str
    seeds: list[int]
    batch_size: int
    device: str
    lpips: bool
    lpips_net: str
    classifier: str
    plot_metrics: list[str]
    xscale: str
    yscale: str
    images: ImageSpec
    tasks: list[TaskSpec]
    methods: list[MethodSpec]
    base_dir: str = "."
    #: plots only: {shown label: label prefix}; the methods whose labels start with the prefix
    #: (one method at several settings) are drawn as one line, the best of them at each point
    plot_best_of: dict[str, str] = field(default_factory=dict)
    #: fingerprint of the generator's weights (sha256 of the checkpoint file, when known)
    generator_sha256: str | None = None
    #: the classifier file the ``correct`` column uses (resolved from ``classifier``) and its sha256
    classifier_path: str | None = None
    classifier_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BenchConfig:
        d = dict(d)
        d["images"] = ImageSpec(**d["images"])
        d["tasks"] = [TaskSpec(**t) for t in d["tasks"]]
        d["methods"] = [MethodSpec(**m) for m in d["methods"]]
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """What decides the results: everything but presentation (name, plot settings) and where
        the config file lives; two configs with the same identity share their finished cells."""
        d = self.to_dict()
        for k in PRESENTATION_KEYS + ("base_dir",):
            d.pop(k)
        return d

    def hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def image_count(self) -> int:
        if self.images.source == "files":
            return len(self.images.paths)
        return int(self.images.count or 0)


def _type_name(v: Any) -> str:
    return type(v).__name__


def _want(
    d: Mapping[str, Any], key: str, kinds: tuple[type, ...], where: str, default: Any = ..., hint: str = ""
) -> Any:
    if key not in d:
        if default is ...:
            raise UserError(f"{where} needs {key!r}{': ' + hint if hint else ''}")
        return default
    v = d[key]
    ok = isinstance(v, kinds) and not (isinstance(v, bool) and bool not in kinds)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds)
        raise UserError(
            f"{where}: {key} = {v!r} is a {_type_name(v)}, expected {names}{' (' + hint + ')' if hint else ''}"
        )
    return v


def _scalar_ok(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool)) or (
        isinstance(v, list) and all(isinstance(e, (int, float, str, bool)) for e in v)
    )


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(
            f"bench config {path} does not exist: give a .toml or .json file (see docs/benchmarks.md)"
        )
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON (line {e.lineno}: {e.msg}): fix the file") from None
    else:
        import tomllib

        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise UserError(f"{path} is not valid TOML ({str(e).splitlines()[0]}): fix the file") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a table of settings at the top level")
    return raw


def parse_config(
    raw: Mapping[str, Any], base_dir: str | os.PathLike = ".", source: str = "config"
) -> BenchConfig:
    """Validate a raw config dict (parsed TOML/JSON) into a :class:`BenchConfig` (no model is loaded)."""
    base = Path(base_dir)
    unknown = sorted(set(raw) - set(_TOP_KEYS))
    if unknown:
        raise UserError(
            f"{source}: unknown setting {unknown[0]!r}: the top-level settings are {', '.join(_TOP_KEYS)}"
        )
    gen = _want(
        raw, "generator", (str,), source, hint="a zoo name such as 'mnist-vae-20' or a checkpoint path"
    )
    seeds = _want(raw, "seeds", (list, int), source, default=[0])
    seeds = [seeds] if isinstance(seeds, int) else seeds
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UserError(f"{source}: seeds = {seeds!r}: give a list of integers such as [0, 1]")
    if len(set(seeds)) != len(seeds):
        raise UserError(f"{source}: seeds = {seeds!r} repeats a seed: give distinct seeds")
    batch_size = _want(raw, "batch_size", (int,), source, default=10)
    if batch_size < 1:
        raise UserError(f"{source}: batch_size = {batch_size} must be at least 1")
    device = _want(raw, "device", (str,), source, default="cpu")
    lpips = _want(raw, "lpips", (bool,), source, default=False)
    lpips_net = _want(raw, "lpips_net", (str,), source, default="alex")
    classifier = _want(raw, "classifier", (str,), source, default="auto")
    if classifier not in ("auto", "none", "mnist", "fmnist"):
        q = Path(classifier).expanduser()
        q = q if q.is_absolute() else (base / q).resolve()
        if not q.is_file():
            raise UserError(
                f"{source}: classifier = {classifier!r}: use auto, none, mnist, fmnist or a classifier file"
            )
        classifier = str(q)
    plot_metrics = _want(raw, "plot_metrics", (list,), source, default=["mse"])
    bad = [m for m in plot_metrics if m not in METRIC_COLUMNS]
    if bad:
        raise UserError(f"{source}: plot_metrics has {bad[0]!r}: choose from {', '.join(METRIC_COLUMNS)}")
    xscale = _want(raw, "xscale", (str,), source, default="linear")
    yscale = _want(raw, "yscale", (str,), source, default="linear")
    for key, val in (("xscale", xscale), ("yscale", yscale)):
        if val not in ("linear", "log"):
            raise UserError(f"{source}: {key} = {val!r}: use 'linear' or 'log'")
    name = _want(raw, "name", (str,), source, default=Path(str(source)).stem)
    best_of = _want(
        raw,
        "plot_best_of",
        (dict,),
        source,
        default={},
        hint='a table such as {"Lasso (DCT, best alpha)" = "Lasso (DCT"}',
    )
    if not all(isinstance(v, str) and v for v in best_of.values()):
        raise UserError(f"{source}: plot_best_of values must be method-label prefixes (non-empty strings)")

    # generator: a path relative to the config file, or a zoo name
    from .zoo import ZOO

    if gen not in ZOO:
        p = Path(gen).expanduser()
        if not p.is_absolute():
            p = (base / p).resolve()
        if not p.is_file():
            raise UserError(
                f"{source}: generator {gen!r} is neither a zoo model ({', '.join(ZOO)}) nor an existing checkpoint file"
            )
        gen = str(p)

    # images
    im = _want(raw, "images", (dict,), source, hint="an [images] table")
    im_keys = {"source", "dataset", "count", "seed", "paths", "resize"}
    bad = sorted(set(im) - im_keys)
    if bad:
        raise UserError(
            f"{source}: [images] has unknown setting {bad[0]!r}: use {', '.join(sorted(im_keys))}"
        )
    src = _want(im, "source", (str,), f"{source} [images]", hint="heldout, samples, files or astronaut")
    if src not in IMAGE_SOURCES:
        raise UserError(f"{source}: [images] source = {src!r}: choose one of {', '.join(IMAGE_SOURCES)}")
    images = ImageSpec(source=src)
    if src == "heldout":
        ds = _want(im, "dataset", (str,), f"{source} [images]", hint="mnist or fmnist")
        if ds not in ("mnist", "fmnist"):
            raise UserError(f"{source}: [images] dataset = {ds!r}: choose mnist or fmnist")
        cnt = _want(im, "count", (int,), f"{source} [images]", default=300)
        if not 1 <= cnt <= 300:
            raise UserError(
                f"{source}: [images] count = {cnt}: the held-out sets have 300 images, give 1..300"
            )
        images.dataset, images.count = ds, cnt
    elif src == "samples":
        cnt = _want(im, "count", (int,), f"{source} [images]", hint="how many generator samples")
        if cnt < 1:
            raise UserError(f"{source}: [images] count = {cnt} must be at least 1")
        images.count = cnt
        images.seed = _want(im, "seed", (int,), f"{source} [images]", default=0)
    elif src == "astronaut":
        extra = sorted(set(im) - {"source"})
        if extra:
            raise UserError(
                f"{source}: [images] source = 'astronaut' is one fixed image: remove {extra[0]!r}"
            )
        images.count = 1
    else:
        paths = _want(im, "paths", (list,), f"{source} [images]", hint="a list of image files")
        if not paths or not all(isinstance(p, str) for p in paths):
            raise UserError(f"{source}: [images] paths must be a non-empty list of file names")
        resolved = []
        for p in paths:
            q = Path(p).expanduser()
            q = q if q.is_absolute() else (base / q).resolve()
            if not q.is_file():
                raise UserError(
                    f"{source}: image file {p!r} does not exist (paths are relative to the config file)"
                )
            resolved.append(str(q))
        images.paths = resolved
        images.resize = _want(im, "resize", (bool,), f"{source} [images]", default=False)
        images.count = len(resolved)

    # tasks
    from .physics.tasks import TASKS

    raw_tasks = _want(raw, "tasks", (list,), source, hint="one or more [[tasks]] tables")
    if not raw_tasks:
        raise UserError(f"{source}: no [[tasks]]: give at least one task")
    tasks: list[TaskSpec] = []
    for i, t in enumerate(raw_tasks):
        where = f"{source} [[tasks]] #{i + 1}"
        if not isinstance(t, dict):
            raise UserError(f"{where} must be a table")
        ttype = _want(t, "type", (str,), where, hint=", ".join(TASKS))
        if ttype not in TASKS:
            raise UserError(f"{where}: unknown task type {ttype!r}: choose one of {', '.join(TASKS)}")
        label = _want(t, "name", (str,), where, default=ttype)
        vary = _want(t, "vary", (str,), where, default=LEVEL_PARAM[ttype])
        if vary not in TASK_PARAMS or vary in ("cs_operator", "cs_scale", "mask"):
            raise UserError(
                f"{where}: vary = {vary!r}: choose one of measurements, mask_ratio, box, scale, noise_std"
            )
        levels = _want(t, "levels", (list,), where, hint=f"values of {vary}, e.g. levels = [...]")
        if not levels or not all(_scalar_ok(v) for v in levels):
            raise UserError(f"{where}: levels must be a non-empty list of numbers")
        if len({json.dumps(v) for v in levels}) != len(levels):
            raise UserError(f"{where}: levels {levels!r} repeat a value: give distinct levels")
        params = {k: v for k, v in t.items() if k not in ("type", "name", "vary", "levels")}
        bad = sorted(set(params) - set(TASK_PARAMS))
        if bad:
            raise UserError(f"{where}: unknown task setting {bad[0]!r}: use {', '.join(TASK_PARAMS)}")
        if vary in params:
            raise UserError(f"{where}: {vary} is both fixed and varied (levels): remove one")
        if "mask" in params and isinstance(params["mask"], str):
            q = Path(params["mask"]).expanduser()
            params["mask"] = str(q if q.is_absolute() else (base / q).resolve())
        scale = params.get("cs_scale", "deepinv")
        if scale not in CS_SCALES:
            raise UserError(f"{where}: cs_scale = {scale!r}: choose one of {', '.join(CS_SCALES)}")
        if scale == "unscaled" and (ttype != "cs" or params.get("cs_operator", "gaussian") != "gaussian"):
            raise UserError(
                f"{where}: cs_scale = 'unscaled' applies to type = 'cs' with cs_operator = 'gaussian' only"
            )
        if any(x.label == label for x in tasks):
            raise UserError(f"{where}: two tasks are named {label!r}: give each a distinct name")
        tasks.append(TaskSpec(label=label, type=ttype, vary=vary, levels=list(levels), params=params))

    # methods
    raw_methods = _want(raw, "methods", (list,), source, hint="one or more [[methods]] tables")
    if not raw_methods:
        raise UserError(f"{source}: no [[methods]]: give at least one method")
    methods: list[MethodSpec] = []
    for i, m in enumerate(raw_methods):
        where = f"{source} [[methods]] #{i + 1}"
        if not isinstance(m, dict):
            raise UserError(f"{where} must be a table")
        mname = _want(m, "name", (str,), where, hint=", ".join(METHODS))
        if mname not in METHODS:
            raise UserError(f"{where}: unknown method {mname!r}: choose one of {', '.join(METHODS)}")
        label = _want(m, "label", (str,), where, default=mname)
        only = m.get("tasks")
        if only is not None:
            if not isinstance(only, list) or not all(isinstance(s, str) for s in only):
                raise UserError(f"{where}: tasks must be a list of task names")
            missing = [s for s in only if s not in {t.label for t in tasks}]
            if missing:
                raise UserError(f"{where}: tasks names {missing[0]!r}, which is not a task of this config")
        settings = {k: v for k, v in m.items() if k not in ("name", "label", "tasks")}
        for k, v in settings.items():
            if not _scalar_ok(v):
                raise UserError(
                    f"{where}: setting {k} = {v!r} is not a number, string, boolean or list of them"
                )
        if any(x.label == label for x in methods):
            raise UserError(f"{where}: two methods are labelled {label!r}: give each a distinct label")
        # validate the settings now (imports the solver module, builds its config)
        cfg_cls = METHODS[mname].config_class()
        if cfg_cls is not None:
            extra = {
                "lasso-dct": {"basis": "dct"},
                "lasso-wavelet": {"basis": "wavelet"},
                "lasso-pixel": {"basis": "pixel"},
            }
            _config_from(cfg_cls, {**extra.get(mname, {}), **settings}, mname, None)
        methods.append(MethodSpec(label=label, name=mname, settings=settings, tasks=only))

    return BenchConfig(
        name=name, generator=gen, seeds=list(seeds), batch_size=batch_size, device=device, lpips=lpips,
        lpips_net=lpips_net, classifier=classifier, plot_metrics=list(plot_metrics), xscale=xscale, yscale=yscale,
        images=images, tasks=tasks, methods=methods, base_dir=str(base), plot_best_of=dict(best_of),
    )  # fmt: skip


def load_config(path: str | os.PathLike) -> BenchConfig:
    """Read and validate a bench config file (TOML or JSON)."""
    path = Path(path)
    raw = _read_config_file(path)
    cfg = parse_config(raw, base_dir=path.resolve().parent, source=path.name)
    cfg.generator_sha256 = _generator_fingerprint(cfg.generator)
    cfg.classifier_path = resolve_classifier(cfg)
    cfg.classifier_sha256 = _sha256_file(Path(cfg.classifier_path)) if cfg.classifier_path else None
    return cfg


def resolve_classifier(cfg: BenchConfig) -> str | None:
    """The classifier file for the ``correct`` column, or None: ``"none"``; ``"auto"`` when the
    images are a held-out set (or the generator is named mnist*/fmnist*) and genprior ships that
    set's classifier; ``"mnist"``/``"fmnist"``: the shipped one (an error if missing); a path."""
    choice = cfg.classifier
    if choice == "none":
        return None
    try:
        from . import quality
    except ImportError:
        if choice == "auto":
            return None
        raise UserError(f"classifier = {choice!r} needs genprior.quality, which this install lacks") from None
    if choice == "auto":
        ds = cfg.images.dataset if cfg.images.source == "heldout" else None
        if ds is None:
            gname = Path(cfg.generator).name
            ds = "mnist" if gname.startswith("mnist") else "fmnist" if gname.startswith("fmnist") else None
        if ds is None:
            return None
        p = quality.MODELS_DIR / quality.CLASSIFIERS[ds]
        return str(p) if p.is_file() else None
    if choice in quality.CLASSIFIERS:
        p = quality.MODELS_DIR / quality.CLASSIFIERS[choice]
        if not p.is_file():
            raise UserError(
                f"classifier = {choice!r}: {p.name} is not installed; use classifier = 'auto' or 'none'"
            )
        return str(p)
    return choice  # a path, checked by parse_config


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _generator_fingerprint(gen: str) -> str | None:
    """sha256 of the generator's weights file, so that retrained weights are a different config."""
    from . import zoo

    p = Path(gen)
    if p.is_file():
        return _sha256_file(p)
    asset = zoo.ASSETS_MODELS / f"{gen}.pt"
    if asset.is_file():
        return _sha256_file(asset)
    return None


# ==== cells ======================================================================================
@dataclass(frozen=True, eq=False)
class Cell:
    task: str
    level: Any
    method: str
    batch: int
    seed: int

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cell) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def key(self) -> str:
        return json.dumps([self.task, self.level, self.method, self.batch, self.seed])

    @property
    def file_name(self) -> str:
        return hashlib.sha1(self.key.encode()).hexdigest()[:20] + ".json"


def cells_of(cfg: BenchConfig) -> list[Cell]:
    """All cells, in the order the results are reported (task, level, method, seed, batch)."""
    n_batches = math.ceil(cfg.image_count() / cfg.batch_size)
    out = []
    for t in cfg.tasks:
        for lv in t.levels:
            for m in cfg.methods:
                if m.tasks is not None and t.label not in m.tasks:
                    continue
                for s in cfg.seeds:
                    for b in range(n_batches):
                        out.append(Cell(t.label, lv, m.label, b, s))
    return out


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from any JSON-able parts (independent of process and hash salt)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little") & 0x7FFFFFFF


# ---- per-process caches (each worker process keeps its own) -------------------------------------
_CACHE: dict[Any, Any] = {}


def _cached(key: Any, make: Callable[[], Any]) -> Any:
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def _device(cfg: BenchConfig) -> torch.device:
    from .cli.common import resolve_device

    return resolve_device(cfg.device)


def get_generator(cfg: BenchConfig) -> Any:
    from .zoo import load_generator

    dev = _device(cfg)
    return _cached(
        ("G", cfg.generator, cfg.generator_sha256, str(dev)),
        lambda: load_generator(cfg.generator, device=dev),
    )


def get_images(cfg: BenchConfig, G: Any) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """All benchmark images ``(N, C, H, W)`` on the CPU, their ids, and labels (held-out sets)."""

    def make() -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
        c, h, w = G.image_shape
        im = cfg.images
        if im.source == "heldout":
            from .data import heldout

            if c != 1:
                raise UserError(
                    f"the {im.dataset} held-out images are grey but the generator makes {c}-channel images"
                )
            x, labels = heldout(im.dataset, n=im.count, size=h)
            if tuple(x.shape[-2:]) != (h, w):
                raise UserError(
                    f"the {im.dataset} images are {x.shape[-1]}x{x.shape[-2]} but the generator makes {w}x{h}"
                )
            ids = [f"{im.dataset}:{i}" for i in range(len(x))]
            return x, ids, labels
        if im.source == "samples":
            with torch.no_grad():
                x = G.sample(int(im.count), seed=im.seed).detach().float().cpu().clamp(0, 1)
            return x, [f"sample:{im.seed}:{i}" for i in range(len(x))], None
        if im.source == "astronaut":
            from .data import astronaut_face

            if c != 3 or h != w:
                raise UserError(
                    f"the astronaut face is a square RGB image but the generator makes {c}x{h}x{w} images"
                )
            return astronaut_face(h), ["astronaut"], None
        from .io import load_image

        xs = [load_image(p, channels=c, size=(h, w), resize=im.resize) for p in im.paths]
        return torch.cat(xs), [Path(p).name for p in im.paths], None

    return _cached(("images", cfg.hash()), make)


def get_classifier(cfg: BenchConfig, G: Any) -> Any:
    """The classifier for the ``correct`` column (resolved by :func:`resolve_classifier` when the
    config was loaded, so that every process uses the same one), or None."""
    if not cfg.classifier_path:
        return None

    def make() -> Any:
        from . import quality

        return quality.load_classifier(cfg.classifier_path).to(_device(cfg)).eval()

    return _cached(("classifier", cfg.classifier_path, cfg.classifier_sha256), make)


def build_physics(
    task: TaskSpec, level: Any, image_shape: Sequence[int], seed: int, device: torch.device | str
) -> Any:
    """The physics of one (task, level); ``cs_scale = "unscaled"`` rescales deepinv's Gaussian
    matrix from ``N(0, 1/m)`` to ``N(0, 1)`` entries (Bora et al.'s code), noise unchanged."""
    from .physics import make_physics

    params = dict(task.params)
    scale = params.pop("cs_scale", "deepinv")
    params[task.vary] = tuple(level) if isinstance(level, list) else level
    physics = make_physics(task.type, image_shape, seed=seed, device=device, **params)
    if scale == "unscaled":
        c = math.sqrt(int(params["measurements"]))
        with torch.no_grad():  # out of place: deepinv's A^T may be a view of A
            a, at, ad = physics._A * c, physics._A_adjoint * c, physics._A_dagger / c
            physics._A, physics._A_adjoint, physics._A_dagger = a, at, ad
        physics.genprior_cs_scale = "unscaled"
    return physics


def run_cell(cfg: BenchConfig, cell: Cell) -> list[dict[str, Any]]:
    """Solve one cell; returns its rows (one per image)."""
    from . import metrics

    dev = _device(cfg)
    G = get_generator(cfg)
    x_all, ids, labels = get_images(cfg, G)
    lo = cell.batch * cfg.batch_size
    hi = min(lo + cfg.batch_size, len(x_all))
    x = x_all[lo:hi].to(dev)
    task = next(t for t in cfg.tasks if t.label == cell.task)
    mspec = next(m for m in cfg.methods if m.label == cell.method)
    info = METHODS[mspec.name]

    op_seed = derive_seed("operator", cell.seed, cell.task, cell.level, cell.batch)
    physics = build_physics(task, cell.level, G.image_shape, op_seed, dev)
    with torch.no_grad():
        y = physics(x)

    solver_seed = derive_seed("solver", cell.seed, cell.method, cell.task, cell.level, cell.batch)
    torch.manual_seed(solver_seed)
    solver = info.build(
        G if info.needs_generator else None, tuple(G.image_shape), dict(mspec.settings), solver_seed, dev
    )
    t0, c0 = time.perf_counter(), time.process_time()
    x_hat = solver(y, physics)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    x_hat = x_hat.detach().to(dev).float()
    if tuple(x_hat.shape) != tuple(x.shape):
        raise RuntimeError(f"{cell.method} returned shape {tuple(x_hat.shape)} for images {tuple(x.shape)}")

    with torch.no_grad():
        cols: dict[str, list[Any]] = {
            "psnr": metrics.psnr(x_hat, x).tolist(),
            "ssim": metrics.ssim(x_hat, x).tolist(),
            "mse": metrics.mse(x_hat, x).tolist(),
            "meas_err": metrics.measurement_error(x_hat, y, physics).tolist(),
        }
        if cfg.lpips:
            from .losses.lpips import lpips_distance

            cols["lpips"] = lpips_distance(x_hat, x, net=cfg.lpips_net).tolist()
        clf = get_classifier(cfg, G)
        if clf is not None:
            pred = clf(x_hat).argmax(1).cpu()
            truth = labels[lo:hi] if labels is not None else clf(x).argmax(1).cpu()
            cols["pred"] = pred.tolist()
            cols["correct"] = (pred == truth).float().tolist()
    rows = []
    for i in range(hi - lo):
        row: dict[str, Any] = {
            "task": task.label,
            "task_type": task.type,
            "level_param": task.vary,
            "level": cell.level,
            "method": mspec.label,
            "method_name": mspec.name,
            "seed": cell.seed,
            "batch": cell.batch,
            "image": lo + i,
            "image_id": ids[lo + i],
            "label": int(labels[lo + i]) if labels is not None else None,
        }
        for k in ("psnr", "ssim", "mse", "lpips", "meas_err", "pred", "correct"):
            row[k] = cols[k][i] if k in cols else None
        row["time_s"] = elapsed / (hi - lo)
        row["cpu_s"] = cpu / (hi - lo)
        rows.append(row)
    return rows


# ---- workers ------------------------------------------------------------------------------------
def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


#: source files (relative to the genprior package) every cell's result depends on, besides the
#: method's own module and the generator's module
_CODE_FILES = (
    "solvers/common.py", "solvers/projections.py", "solvers/sparse.py", "losses/__init__.py",
    "physics/tasks.py", "physics/circulant.py", "metrics.py", "generators/base.py", "data.py",
)  # fmt: skip
#: the functions of this module that decide a cell's rows (their source is fingerprinted, so
#: that editing the tables or plots does not invalidate stored cells)
_CODE_FUNCTIONS = (
    "run_cell",
    "build_physics",
    "get_images",
    "get_classifier",
    "derive_seed",
    "_config_from",
    "_baseline",
    "_build_ilo",
    "_build_csgm",
)


def code_fingerprint(cfg: BenchConfig, method_label: str) -> str:
    """sha256 of the source files a method's cells depend on: a cell stored by other code (a
    solver changed since) is stale, and resuming runs it again."""
    import importlib.util

    pkg = Path(__file__).resolve().parent
    files = [pkg / f for f in _CODE_FILES]
    mspec = next(m for m in cfg.methods if m.label == method_label)
    spec = importlib.util.find_spec(METHODS[mspec.name].module)
    if spec is not None and spec.origin:
        files.append(Path(spec.origin))
    G = get_generator(cfg)
    mod = sys.modules.get(type(G).__module__)
    if mod is not None and getattr(mod, "__file__", None):
        files.append(Path(mod.__file__))
    h = hashlib.sha256()
    for f in sorted(set(files)):
        h.update(f.name.encode())
        h.update(f.read_bytes() if f.is_file() else b"-")
    import inspect

    for name in _CODE_FUNCTIONS:
        h.update(inspect.getsource(globals()[name]).encode())
    return h.hexdigest()


def _cell_job(
    cfg_dict: dict[str, Any], cell: Cell, cells_dir: str
) -> tuple[Cell, list[dict[str, Any]], float]:
    """Run one cell and store it (atomically); runs in a worker or in the main process."""
    cfg = BenchConfig.from_dict(cfg_dict)
    code = code_fingerprint(cfg, cell.method)
    t0 = time.perf_counter()
    devices = [torch.cuda.current_device()] if _device(cfg).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # run_cell seeds torch: leave the caller's RNG alone
        rows = run_cell(cfg, cell)
    wall = time.perf_counter() - t0
    _store_cell(Path(cells_dir), cfg, cell, rows, wall, code)
    return cell, rows, wall


def _store_cell(
    cells_dir: Path, cfg: BenchConfig, cell: Cell, rows: list[dict[str, Any]], wall: float, code: str
) -> None:
    from .io import write_json_atomic

    write_json_atomic(
        cells_dir / cell.file_name,
        {
            "config_hash": cfg.hash(),
            "code": code,
            "cell": dataclasses.asdict(cell),
            "key": cell.key,
            "wall_s": wall,
            "rows": rows,
        },
    )


def _load_cell(path: Path, cfg_hash: str) -> tuple[Cell, list[dict[str, Any]], str | None] | None:
    """``(cell, rows, code fingerprint)`` of a stored cell, or None (unreadable, other config)."""
    try:
        d = json.loads(path.read_text())
        if d.get("config_hash") != cfg_hash:
            return None
        cell = Cell(**d["cell"])
        if cell.file_name != path.name:
            return None
        return cell, list(d["rows"]), d.get("code")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable: the cell is run again


# ==== the run ====================================================================================
@dataclass
class BenchResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    executed: int
    skipped: int
    files: list[Path]
    #: stored cells run again because the code they depend on changed
    stale: int = 0


def _prepare_out(out: Path, cfg: BenchConfig, resume: bool, config_text: str | None) -> Path:
    from .io import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    cells_dir = out / "cells"
    meta_path = out / "config.json"
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            old_hash = meta.get("hash")
        except (OSError, ValueError):
            old_hash = None
        if old_hash != cfg.hash():
            raise UserError(
                f"{out} holds the results of a different bench config (or of other generator weights): "
                "use another --out directory or delete that one"
            )
        if not resume and cells_dir.is_dir():
            for p in cells_dir.glob("*.json"):
                p.unlink()
    elif out.is_dir() and any(out.iterdir()) and not cells_dir.is_dir():
        raise UserError(f"{out} is not empty and holds no bench results: use a new or empty --out directory")
    cells_dir.mkdir(exist_ok=True)
    write_json_atomic(
        meta_path,
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "hash": cfg.hash(),
            "config": cfg.identity(),
            "config_text": config_text,
        },
    )
    return cells_dir


def run_bench(
    config: str | os.PathLike | BenchConfig,
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    resume: bool = True,
    threads: int = 1,
    progress: bool = True,
    on_cell_done: Callable[[Cell, int], None] | None = None,
    config_text: str | None = None,
) -> BenchResult:
    """Run (or finish) a benchmark and write its tables and plots into ``out_dir``.

    Args:
        config: a config file path or an already validated :class:`BenchConfig`.
        workers: cells run in this many processes (spawned); 1 runs them in this process.
        resume: keep the finished cells found in ``out_dir`` (same config only); False runs all.
        threads: torch threads per cell (the same in every process, so the results do not depend
            on ``workers``).
        on_cell_done: called as ``on_cell_done(cell, n_done)`` after each newly finished cell has
            been stored (tests use it to interrupt a run).
    """
    text = config_text
    if not isinstance(config, BenchConfig):
        path = Path(config)
        cfg = load_config(path)
        text = path.read_text(encoding="utf-8", errors="replace")
    else:
        cfg = config
    if workers < 1:
        raise UserError(f"--workers {workers}: give at least 1")
    if threads < 1:
        raise UserError(f"--threads {threads}: give at least 1")
    out = Path(out_dir)

    # validate everything that can fail before any cell runs: weights, images, physics, solvers
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        G = get_generator(cfg)
        x_all, _, _ = get_images(cfg, G)
        if cfg.image_count() == 0 or len(x_all) == 0:
            raise UserError("the config selects no images")
        for t in cfg.tasks:
            for lv in t.levels:
                build_physics(t, lv, G.image_shape, 0, "cpu")
        if cfg.lpips:
            from .losses.lpips import lpips_distance

            try:
                lpips_distance(x_all[:1], x_all[:1], net=cfg.lpips_net)
            except UserError:
                raise
            except Exception as e:
                raise UserError(
                    f"LPIPS ({cfg.lpips_net}) is not usable here ({type(e).__name__}: {e}): set lpips = false"
                ) from None
        cells_dir = _prepare_out(out, cfg, resume, text)
        all_cells = cells_of(cfg)
        done: dict[Cell, list[dict[str, Any]]] = {}
        h = cfg.hash()
        code = {m.label: code_fingerprint(cfg, m.label) for m in cfg.methods}
        stale = 0
        for p in cells_dir.glob("*.json"):
            got = _load_cell(p, h)
            if got is None:
                continue
            cell, rows_, cell_code = got
            if cell.method in code and cell_code != code[cell.method]:
                stale += 1  # computed by other solver code: run it again
                continue
            done[cell] = rows_
        pending = [c for c in all_cells if c not in done]
        skipped = len(all_cells) - len(pending)
        executed = _run_cells(cfg, pending, cells_dir, workers, threads, progress, done, on_cell_done)
    finally:
        torch.set_num_threads(old_threads)

    rows = [r for c in all_cells for r in done[c]]
    summary = summarize(rows)
    files = write_outputs(out, cfg, rows, summary)
    return BenchResult(out, rows, summary, executed, skipped, files, stale)


def _run_cells(
    cfg: BenchConfig,
    pending: list[Cell],
    cells_dir: Path,
    workers: int,
    threads: int,
    progress: bool,
    done: dict[Cell, list[dict[str, Any]]],
    on_cell_done: Callable[[Cell, int], None] | None,
) -> int:
    from tqdm.auto import tqdm

    if not pending:
        return 0
    bar = tqdm(total=len(pending), disable=not progress, unit="cell", desc="bench", dynamic_ncols=True)
    n = 0
    cfg_dict = cfg.to_dict()
    try:
        if workers == 1:
            for cell in pending:
                _, rows, _ = _cell_job(cfg_dict, cell, str(cells_dir))
                done[cell] = rows
                n += 1
                bar.set_postfix_str(f"{cell.task} {cell.level} {cell.method}", refresh=False)
                bar.update(1)
                if on_cell_done is not None:
                    on_cell_done(cell, n)
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(threads,)
            ) as ex:
                futs = [ex.submit(_cell_job, cfg_dict, c, str(cells_dir)) for c in pending]
                try:
                    for fut in as_completed(futs):
                        cell, rows, _ = fut.result()
                        done[cell] = rows
                        n += 1
                        bar.set_postfix_str(f"{cell.task} {cell.level} {cell.method}", refresh=False)
                        bar.update(1)
                        if on_cell_done is not None:
                            on_cell_done(cell, n)
                except BaseException:
                    for f in futs:
                        f.cancel()
                    raise
    finally:
        bar.close()
    return n


# ==== tables and plots ===========================================================================
def _mean_se(vals: list[float]) -> tuple[float, float]:
    v = [float(x) for x in vals if x is not None and math.isfinite(float(x))]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, math.nan
    var = sum((x - m) ** 2 for x in v) / (len(v) - 1)
    return m, math.sqrt(var / len(v))


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard error (over images and seeds) per (task, level, method), in row order."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["task"], json.dumps(r["level"]), r["method"]), []).append(r)
    out = []
    for (task, lv, method), rs in groups.items():
        d: dict[str, Any] = {
            "task": task,
            "level_param": rs[0]["level_param"],
            "level": json.loads(lv),
            "method": method,
            "n": len(rs),
        }
        for k in METRIC_COLUMNS:
            vals = [r[k] for r in rs if r.get(k) is not None]
            if vals:
                d[f"{k}_mean"], d[f"{k}_se"] = _mean_se(vals)
        out.append(d)
    return out


def _csv_text(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(
            {
                k: ("" if r.get(k) is None else (json.dumps(r[k]) if isinstance(r[k], list) else r[k]))
                for k in columns
            }
        )
    return buf.getvalue()


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def summary_markdown(
    summary: list[dict[str, Any]],
    metrics_: Sequence[str] = ("mse", "psnr", "ssim", "meas_err", "time_s", "cpu_s"),
) -> str:
    """A markdown table: one row per (task, level), one column per (method, metric) pair."""
    present = [m for m in list(metrics_) + ["lpips", "correct"] if any(f"{m}_mean" in s for s in summary)]
    present = list(dict.fromkeys(present))
    lines = ["| task | level | method | n | " + " | ".join(present) + " |", "|" + "---|" * (4 + len(present))]
    for s in summary:
        cells = [
            f"{_fmt(s.get(m + '_mean'))} ± {_fmt(s.get(m + '_se'), 2)}" if f"{m}_mean" in s else "-"
            for m in present
        ]
        lines.append(f"| {s['task']} | {s['level']} | {s['method']} | {s['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


METRIC_LABELS = {
    "mse": "per-pixel MSE  ||x - x̂||² / n",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "lpips": "LPIPS",
    "meas_err": "measurement error",
    "correct": "classifier accuracy",
    "time_s": "time per image (s)",
    "cpu_s": "CPU time per image (s)",
}
LEVEL_LABELS = {
    "measurements": "number of measurements m",
    "mask_ratio": "fraction of pixels missing",
    "scale": "super-resolution factor",
    "noise_std": "noise standard deviation",
    "box": "missing box",
}


#: metrics where a lower value is better (the others: higher is better)
LOWER_IS_BETTER = ("mse", "lpips", "meas_err", "time_s", "cpu_s")


def best_of_summary(
    summary: list[dict[str, Any]], metric: str, best_of: Mapping[str, str]
) -> list[dict[str, Any]]:
    """``summary`` with each family of methods (labels starting with a prefix of ``best_of``)
    replaced, at every (task, level), by its member with the best mean ``metric``, relabelled
    with the family's shown label; the chosen member is kept under ``"best_method"``."""
    if not best_of:
        return list(summary)
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    out: list[dict[str, Any]] = []
    chosen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for s in summary:
        fam = next((lab for lab, pre in best_of.items() if str(s["method"]).startswith(pre)), None)
        if fam is None:
            out.append(s)
            continue
        v = s.get(f"{metric}_mean", math.nan)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        key = (s["task"], json.dumps(s["level"]), fam)
        cur = chosen.get(key)
        if cur is None:
            chosen[key] = {**s, "method": fam, "best_method": s["method"]}
            out.append(chosen[key])
        elif sign * v < sign * cur[f"{metric}_mean"]:
            cur.clear()
            cur.update({**s, "method": fam, "best_method": s["method"]})
    return out


def plot_summary(
    summary: list[dict[str, Any]],
    metric: str,
    path: str | os.PathLike,
    title: str = "",
    xscale: str = "linear",
    yscale: str = "linear",
    best_of: Mapping[str, str] | None = None,
) -> bool:
    """Plot ``metric`` against the level, one panel per task, one line per method (error bars:
    standard error), one legend for the figure. A task whose levels are not all numbers (a box)
    gets a categorical axis. ``best_of`` (see :func:`best_of_summary`) draws a family of
    methods as one line. Returns False (and writes nothing) when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .io import atomic_path

    summary = best_of_summary(summary, metric, best_of or {})
    tasks = list(dict.fromkeys(s["task"] for s in summary))
    panels = [
        (t, ss) for t in tasks if (ss := [s for s in summary if s["task"] == t and f"{metric}_mean" in s])
    ]
    if not panels:
        return False
    methods = list(dict.fromkeys(s["method"] for _, ss in panels for s in ss))
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    markers = "osD^vP*Xh<>p"
    style = {m: dict(color=cmap(i % cmap.N), marker=markers[i % len(markers)]) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels) + 2.6, 3.9), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, (t, ss) in zip(axes[0], panels):
        levels = list(dict.fromkeys(json.dumps(s["level"]) for s in ss))
        numeric = len(levels) > 1 and all(
            isinstance(json.loads(lv), (int, float)) and not isinstance(json.loads(lv), bool) for lv in levels
        )
        pos = {lv: (json.loads(lv) if numeric else i) for i, lv in enumerate(levels)}
        for k, m in enumerate(methods):
            # on a categorical axis the methods sit side by side around each level
            dx = 0.0 if numeric else 0.7 * ((k + 0.5) / len(methods) - 0.5)
            pts = sorted(
                (pos[json.dumps(s["level"])] + dx, s[f"{metric}_mean"], s.get(f"{metric}_se", math.nan))
                for s in ss
                if s["method"] == m
            )
            if not pts:
                continue
            xs, ys, es = zip(*pts)
            es = [0.0 if not math.isfinite(e) else e for e in es]
            h = ax.errorbar(xs, ys, yerr=es, ms=4, capsize=3, lw=1.2, label=m, **style[m])
            handles.setdefault(m, h)
        if numeric:
            ax.set_xscale(xscale)
        else:
            ax.set_xticks(range(len(levels)), [str(json.loads(lv)) for lv in levels])
            ax.set_xlim(-0.5, len(levels) - 0.5)
        ax.set_yscale(yscale if metric not in ("psnr", "ssim", "correct") else "linear")
        ax.set_xlabel(LEVEL_LABELS.get(ss[0]["level_param"], ss[0]["level_param"]))
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_title(t)
        ax.grid(alpha=0.3)
    fig.legend([handles[m] for m in methods if m in handles], [m for m in methods if m in handles],
               loc="center right", fontsize=8, frameon=False)  # fmt: skip
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1 - 2.5 / (3.8 * len(panels) + 2.6), 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True


def write_outputs(
    out: Path, cfg: BenchConfig, rows: list[dict[str, Any]], summary: list[dict[str, Any]]
) -> list[Path]:
    from .io import write_json_atomic, write_text_atomic

    files = []
    p = out / "results.csv"
    write_text_atomic(p, _csv_text(rows, ROW_COLUMNS))
    files.append(p)
    p = out / "results.json"
    write_json_atomic(
        p,
        {"format": FORMAT, "version": FORMAT_VERSION, "name": cfg.name, "config": cfg.identity(), "config_hash": cfg.hash(),
         "rows": rows, "summary": summary},
    )  # fmt: skip
    files.append(p)
    cols = ["task", "level_param", "level", "method", "n"] + [
        f"{m}_{s}" for m in METRIC_COLUMNS for s in ("mean", "se")
    ]
    p = out / "summary.csv"
    write_text_atomic(p, _csv_text(summary, cols))
    files.append(p)
    p = out / "summary.md"
    write_text_atomic(p, summary_markdown(summary))
    files.append(p)
    for metric in cfg.plot_metrics:
        p = out / f"plot_{metric}.png"
        title = f"{cfg.name} ({Path(cfg.generator).name})"
        if plot_summary(
            summary, metric, p, title=title, xscale=cfg.xscale, yscale=cfg.yscale, best_of=cfg.plot_best_of
        ):
            files.append(p)
    return files


def comparable_rows(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows without the timing columns (what two runs of one config must agree on)."""
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]
