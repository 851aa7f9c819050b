"""Layers and functional pieces shared by the families: losses, point sampling, norms, conv
wrappers, position encodings, multi-scale deformable attention and DETR-style transformer layers."""

from .losses import (
    batch_dice_loss,
    batch_sigmoid_ce_loss,
    batch_sigmoid_focal_class_cost,
    dice_loss,
    iou_loss,
    mask_ious,
    sigmoid_ce_loss,
    sigmoid_focal_loss,
)
from .ms_deform_attn import MSDeformAttn, ms_deform_attn_core, value_grad
from .norm import NORM_NAMES, FrozenBatchNorm2d, get_norm
from .point_sample import (
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    point_sample,
    select_uncertain_grid_points,
    select_uncertain_point_coords,
)
from .position_encoding import PositionEmbeddingSine
from .transformer import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from .wrappers import Conv2d, c2_msra_fill, c2_xavier_fill, conv2d_as_matmul

__all__ = [
    "sigmoid_ce_loss",
    "dice_loss",
    "sigmoid_focal_loss",
    "iou_loss",
    "mask_ious",
    "batch_sigmoid_ce_loss",
    "batch_dice_loss",
    "batch_sigmoid_focal_class_cost",
    "point_sample",
    "get_uncertain_point_coords_with_randomness",
    "calculate_uncertainty",
    "select_uncertain_point_coords",
    "select_uncertain_grid_points",
    "FrozenBatchNorm2d",
    "get_norm",
    "NORM_NAMES",
    "Conv2d",
    "conv2d_as_matmul",
    "c2_msra_fill",
    "c2_xavier_fill",
    "PositionEmbeddingSine",
    "MSDeformAttn",
    "ms_deform_attn_core",
    "value_grad",
    "SelfAttentionLayer",
    "CrossAttentionLayer",
    "FFNLayer",
    "MLP",
]
