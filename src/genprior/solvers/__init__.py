"""Solvers: each a deepinv ``Reconstructor``. The generative ones drive a
:class:`~genprior.generators.base.LayeredGenerator`; Lasso and DIP need no generator."""

from .common import GenerativeSolver, RunRecord, lr_schedule
from .csgm import CSGM, CSGMConfig
from .dip import DeepImagePrior, DIPConfig
from .ilo import ILO, ILOConfig
from .projector import ProjectorConfig, StyleGAN2Projector
from .pulse import PULSE, PULSEConfig
from .sparse import GeneratorFreeSolver, Lasso, LassoConfig

__all__ = [
    "ILO",
    "ILOConfig",
    "CSGM",
    "CSGMConfig",
    "PULSE",
    "PULSEConfig",
    "StyleGAN2Projector",
    "ProjectorConfig",
    "Lasso",
    "LassoConfig",
    "DeepImagePrior",
    "DIPConfig",
    "GeneratorFreeSolver",
    "GenerativeSolver",
    "RunRecord",
    "lr_schedule",
]
