"""The method table: every solver genprior offers, one row each.

``genprior solve --method``, ``genprior bench``, ``genprior demo``, ``genprior methods`` and the
Python API (:func:`make_solver`) all read :data:`METHODS`, so a new solver exists everywhere once
it has a row here. A row names its solver and its config dataclass as ``"module:Class"``, imported
on first use: this module imports nothing heavy (no torch), so the command line can list and check
methods at once.

A solver is built as ``Solver(model, config)`` when the method needs a model and as
``Solver(image_shape, config, device=device)`` when it needs none; ``model`` is whatever the row's
``needs`` names (a :class:`~genprior.generators.base.LayeredGenerator` for ``"generator"``).

Every config field whose type is a number, string, bool or tuple of them can be set from text
(``--set name=value`` on the command line): :func:`parse_setting` reads the value with the
field's type, and the config's own ``__post_init__`` checks it.
"""

from __future__ import annotations

import collections.abc as abc
import dataclasses
import importlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UserError

#: what a method needs besides the measurements (the ``needs`` column)
GENERATOR = "generator"
GENERATOR_AND_SCORE = "generator+score"
DIFFUSION = "diffusion"
NONE = "none"
NEEDS = (GENERATOR, GENERATOR_AND_SCORE, DIFFUSION, NONE)


@dataclass(frozen=True)
class Method:
    """One row of the method table."""

    name: str  # the name users type: genprior solve --method NAME, [[methods]] name = NAME
    solver: str  # the Reconstructor, "module:Class"
    config: str  # its settings dataclass, "module:Class"
    needs: str  # one of NEEDS: the model the solver is built on
    description: str  # one line for `genprior methods`
    fixed: tuple[tuple[str, Any], ...] = ()  # settings the row fixes (the Lasso basis), not the user's

    @property
    def module(self) -> str:
        """The module of the solver class (what its results depend on first)."""
        return self.solver.partition(":")[0]

    @property
    def needs_model(self) -> bool:
        return self.needs != NONE

    def solver_class(self) -> type:
        return _resolve(self.solver, self.name)

    def config_class(self) -> type:
        return _resolve(self.config, self.name)

    def make_config(self, settings: Mapping[str, Any] | None = None, seed: int | None = None) -> Any:
        """The method's config with ``settings`` (lists become tuples) on top of its defaults and
        the row's fixed settings; ``seed`` fills the config's ``seed`` field when it has one.
        A bad setting is a :class:`UserError` naming it."""
        cls = self.config_class()
        names = [f.name for f in dataclasses.fields(cls)]
        settings = dict(settings or {})
        for k in settings:
            if k in dict(self.fixed):
                raise UserError(
                    f"method {self.name!r} fixes {k} = {dict(self.fixed)[k]!r}: "
                    f"drop the setting or choose another method"
                )
            if k not in names:
                raise UserError(
                    f"method {self.name!r} has no setting {k!r}: its settings are {', '.join(settable(self))}"
                )
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()}
        kw.update(self.fixed)
        if seed is not None and "seed" in names:
            kw["seed"] = seed
        try:
            return cls(**kw)
        except UserError:
            raise
        except (TypeError, ValueError) as e:  # a config that does not check itself yet
            raise UserError(f"method {self.name!r}: bad settings ({e})") from None

    def build(
        self,
        config: Any = None,
        model: Any = None,
        image_shape: tuple[int, int, int] | None = None,
        device: Any = None,
    ) -> Any:
        """The solver: ``Solver(model, config)``, or ``Solver(image_shape, config, device=...)``
        for a method that needs no model."""
        cls = self.solver_class()
        config = self.make_config() if config is None else config
        if self.needs_model:
            if model is None:
                raise UserError(
                    f"method {self.name!r} needs a {self.needs} model: give one (see `genprior models`)"
                )
            return cls(model, config)
        if image_shape is None:
            raise UserError(f"method {self.name!r} needs the image shape (C, H, W) of the unknown")
        return cls(tuple(image_shape), config, device=device if device is not None else "cpu")


def _lasso(basis: str, what: str) -> Method:
    return Method(
        f"lasso-{basis}",
        "genprior.solvers.sparse:Lasso",
        "genprior.solvers.sparse:LassoConfig",
        NONE,
        f"Lasso in {what} (l1-sparse coefficients, no learned prior)",
        fixed=(("basis", basis),),
    )


