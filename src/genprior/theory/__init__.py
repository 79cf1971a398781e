"""The theory of inverting generators: algorithms on random expansive ReLU networks and the
phase-transition experiments of ``genprior theory`` (not Reconstructors: they recover a latent
``z*`` of a known network, see docs/theory.md).

* :mod:`genprior.theory.inversion`: layer-wise LP inversion, the activation-pattern LP refinement,
  gradient descent with the sign flip, Langevin posterior sampling;
* :mod:`genprior.theory.experiments`: the experiments, their resuming, tables and figures.

Names are imported lazily, so ``genprior theory --help`` imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: default trials per cell (chosen so that each experiment takes a couple of minutes on 2 cores)
DEFAULT_TRIALS = {"expansion": 20, "depth": 8, "measurements": 12, "noise": 12, "langevin": 8}

_INVERSION = (
    "lp_invert",
    "pattern_lp_refine",
    "gd_invert",
    "langevin_sample",
    "relative_error",
    "as_generator",
)


def __getattr__(name: str) -> Any:
    module = "inversion" if name in _INVERSION else "experiments"
    mod = importlib.import_module(f"{__name__}.{module}")
    try:
        return getattr(mod, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
