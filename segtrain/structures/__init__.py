"""Data structures shared by data, models and evaluation."""

from .boxes import (
    box_area,
    box_cxcywh_to_xyxy,
    box_iou,
    box_iou_paired,
    box_xyxy_to_cxcywh,
    generalized_box_iou,
    generalized_box_iou_paired,
)
from .image_list import ImageList
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
from .packed_instances import PackedInstanceTargets, pack_instance_targets
from .shape_spec import ShapeSpec

__all__ = [
    "box_area",
    "box_cxcywh_to_xyxy",
    "box_iou",
    "box_iou_paired",
    "box_xyxy_to_cxcywh",
    "generalized_box_iou",
    "generalized_box_iou_paired",
    "ImageList",
    "ShapeSpec",
    "PackedInstanceTargets",
    "pack_instance_targets",
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
