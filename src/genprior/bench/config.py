"""Bench configs: the file format (see :mod:`genprior.bench`), its validation, and its identity.

A config is read and checked before any model is loaded; the module imports no torch itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import HELDOUT_N
from ..errors import UserError
from ..solvers.registry import METHODS

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
IMAGE_SOURCES = ("heldout", "samples", "files", "astronaut", "lfw")
METRIC_COLUMNS = (
    "psnr", "ssim", "mse", "lpips", "meas_err", "correct", "psnr_sample", "calibration",
    "calibration_raw", "std_mean", "time_s", "cpu_s", "peak_mb",
)  # fmt: skip
#: psnr_sample, calibration and std_mean come from posterior samplers only: one sample's PSNR, the
#: share of unobserved true pixels inside mean +- 2 std, and the mean per-pixel std;
#: calibration_raw from those that scaled their std map on held-out measurements (`holdout`): the
#: calibration of the std map before it was scaled
ROW_COLUMNS = (
    "task", "task_type", "level_param", "level", "method", "method_name", "seed", "batch",
    "image", "image_id", "label", "psnr", "ssim", "mse", "lpips", "meas_err", "pred", "correct",
    "psnr_sample", "calibration", "calibration_raw", "std_mean", "time_s", "cpu_s", "peak_mb",
)  # fmt: skip
#: columns that legitimately differ between two runs of the same config (peak_mb: the solver's
#: peak memory above its start for the whole batch, in MiB; see bench.cell.PeakMemory)
TIMING_COLUMNS = ("time_s", "cpu_s", "peak_mb")

_TOP_KEYS = (
    "name", "generator", "seeds", "batch_size", "device", "lpips", "lpips_net", "classifier",
    "plot_metrics", "xscale", "yscale", "plot_best_of", "images", "tasks", "methods",
)  # fmt: skip
#: settings that change only how results are shown (not part of the config's identity)
PRESENTATION_KEYS = ("name", "plot_metrics", "xscale", "yscale", "plot_best_of")


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
    label: str  # the name in tables and plots (unique)
    name: str  # the row of the method table
    settings: dict[str, Any]  # on top of the method's config defaults
    tasks: list[str] | None = None  # run on these task labels only (None: all)
    model: str | None = None  # the method's own model (zoo name or path); None: the grid's generator
    model_sha256: str | None = None  # fingerprint of that model's weights
    score_sha256: str | None = None  # of the score model it reads (its `score` file or the bundled ones)
    seed_label: str | None = None  # solve with the seeds of the row of this label (paired ablations)


@dataclass
class ImageSpec:
    source: str
    dataset: str | None = None
    count: int | None = None
    seed: int = 0
    paths: list[str] = field(default_factory=list)
    resize: bool = False
    skip: int = 0  # held-out sets: leave out the first `skip` images (a selection set apart from a test set)


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
        """What decides the results: everything but presentation (name, plot settings), where the
        config file lives and where the classifier file lies (its sha256 stays: a run resumes from
        another checkout); two configs with the same identity share their finished cells."""
        d = self.to_dict()
        for k in PRESENTATION_KEYS + ("base_dir", "classifier_path"):  # the classifier: by its sha256
            d.pop(k)
        for m in d["methods"]:  # a method on the grid's generator: as before methods had models
            if m["model"] is None:
                del m["model"], m["model_sha256"]
            if m["score_sha256"] is None:
                del m["score_sha256"]
            if m["seed_label"] is None:
                del m["seed_label"]
        if not d["images"]["skip"]:  # 0 leaves the identity of configs from before `skip` as it was
            del d["images"]["skip"]
        return d

    def hash(self) -> str:
        return _digest(self.identity())

    def hash_before_2026_12_06(self) -> str:
        """The hash of the same config before its identity left out ``classifier_path``: a run
        folder written then is this config's, not another's (its cells run again: their code
        has changed)."""
        return _digest({**self.identity(), "classifier_path": self.classifier_path})

    def image_count(self) -> int:
        if self.images.source == "files":
            return len(self.images.paths)
        return int(self.images.count or 0)


def _digest(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


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

    gen = _model_ref(gen, base, f"{source}: generator")

    # images
    im = _want(raw, "images", (dict,), source, hint="an [images] table")
    im_keys = {"source", "dataset", "count", "seed", "paths", "resize", "skip"}
    bad = sorted(set(im) - im_keys)
    if bad:
        raise UserError(
            f"{source}: [images] has unknown setting {bad[0]!r}: use {', '.join(sorted(im_keys))}"
        )
    src = _want(im, "source", (str,), f"{source} [images]", hint="heldout, samples, files, astronaut or lfw")
    if src not in IMAGE_SOURCES:
        raise UserError(f"{source}: [images] source = {src!r}: choose one of {', '.join(IMAGE_SOURCES)}")
    images = ImageSpec(source=src)
    if src != "heldout" and "skip" in im:
        raise UserError(
            f"{source}: [images] skip is for the held-out sets only: remove it from source = {src!r}"
        )
    if src == "heldout":
        ds = _want(im, "dataset", (str,), f"{source} [images]", hint="mnist or fmnist")
        if ds not in ("mnist", "fmnist"):
            raise UserError(f"{source}: [images] dataset = {ds!r}: choose mnist or fmnist")
        total = HELDOUT_N
        skip = _want(im, "skip", (int,), f"{source} [images]", default=0)
        if not 0 <= skip < total:
            raise UserError(
                f"{source}: [images] skip = {skip}: the held-out sets have {total} images, give 0..{total - 1}"
            )
        cnt = _want(im, "count", (int,), f"{source} [images]", default=total - skip)
        if not 1 <= cnt <= total - skip:
            raise UserError(
                f"{source}: [images] count = {cnt}: the held-out sets have {total} images, "
                f"so after skip = {skip} give 1..{total - skip}"
            )
        images.dataset, images.count, images.skip = ds, cnt, skip
    elif src == "samples":
        cnt = _want(im, "count", (int,), f"{source} [images]", hint="how many generator samples")
        if cnt < 1:
            raise UserError(f"{source}: [images] count = {cnt} must be at least 1")
        images.count = cnt
        images.seed = _want(im, "seed", (int,), f"{source} [images]", default=0)
    elif src == "lfw":
        extra = sorted(set(im) - {"source", "count"})
        if extra:
            raise UserError(f"{source}: [images] source = 'lfw' takes only count: remove {extra[0]!r}")
        cnt = _want(im, "count", (int,), f"{source} [images]", default=100)
        if not 1 <= cnt <= 100:
            raise UserError(f"{source}: [images] count = {cnt}: lfw_subset() has 100 faces, give 1..100")
        images.count = cnt
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
    from ..physics.tasks import TASKS

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
    kinds: dict[str, str | None] = {}  # a model file's kind, read once however many rows name it
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
        model = m.get("model")
        if model is not None:
            if not METHODS[mname].needs_model:
                raise UserError(f"{where}: method {mname!r} uses no model: remove model = {model!r}")
            if not isinstance(model, str):
                raise UserError(f"{where}: model = {model!r} must be a zoo name or a checkpoint path")
            model = _model_ref(model, base, f"{where}: model")
        if METHODS[mname].needs_model:
            _check_model_kind(mname, model or gen, where, kinds)
        seed_label = m.get("seed_label")
        if seed_label is not None and not isinstance(seed_label, str):
            raise UserError(f"{where}: seed_label = {seed_label!r} must be the label of a method row")
        settings = {k: v for k, v in m.items() if k not in ("name", "label", "tasks", "model", "seed_label")}
        for k, v in settings.items():
            if not _scalar_ok(v):
                raise UserError(
                    f"{where}: setting {k} = {v!r} is not a number, string, boolean or list of them"
                )
        if any(x.label == label for x in methods):
            raise UserError(f"{where}: two methods are labelled {label!r}: give each a distinct label")
        METHODS[mname].make_config(settings)  # validate the settings now (the config checks itself)
        methods.append(
            MethodSpec(
                label=label, name=mname, settings=settings, tasks=only, model=model, seed_label=seed_label
            )
        )
    labels = {x.label for x in methods}
    for x in methods:
        if x.seed_label is not None and x.seed_label not in labels:
            raise UserError(
                f"{source}: method {x.label!r} has seed_label = {x.seed_label!r}, which labels no method row: "
                f"give one of {', '.join(sorted(labels))}"
            )

    return BenchConfig(
        name=name, generator=gen, seeds=list(seeds), batch_size=batch_size, device=device, lpips=lpips,
        lpips_net=lpips_net, classifier=classifier, plot_metrics=list(plot_metrics), xscale=xscale, yscale=yscale,
        images=images, tasks=tasks, methods=methods, base_dir=str(base), plot_best_of=dict(best_of),
    )  # fmt: skip


def _check_model_kind(method: str, ref: str, where: str, kinds: dict[str, str | None]) -> None:
    """A row's model, a zoo name or a file, is of the kind its method runs on (``kinds``: the
    files' kinds read so far, filled in)."""
    from ..solvers.registry import DIFFUSION, METHODS
    from ..zoo import DIFFUSION_MODELS, LATENT_DIFFUSION_MODELS, ZOO, diffusion_kind

    if ref in ZOO:
        has = None
    elif ref in DIFFUSION_MODELS:
        has = "latent" if ref in LATENT_DIFFUSION_MODELS else "pixel"
    else:
        if ref not in kinds:
            kinds[ref] = diffusion_kind(ref)
        has = kinds[ref]
    if METHODS[method].needs != DIFFUSION:
        if has is not None:
            raise UserError(
                f"{where}: {ref} is a {has} diffusion model, and method {method!r} runs on a generator"
            )
        return
    latent = bool(getattr(METHODS[method].solver_class(), "latent", False))
    kind = "latent" if latent else "pixel"
    if has != kind:
        fits = [n for n in DIFFUSION_MODELS if (n in LATENT_DIFFUSION_MODELS) == latent]
        what = (
            f"a {has} diffusion model"
            if has
            else ("a generator" if ref in ZOO else "not a diffusion model file")
        )
        raise UserError(
            f"{where}: method {method!r} runs on a {kind} diffusion model, and {ref} is {what}: "
            f"give model = one of {', '.join(fits)} or a file `genprior train {'ldm' if latent else 'ddpm'} --export` wrote"
        )


