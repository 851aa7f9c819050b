"""Layers and functional pieces: losses, point sampling, norms, attention helpers.

Each sibling module is re-exported on its own line; a module another part of the
project is still writing may be absent (the package must import without it).
"""
import importlib as _importlib

from .losses import (  # noqa: F401
    batch_dice_loss,
    batch_sigmoid_ce_loss,
    batch_sigmoid_focal_class_cost,
    dice_loss,
    iou_loss,
    sigmoid_ce_loss,
    sigmoid_focal_loss,
)
from .point_sample import (  # noqa: F401
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
    select_uncertain_point_coords,
)

__all__ = [
    "sigmoid_ce_loss", "dice_loss", "sigmoid_focal_loss", "iou_loss",
    "batch_sigmoid_ce_loss", "batch_dice_loss", "batch_sigmoid_focal_class_cost",
    "point_sample", "get_uncertain_point_coords_with_randomness", "calculate_uncertainty",
    "select_uncertain_point_coords",
]


def _reexport(module_name: str) -> None:
    """Re-export the ``__all__`` of a sibling module when it exists."""
    try:
        mod = _importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{module_name}":
            raise
        return
    for n in getattr(mod, "__all__", [n for n in dir(mod) if not n.startswith("_")]):
        globals()[n] = getattr(mod, n)
        if n not in __all__:
            __all__.append(n)


_reexport("norm")
_reexport("wrappers")
_reexport("position_encoding")
_reexport("ms_deform_attn")
del _reexport
