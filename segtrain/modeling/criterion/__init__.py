"""Criteria (registered in CRITERION_REGISTRY by class name), ``CORE_LOSS_KEY`` and the
output contract (``check_criterion_outputs``).

Public paths (LOSSES.md): ``from segtrain.modeling.criterion import CORE_LOSS_KEY,
SetCriterion, Sam3LossWrapper, Boxes, IABCEMdetr, Masks, MultiStepMultiMasksAndIous``.
One ``reexport_module`` line per family module.
"""
from segtrain.utils.imports import reexport_module

from .build import (  # noqa: F401
    CORE_LOSS_KEY,
    CRITERION_REGISTRY,
    TARGET_FORMATS,
    build_criterion,
    check_criterion_outputs,
    criterion_required_keys,
)

__all__ = ["CORE_LOSS_KEY", "CRITERION_REGISTRY", "TARGET_FORMATS", "build_criterion",
           "check_criterion_outputs", "criterion_required_keys"]


reexport_module(globals(), "targets")               # instances_to_targets, targets_to_find_packed, find_packed_to_targets
reexport_module(globals(), "set_criterion")         # SetCriterion (Mask2Former)
reexport_module(globals(), "sam3_loss_fns")         # Boxes, IABCEMdetr, Masks (SAM 3)
reexport_module(globals(), "sam3_loss")             # Sam3LossWrapper (SAM 3)
reexport_module(globals(), "multistep_multimask")   # MultiStepMultiMasksAndIous (SAM 2)
reexport_module(globals(), "video_simple")          # VideoSimpleCriterion (seed 001 video loss)
