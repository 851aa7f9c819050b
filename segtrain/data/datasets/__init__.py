"""Dataset loaders: COCO JSON, COCO panoptic, the generated ``shapes`` dataset, and the built-in registrations."""

from .coco import bad_annotation_policy, get_bad_annotation_policy, load_coco_json, register_coco_instances
from .coco_panoptic import load_coco_panoptic_json, register_coco_panoptic
from .sem_seg import load_sem_seg, register_sem_seg
from .shapes import SHAPES_CLASSES, ensure_shapes, generate_shapes

__all__ = [
    "load_coco_json",
    "register_coco_instances",
    "load_coco_panoptic_json",
    "register_coco_panoptic",
    "load_sem_seg",
    "register_sem_seg",
    "bad_annotation_policy",
    "get_bad_annotation_policy",
    "SHAPES_CLASSES",
    "ensure_shapes",
    "generate_shapes",
]
