"""Per-process caches of what many cells share: the generators, the images, the classifier.

Each worker process keeps its own; every entry is keyed by what decides it (the weights'
fingerprint, the config's hash), so a cached object is never one of another config.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .config import BenchConfig

_CACHE: dict[Any, Any] = {}


def _cached(key: Any, make: Callable[[], Any]) -> Any:
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def device_of(cfg: BenchConfig) -> torch.device:
    from ..cli.common import resolve_device

    return resolve_device(cfg.device)


def get_generator(
    cfg: BenchConfig, model: str | None = None, sha256: str | None = None, needs: str = "generator"
) -> Any:
    """The grid's generator, or (``model``) a method's own model, of the kind the method
    ``needs`` (a diffusion model for the diffusion solvers), with its weights' ``sha256``."""
    from ..zoo import load_model

    dev = device_of(cfg)
    name, sha = (cfg.generator, cfg.generator_sha256) if model is None else (model, sha256)
    return _cached(("G", name, sha, needs, str(dev)), lambda: load_model(name, needs, device=dev))


def get_images(cfg: BenchConfig, G: Any) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
    """All benchmark images ``(N, C, H, W)`` on the CPU, their ids, and labels (held-out sets)."""

    def make() -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
        c, h, w = G.image_shape
        im = cfg.images
        if im.source == "heldout":
            from ..data import heldout

            if c != 1:
                raise UserError(
                    f"the {im.dataset} held-out images are grey but the generator makes {c}-channel images"
                )
            x, labels = heldout(im.dataset, n=im.skip + im.count, size=h)
            x, labels = x[im.skip :], labels[im.skip :]
            if tuple(x.shape[-2:]) != (h, w):
                raise UserError(
                    f"the {im.dataset} images are {x.shape[-1]}x{x.shape[-2]} but the generator makes {w}x{h}"
                )
            ids = [f"{im.dataset}:{im.skip + i}" for i in range(len(x))]
            return x, ids, labels
        if im.source == "samples":
            with torch.no_grad():
                x = G.sample(int(im.count), seed=im.seed).detach().float().cpu().clamp(0, 1)
            return x, [f"sample:{im.seed}:{i}" for i in range(len(x))], None
        if im.source == "astronaut":
            from ..data import astronaut_face

            if c != 3 or h != w:
                raise UserError(
                    f"the astronaut face is a square RGB image but the generator makes {c}x{h}x{w} images"
                )
            return astronaut_face(h), ["astronaut"], None
        if im.source == "lfw":
            from ..data import lfw_faces

            if h != w:
                raise UserError(f"the LFW faces are square but the generator makes {c}x{h}x{w} images")
            return lfw_faces(int(im.count), size=h, channels=c), [f"lfw:{i}" for i in range(im.count)], None
        from ..io import load_image

        xs = [load_image(p, channels=c, size=(h, w), resize=im.resize) for p in im.paths]
        return torch.cat(xs), [Path(p).name for p in im.paths], None

    return _cached(("images", cfg.hash()), make)


def get_classifier(cfg: BenchConfig, G: Any) -> Any:
    """The classifier for the ``correct`` column (resolved by :func:`resolve_classifier` when the
    config was loaded, so that every process uses the same one), or None."""
    if not cfg.classifier_path:
        return None

    def make() -> Any:
        from .. import quality

        return quality.load_classifier(cfg.classifier_path).to(device_of(cfg)).eval()

    return _cached(("classifier", cfg.classifier_path, cfg.classifier_sha256), make)