def _model_ref(ref: str, base: Path, where: str) -> str:
    """A zoo name as it is, or a checkpoint path resolved against the config file's folder."""
    from ..zoo import DIFFUSION_MODELS, ZOO

    if ref in ZOO or ref in DIFFUSION_MODELS:
        return ref
    p = Path(ref).expanduser()
    if not p.is_absolute():
        p = (base / p).resolve()
    if not p.is_file():
        raise UserError(
            f"{where} {ref!r} is neither a zoo model ({', '.join([*ZOO, *DIFFUSION_MODELS])}) nor an existing "
            "checkpoint file"
        )
    return str(p)


def load_config(path: str | os.PathLike) -> BenchConfig:
    """Read and validate a bench config file (TOML or JSON)."""
    path = Path(path)
    raw = _read_config_file(path)
    cfg = parse_config(raw, base_dir=path.resolve().parent, source=path.name)
    cfg.generator_sha256 = _generator_fingerprint(cfg.generator)
    for m in cfg.methods:
        if m.model is not None:
            m.model_sha256 = _generator_fingerprint(m.model)
        m.score_sha256 = _score_fingerprint(m, m.model or cfg.generator)
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
        from .. import quality
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


def _score_fingerprint(m: MethodSpec, generator: str) -> str | None:
    """For a method that reads a score model: sha256 of its ``score`` file, or, when it lets the zoo
    pick one, of the bundled score model of its generator of its ``score_stage``
    (``score-<name>-s<K>.pt``; none for an exact prior without a file), or of every bundled one of
    its generator when the zoo picks the stage too (or the generator is given as a file), so that
    retrained score weights are a different config."""
    from .. import zoo
    from ..solvers.registry import GENERATOR_AND_SCORE, get_method

    if get_method(m.name).needs != GENERATOR_AND_SCORE:
        return None
    ref = m.settings.get("score")
    if ref is not None:
        p = Path(str(ref)).expanduser()  # as the solver opens it
        return _sha256_file(p) if p.is_file() else None
    h = hashlib.sha256()
    files = zoo.score_model_files()
    if generator in zoo.ZOO:
        stages = {}
        for f in files:
            tail = f.stem.removeprefix(f"score-{generator}-s")
            if tail != f.stem and tail.isdigit():
                stages[int(tail)] = f
        want = m.settings.get("score_stage")
        files = list(stages.values()) if want is None else [stages[want]] if want in stages else []
    for f in files:
        h.update(f.name.encode() + bytes.fromhex(_sha256_file(f)))
    return h.hexdigest()


def _generator_fingerprint(gen: str) -> str | None:
    """sha256 of the generator's weights file, so that retrained weights are a different config."""
    from .. import zoo

    p = Path(gen)
    if p.is_file():
        return _sha256_file(p)
    asset = zoo.ASSETS_MODELS / f"{gen}.pt"
    if asset.is_file():
        return _sha256_file(asset)
    return None
