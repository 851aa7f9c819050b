"""Data structures shared by data, models and evaluation."""
import importlib as _importlib

from .instances import Instances
from .masks import (
    BoxMode,
    bitmask_to_rle,
    mask_to_box,
    masks_to_boxes,
    polygons_to_bitmask,
    rle_to_bitmask,
    segmentation_to_bitmask,
)

__all__ = [
    "Instances",
    "BoxMode",
    "bitmask_to_rle",
    "mask_to_box",
    "masks_to_boxes",
    "polygons_to_bitmask",
    "rle_to_bitmask",
    "segmentation_to_bitmask",
]


def _reexport(module_name: str, prefix: str = "") -> None:
    """Re-export the public names of a sibling module written by another part of the
    project, when it exists (the package must import without it)."""
    try:
        mod = _importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{module_name}":
            raise
        return
    names = getattr(mod, "__all__", [n for n in dir(mod) if not n.startswith("_")])
    for n in names:
        if n.startswith(prefix) or not prefix:
            globals()[n] = getattr(mod, n)
            if n not in __all__:
                __all__.append(n)


_reexport("boxes")
_reexport("image_list")
_reexport("shape_spec")
del _reexport