#: the method table, in the order `genprior methods` lists it
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "ilo",
            "genprior.solvers.ilo:ILO",
            "genprior.solvers.ilo:ILOConfig",
            GENERATOR,
            "Intermediate Layer Optimization (Daras et al. 2021): rounds one layer deeper, l1 balls",
        ),
        Method(
            "csgm",
            "genprior.solvers.csgm:CSGM",
            "genprior.solvers.csgm:CSGMConfig",
            GENERATOR,
            "CSGM (Bora et al. 2017): Adam on the generator's input latent, random restarts",
        ),
        Method(
            "csgm-deepinv",
            "genprior.solvers.peers:DeepinvCSGM",
            "genprior.solvers.peers:DeepinvCSGMConfig",
            GENERATOR,
            "deepinv's own CSGMGenerator on the same generator: one image at a time, for comparisons",
        ),
        Method(
            "pulse",
            "genprior.solvers.pulse:PULSE",
            "genprior.solvers.pulse:PULSEConfig",
            GENERATOR,
            "PULSE (Menon et al. 2020): latent search on the sphere with geocross",
        ),
        Method(
            "projector",
            "genprior.solvers.projector:StyleGAN2Projector",
            "genprior.solvers.projector:ProjectorConfig",
            GENERATOR,
            "StyleGAN2 projector (Karras et al. 2020): W search with LPIPS and noise regularisation",
        ),
        _lasso("dct", "the DCT basis"),
        _lasso("wavelet", "a wavelet basis"),
        _lasso("pixel", "the pixel basis"),
        Method(
            "dip",
            "genprior.solvers.dip:DeepImagePrior",
            "genprior.solvers.dip:DIPConfig",
            NONE,
            "Deep Image Prior (Ulyanov et al. 2018): an untrained network fitted to y",
        ),
        Method(
            "sgilo",
            "genprior.solvers.sgilo:SGILO",
            "genprior.solvers.sgilo:SGILOConfig",
            GENERATOR_AND_SCORE,
            "Score-Guided ILO (Daras et al. 2022): Langevin posterior sampling of a layer, learned score prior",
        ),
        Method(
            "dps",
            "genprior.solvers.diffusion:DPS",
            "genprior.solvers.diffusion:DPSConfig",
            DIFFUSION,
            "DPS (Chung et al. 2023), deepinv's implementation, on a pixel diffusion model",
        ),
        Method(
            "diffpir",
            "genprior.solvers.diffusion:DiffPIR",
            "genprior.solvers.diffusion:DiffPIRConfig",
            DIFFUSION,
            "DiffPIR (Zhu et al. 2023), deepinv's implementation, on a pixel diffusion model",
        ),
        Method(
            "resample",
            "genprior.solvers.latent:ReSample",
            "genprior.solvers.latent:ReSampleConfig",
            DIFFUSION,
            "ReSample (Song et al. 2024): latent diffusion, hard data consistency and stochastic resampling",
        ),
        Method(
            "latent-dps",
            "genprior.solvers.latent:LatentDPS",
            "genprior.solvers.latent:LatentDPSConfig",
            DIFFUSION,
            "Latent-DPS: DPS's gradient guidance on the latents of a latent diffusion model",
        ),
        Method(
            "psld",
            "genprior.solvers.latent:PSLD",
            "genprior.solvers.latent:PSLDConfig",
            DIFFUSION,
            "PSLD (Rout et al. 2023): Latent-DPS plus the gluing term through the autoencoder",
        ),
    )
}


def get_method(name: str) -> Method:
    """The row of ``name``; a :class:`UserError` listing the methods otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}") from None


def make_solver(
    name: str,
    model: Any = None,
    *,
    image_shape: tuple[int, int, int] | None = None,
    device: Any = None,
    seed: int | None = None,
    **settings: Any,
) -> Any:
    """Build method ``name`` of the table with ``settings``, e.g.
    ``make_solver("ilo", G, steps=(150, 100), radius=0.2)`` or
    ``make_solver("lasso-dct", image_shape=(1, 32, 32), alpha=1e-3)``."""
    m = get_method(name)
    return m.build(m.make_config(settings, seed=seed), model=model, image_shape=image_shape, device=device)


def _resolve(path: str, method: str) -> type:
    module, _, attr = path.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            raise UserError(
                f"method {method!r} is not available in this install ({module} is missing): update genprior"
            ) from None
        raise
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise UserError(
            f"method {method!r} is not available in this install ({path} is missing): update genprior"
        ) from None


# ---- settings from text ----------------------------------------------------------------------
_SCALARS = (bool, int, float, str)


def _options(hint: Any) -> list[Any]:
    """The alternatives of a type hint (``int | Sequence[int] | None`` -> three)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [a for h in typing.get_args(hint) for a in _options(h)]
    return [hint]


