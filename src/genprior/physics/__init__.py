"""Forward operators (deepinv physics) for the inverse problems genprior solves."""

from .circulant import PartialCirculant
from .gaussian import GaussianCS
from .project import adjoint_glue_point, project_onto_measurements
from .tasks import CS_OPERATORS, TASKS, load_mask, make_physics, measurement_preview

__all__ = [
    "GaussianCS",
    "PartialCirculant",
    "TASKS",
    "CS_OPERATORS",
    "make_physics",
    "load_mask",
    "measurement_preview",
    "project_onto_measurements",
    "adjoint_glue_point",
]
