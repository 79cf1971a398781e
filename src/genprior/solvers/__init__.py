"""Solvers: each a deepinv ``Reconstructor``. The generative ones drive a
:class:`~genprior.generators.base.LayeredGenerator`; Lasso and DIP need no generator.

:mod:`genprior.solvers.registry` is the method table every front end reads. Names are imported
lazily, so that ``from genprior.solvers.registry import METHODS`` imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ILO": "ilo",
    "ILOConfig": "ilo",
    "CSGM": "csgm",
    "CSGMConfig": "csgm",
    "PULSE": "pulse",
    "PULSEConfig": "pulse",
    "StyleGAN2Projector": "projector",
    "ProjectorConfig": "projector",
    "Lasso": "sparse",
    "LassoConfig": "sparse",
    "DeepImagePrior": "dip",
    "DIPConfig": "dip",
    "GeneratorFreeSolver": "common",
    "PosteriorSamples": "common",
    "GenerativeSolver": "common",
    "RunRecord": "common",
    "lr_schedule": "common",
    "METHODS": "registry",
    "Method": "registry",
    "get_method": "registry",
    "make_solver": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
