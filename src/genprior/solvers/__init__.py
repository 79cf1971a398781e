"""Solvers: each a deepinv ``Reconstructor`` driving a :class:`~genprior.generators.base.LayeredGenerator`."""

from .common import GenerativeSolver, RunRecord, lr_schedule
from .csgm import CSGM, CSGMConfig
from .ilo import ILO, ILOConfig

__all__ = ["ILO", "ILOConfig", "CSGM", "CSGMConfig", "GenerativeSolver", "RunRecord", "lr_schedule"]