def _sequence_item(hint: Any) -> Any | None:
    """The item type of a tuple/sequence hint of scalars (``Sequence[int]``, ``tuple[float, ...]``)."""
    origin = typing.get_origin(hint)
    if origin is None:
        return None
    if origin not in (tuple, list, abc.Sequence):
        return None
    args = [a for a in typing.get_args(hint) if a is not Ellipsis]
    if not args or len(set(args)) != 1 or args[0] not in _SCALARS:
        return None
    return args[0]


def field_types(config_cls: type) -> dict[str, list[Any]]:
    """Per field of a config dataclass, the alternatives text can be read as (scalar types,
    ``("seq", item type)`` and ``None``); fields of other types (callables) are left out."""
    hints = typing.get_type_hints(config_cls)
    out: dict[str, list[Any]] = {}
    for f in dataclasses.fields(config_cls):
        alts: list[Any] = []
        for h in _options(hints[f.name]):
            if h is type(None):
                alts.append(None)
            elif h in _SCALARS:
                alts.append(h)
            elif (item := _sequence_item(h)) is not None:
                alts.append(("seq", item))
            else:
                alts = []
                break
        if alts:
            out[f.name] = alts
    return out


def settable(method: Method) -> list[str]:
    """The settings of ``method`` that can be set from text (its fixed ones excluded)."""
    fixed = dict(method.fixed)
    return [k for k in field_types(method.config_class()) if k not in fixed]


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _scalar(text: str, kind: type) -> Any:
    t = text.strip()
    if kind is bool:
        if t.lower() in _TRUE:
            return True
        if t.lower() in _FALSE:
            return False
        raise ValueError
    if kind is int:
        return int(t)
    if kind is float:
        return float(t)
    return t


def parse_value(text: str, alts: list[Any]) -> Any:
    """``text`` read as the first alternative it fits, in the order None, bool, int, float, a
    comma-separated tuple, str (so ``"150"`` is an int, ``"150,100"`` a tuple, ``"auto"`` a str)."""
    order = [None, bool, int, float]
    for kind in order:
        if kind is None and None in alts and text.strip().lower() in ("none", "null"):
            return None
        if kind is not None and kind in alts:
            try:
                return _scalar(text, kind)
            except ValueError:
                pass
    for a in alts:
        if isinstance(a, tuple):
            parts = [p for p in text.split(",") if p.strip()]
            try:
                if parts:
                    return tuple(_scalar(p, a[1]) for p in parts)
            except ValueError:
                pass
    if str in alts:
        return text.strip()
    raise ValueError


def _describe(alts: list[Any]) -> str:
    names = {None: "none", bool: "true/false", int: "an integer", float: "a number", str: "a word"}
    return " or ".join(
        f"a comma list of {names[a[1]].removeprefix('an ').removeprefix('a ')}s"
        if isinstance(a, tuple)
        else names[a]
        for a in alts
    )


def parse_setting(method: Method, item: str, flag: str | None = None) -> tuple[str, Any]:
    """``"name=value"`` as ``(name, typed value)`` for ``method``'s config; a one-line
    :class:`UserError` names what is wrong (unknown name, a value of the wrong type). ``flag``
    names the option the text came from in the message (default ``--set``)."""
    name, eq, text = item.partition("=")
    name = name.strip().replace("-", "_")
    if not eq or not name:
        raise UserError(f"--set {item!r} is not NAME=VALUE: write it as e.g. --set steps=200")
    where = f"{flag} {text}" if flag else f"--set {name}={text}"
    if name in dict(method.fixed):
        raise UserError(f"{where}: method {method.name!r} fixes {name} = {dict(method.fixed)[name]!r}")
    kinds = field_types(method.config_class())
    if name not in kinds:
        names = {f.name for f in dataclasses.fields(method.config_class())}
        why = "cannot be set from the command line" if name in names else "is not a setting of it"
        raise UserError(
            f"{where}: {name!r} {why} for method {method.name!r}; its settings are {', '.join(settable(method))}"
        )
    try:
        return name, parse_value(text, kinds[name])
    except ValueError:
        raise UserError(
            f"{where}: method {method.name!r} wants {_describe(kinds[name])} for {name}"
        ) from None
