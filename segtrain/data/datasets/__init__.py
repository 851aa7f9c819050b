"""Dataset loaders: COCO JSON, COCO panoptic, the generated ``shapes`` dataset, and the built-in registrations."""
from .coco import bad_annotation_policy, get_bad_annotation_policy, load_coco_json, register_coco_instances
from .coco_panoptic import load_coco_panoptic_json, register_coco_panoptic
from .shapes import SHAPES_CLASSES, ensure_shapes, generate_shapes

__all__ = [
    "load_coco_json",
    "register_coco_instances",
    "load_coco_panoptic_json",
    "register_coco_panoptic",
    "bad_annotation_policy",
    "get_bad_annotation_policy",
    "SHAPES_CLASSES",
    "ensure_shapes",
    "generate_shapes",
]
