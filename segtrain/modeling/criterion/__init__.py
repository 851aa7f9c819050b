"""The shared loss library's criteria (registered in ``CRITERION_REGISTRY`` by class name),
``CORE_LOSS_KEY`` and the output contract (``check_criterion_outputs``); docs/losses.md has
the formulas.

Public paths: ``from segtrain.modeling.criterion import CORE_LOSS_KEY, SetCriterion,
Sam3LossWrapper, Boxes, IABCEMdetr, Masks, MultiStepMultiMasksAndIous``.
"""

from segtrain.structures.targets import find_packed_to_targets, instances_to_targets, targets_to_find_packed

from . import config as _config  # noqa: F401  (registers MODEL.CRITERION / MODEL.MATCHER)
from .build import (
    CORE_LOSS_KEY,
    CRITERION_REGISTRY,
    TARGET_FORMATS,
    build_criterion,
    check_criterion_outputs,
    criterion_required_keys,
)
from .multistep_multimask import MultiStepMultiMasksAndIous
from .sam3_loss import CORE_LOSS_AUX_KEY, CORE_LOSS_FINAL_KEY, O2M_MATCHES_KEY, Sam3LossWrapper
from .sam3_loss_fns import SAM3_LOSS_REGISTRY, Boxes, IABCEMdetr, LossWithWeights, build_sam3_loss_fn
from .sam3_masks import Masks
from .set_criterion import SetCriterion
from .video_simple import VideoSimpleCriterion

__all__ = [
    "CORE_LOSS_KEY",
    "CRITERION_REGISTRY",
    "TARGET_FORMATS",
    "build_criterion",
    "check_criterion_outputs",
    "criterion_required_keys",
    "instances_to_targets",
    "targets_to_find_packed",
    "find_packed_to_targets",
    "SetCriterion",
    "SAM3_LOSS_REGISTRY",
    "LossWithWeights",
    "Boxes",
    "IABCEMdetr",
    "Masks",
    "build_sam3_loss_fn",
    "Sam3LossWrapper",
    "CORE_LOSS_FINAL_KEY",
    "CORE_LOSS_AUX_KEY",
    "O2M_MATCHES_KEY",
    "MultiStepMultiMasksAndIous",
    "VideoSimpleCriterion",
]
