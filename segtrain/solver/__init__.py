"""Optimizers, gradient clipping, LR schedules and frozen modules."""

from segtrain.config.checks import register_name_key

from .build import (
    OPTIMIZERS,
    build_gradient_clipper,
    build_optimizer,
    count_parameters,
    freeze_modules,
    get_default_optimizer_params,
    log_parameter_counts,
    make_gradient_clipper,
)
from .lr_scheduler import (
    LR_SCHEDULERS,
    InverseSquareRootLR,
    WarmupCosineLR,
    WarmupMultiStepLR,
    WarmupPolyLR,
    WarmupStepLR,
    build_lr_scheduler,
)
from .param_groups import LayerDecay

__all__ = [
    "build_optimizer",
    "get_default_optimizer_params",
    "build_gradient_clipper",
    "make_gradient_clipper",
    "freeze_modules",
    "count_parameters",
    "log_parameter_counts",
    "build_lr_scheduler",
    "WarmupMultiStepLR",
    "WarmupCosineLR",
    "WarmupStepLR",
    "WarmupPolyLR",
    "InverseSquareRootLR",
    "LayerDecay",
]

register_name_key("SOLVER.OPTIMIZER", "optimizer", lambda: OPTIMIZERS)
register_name_key("SOLVER.LR_SCHEDULER_NAME", "LR scheduler", lambda: sorted(LR_SCHEDULERS))
