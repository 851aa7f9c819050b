"""Layers and functional pieces: losses, point sampling, norms, attention helpers.

Each sibling module is re-exported on its own line (``reexport_module``).
"""
from segtrain.utils.imports import reexport_module

from .losses import (  # noqa: F401
    batch_dice_loss,
    batch_sigmoid_ce_loss,
    batch_sigmoid_focal_class_cost,
    dice_loss,
    iou_loss,
    mask_ious,
    sigmoid_ce_loss,
    sigmoid_focal_loss,
)
from .point_sample import (  # noqa: F401
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
    select_uncertain_grid_points,
    select_uncertain_point_coords,
)

__all__ = [
    "sigmoid_ce_loss", "dice_loss", "sigmoid_focal_loss", "iou_loss", "mask_ious",
    "batch_sigmoid_ce_loss", "batch_dice_loss", "batch_sigmoid_focal_class_cost",
    "point_sample", "get_uncertain_point_coords_with_randomness", "calculate_uncertainty",
    "select_uncertain_point_coords", "select_uncertain_grid_points",
]


reexport_module(globals(), "norm")
reexport_module(globals(), "wrappers")
reexport_module(globals(), "position_encoding")
reexport_module(globals(), "ms_deform_attn")
