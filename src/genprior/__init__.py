"""genprior: imaging inverse problems with pretrained generative priors.

    >>> import genprior, deepinv as dinv
    >>> G = genprior.load_generator("dcgan-faces-64")
    >>> physics = genprior.make_physics("inpaint", G.image_shape, mask_ratio=0.8)
    >>> x_hat = genprior.ILO(G)(physics(x), physics)

Names are imported lazily so that ``import genprior`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_generator": "genprior.zoo",
    "list_models": "genprior.zoo",
    "make_physics": "genprior.physics",
    "make_solver": "genprior.solvers.registry",
    "METHODS": "genprior.solvers.registry",
    "ILO": "genprior.solvers",
    "ILOConfig": "genprior.solvers",
    "CSGM": "genprior.solvers",
    "CSGMConfig": "genprior.solvers",
    "LayeredGenerator": "genprior.generators.base",
    "InputSpec": "genprior.generators.base",
    "UserError": "genprior.errors",
    "solve_folder": "genprior.folder",
    "FolderJob": "genprior.folder",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'genprior' has no attribute {name!r}")
