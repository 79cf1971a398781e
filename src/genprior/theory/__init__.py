"""The theory of inverting generators: algorithms on random expansive ReLU networks and the
phase-transition experiments of ``genprior theory`` (not Reconstructors: they recover a latent
``z*`` of a known network, see docs/theory.md).

* :mod:`genprior.theory.lp`: layer-wise LP inversion and the activation-pattern LP refinement;
* :mod:`genprior.theory.gd`: gradient descent with the sign flip;
* :mod:`genprior.theory.langevin`: Langevin sampling of the latent posterior;
* :mod:`genprior.theory.common`: what they share (the generator, the operator, the error);
* :mod:`genprior.theory.experiments`: the experiments (the computation of a trial);
  :mod:`genprior.theory.run`: running and resuming them (the store ``genprior bench`` uses);
  :mod:`genprior.theory.report`: their tables and figures.

Names are imported lazily, so ``genprior theory --help`` imports no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: default trials per cell (chosen so that each experiment takes a couple of minutes on 2 cores)
DEFAULT_TRIALS = {"expansion": 20, "depth": 8, "measurements": 12, "noise": 12, "langevin": 8}

#: where each public name lives
_HOME = {
    "lp_invert": "lp",
    "pattern_lp_refine": "lp",
    "LayerLP": "lp",
    "LPInversionResult": "lp",
    "LayerReport": "lp",
    "gd_invert": "gd",
    "GDInversionResult": "gd",
    "langevin_sample": "langevin",
    "LangevinResult": "langevin",
    "relative_error": "common",
    "as_generator": "common",
    "run_experiment": "run",
    "summarise": "run",
    "config_hash": "run",
    "ExperimentOutput": "run",
    "format_summary": "report",
}


def __getattr__(name: str) -> Any:
    mod = importlib.import_module(f"{__name__}.{_HOME.get(name, 'experiments')}")
    try:
        return getattr(mod, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
