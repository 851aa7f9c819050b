"""Dataset loaders: COCO JSON, COCO panoptic, semantic label folders, video folders (DAVIS / MOSE /
YouTube-VOS label PNGs, SA-V masklets), Roboflow COCO exports, the generated ``shapes`` dataset, and the
built-in registrations."""

from .coco import bad_annotation_policy, get_bad_annotation_policy, load_coco_json, register_coco_instances
from .coco_panoptic import load_coco_panoptic_json, register_coco_panoptic
from .roboflow import register_roboflow_coco, write_roboflow_shapes
from .sav import load_sav_folder, register_sav_folder
from .sem_seg import load_sem_seg, register_sem_seg
from .shapes import SHAPES_CLASSES, ensure_shapes, generate_shapes
from .vos_folder import export_vos_folder, load_vos_folder, register_vos_folder, write_object_label_map

__all__ = [
    "load_coco_json",
    "register_coco_instances",
    "load_coco_panoptic_json",
    "register_coco_panoptic",
    "register_roboflow_coco",
    "write_roboflow_shapes",
    "load_sem_seg",
    "register_sem_seg",
    "bad_annotation_policy",
    "get_bad_annotation_policy",
    "SHAPES_CLASSES",
    "ensure_shapes",
    "generate_shapes",
    "load_vos_folder",
    "register_vos_folder",
    "export_vos_folder",
    "write_object_label_map",
    "load_sav_folder",
    "register_sav_folder",
]
