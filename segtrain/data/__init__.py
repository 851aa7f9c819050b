"""Data pipeline: dataset catalog, loaders (COCO JSON, COCO panoptic, built-in shapes), mappers,
augmentations, samplers and the train / test loader builders.

Importing this package registers the built-in datasets (``shapes_train``, ``shapes_val``,
and COCO 2017 when present under ``$SEGTRAIN_DATASETS``).
"""

from . import checks as _checks  # noqa: F401  (registers the data keys' start-up checks)
from . import find as _find  # noqa: F401  (registers FindDatasetMapper)
from . import transforms
from . import video as _video  # noqa: F401  (registers VideoDatasetMapper and the video loader kind)
from .build import build_test_loader, build_train_loader, build_val_loss_loader, get_dataset_dicts
from .catalog import DATASET_REGISTRY, DatasetCatalog, Metadata, MetadataCatalog
from .datasets import builtin as _builtin  # noqa: F401  (registers the built-in datasets)
from .datasets import shapes_video as _shapes_video  # noqa: F401  (register video datasets)
from .datasets import ytvis as _ytvis  # noqa: F401  (registers the YouTube-VIS reader)
from .datasets.builtin import register_datasets_from_cfg, register_shapes, register_shapes_from_cfg
from .datasets.coco import bad_annotation_policy, load_coco_json, register_coco_instances
from .datasets.coco_panoptic import load_coco_panoptic_json, register_coco_panoptic
from .datasets.roboflow import register_roboflow_coco
from .datasets.sem_seg import load_sem_seg, register_sem_seg
from .find import load_find_query_json, register_find_query_json
from .loader_kinds import LoaderKind, register_loader_kind, select_loader_kind
from .mappers import MAPPER_REGISTRY, InstanceDatasetMapper, build_mapper
from .samplers import InferenceSampler, TrainingSampler

__all__ = [
    "DatasetCatalog",
    "MetadataCatalog",
    "Metadata",
    "DATASET_REGISTRY",
    "MAPPER_REGISTRY",
    "register_coco_instances",
    "load_coco_json",
    "register_coco_panoptic",
    "register_roboflow_coco",
    "register_find_query_json",
    "load_find_query_json",
    "load_coco_panoptic_json",
    "register_sem_seg",
    "load_sem_seg",
    "bad_annotation_policy",
    "register_shapes",
    "register_shapes_from_cfg",
    "register_datasets_from_cfg",
    "build_train_loader",
    "build_test_loader",
    "build_val_loss_loader",
    "LoaderKind",
    "register_loader_kind",
    "select_loader_kind",
    "get_dataset_dicts",
    "build_mapper",
    "InstanceDatasetMapper",
    "TrainingSampler",
    "InferenceSampler",
    "transforms",
]
