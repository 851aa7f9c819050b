"""Criteria (registered in CRITERION_REGISTRY by class name), ``CORE_LOSS_KEY`` and the
output contract (``check_criterion_outputs``).

Public paths (LOSSES.md): ``from segtrain.modeling.criterion import CORE_LOSS_KEY,
SetCriterion, Sam3LossWrapper, Boxes, IABCEMdetr, Masks, MultiStepMultiMasksAndIous``.
One line per family module; a module another engineer is still writing may be absent,
so each import tolerates that module (and only that module) missing.
"""
import importlib as _importlib

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


def _reexport(module_name: str) -> None:
    try:
        mod = _importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{module_name}":
            raise
        return
    for n in getattr(mod, "__all__", []):
        globals()[n] = getattr(mod, n)
        if n not in __all__:
            __all__.append(n)


_reexport("targets")               # instances_to_targets, targets_to_find_packed, find_packed_to_targets
_reexport("set_criterion")         # SetCriterion (Mask2Former)
_reexport("sam3_loss_fns")         # Boxes, IABCEMdetr, Masks (SAM 3)
_reexport("sam3_loss")             # Sam3LossWrapper (SAM 3)
_reexport("multistep_multimask")   # MultiStepMultiMasksAndIous (SAM 2)
_reexport("video_simple")          # VideoSimpleCriterion (seed 001 video loss)
del _reexport
