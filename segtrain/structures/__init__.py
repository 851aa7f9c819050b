"""Data structures shared by data, models and evaluation."""
from segtrain.utils.imports import reexport_module

from .instances import Instances
from .masks import (
    BoxMode,
    bitmask_to_rle,
    mask_to_box,
    masks_to_boxes,
    pad_masks,
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
    "pad_masks",
    "polygons_to_bitmask",
    "rle_to_bitmask",
    "segmentation_to_bitmask",
]


reexport_module(globals(), "boxes")
reexport_module(globals(), "image_list")
reexport_module(globals(), "shape_spec")
