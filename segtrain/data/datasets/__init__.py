"""Dataset loaders: COCO JSON, the generated ``shapes`` dataset, and the built-in registrations."""
from .coco import bad_annotation_policy, get_bad_annotation_policy, load_coco_json, register_coco_instances
from .shapes import SHAPES_CLASSES, ensure_shapes, generate_shapes

__all__ = [
    "load_coco_json",
    "register_coco_instances",
    "bad_annotation_policy",
    "get_bad_annotation_policy",
    "SHAPES_CLASSES",
    "ensure_shapes",
    "generate_shapes",
]
