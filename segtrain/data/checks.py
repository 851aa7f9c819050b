"""Start-up checks of the data keys: registered datasets with their files present, and the
names of the mapper, the training sampler and the bad-annotation policy."""

import os
from typing import List, Tuple

from segtrain.config.checks import get_key, register_check, register_name_key
from segtrain.utils.registry import format_suggestions

from .catalog import DatasetCatalog, MetadataCatalog
from .datasets.annotation_checks import BAD_ANNOTATION_POLICIES
from .datasets.builtin import SHAPES_SPLITS, register_datasets_from_cfg
from .datasets.shapes_video import SHAPES_VIDEO_SPLITS, register_shapes_video_from_cfg
from .mappers.build import MAPPER_REGISTRY

__all__ = ["dataset_names"]

#: built-in datasets written on first use: no files to check before that
_GENERATED = set(SHAPES_SPLITS) | set(SHAPES_VIDEO_SPLITS)


def dataset_names(cfg, train: bool) -> List[Tuple[str, str]]:
    """``(config key, dataset name)`` of ``DATASETS.TEST`` and, when ``train``, ``DATASETS.TRAIN``."""
    keys = (["DATASETS.TRAIN"] if train else []) + ["DATASETS.TEST"]
    return [(key, name) for key in keys for name in get_key(cfg, key, ()) or ()]


def _check_datasets(cfg, train: bool, problems: List[str]) -> None:
    # the loader builders register the built-in datasets with the config's sizes first
    register_datasets_from_cfg(cfg)
    register_shapes_video_from_cfg(cfg)
    if train and not list(get_key(cfg, "DATASETS.TRAIN", ()) or ()):
        problems.append("DATASETS.TRAIN is empty: name at least one training dataset")
    registered = DatasetCatalog.list()
    for key, name in dataset_names(cfg, train):
        if name not in DatasetCatalog:
            problems.append(
                f"{key}: dataset {name!r} is not registered.{format_suggestions(name, registered)} "
                f"Registered: {', '.join(registered)}"
            )
            continue
        if name in _GENERATED:
            continue
        meta = MetadataCatalog.get(name)
        json_file = getattr(meta, "json_file", None)
        if json_file and not os.path.isfile(json_file):
            problems.append(f"{key}: annotation file of dataset {name!r} not found: {json_file!r}")
        for attr, what in (("image_root", "image"), ("panoptic_root", "panoptic PNG"), ("sem_seg_root", "label PNG")):
            folder = getattr(meta, attr, None)
            if folder and not os.path.isdir(folder):
                problems.append(f"{key}: {what} folder of dataset {name!r} not found: {folder!r}")


register_name_key("INPUT.DATASET_MAPPER_NAME", "MAPPER", lambda: sorted(MAPPER_REGISTRY.names()))
register_name_key("DATALOADER.SAMPLER_TRAIN", "training sampler", lambda: ["TrainingSampler"])
register_name_key("DATASETS.ON_BAD_ANNOTATION", "bad-annotation policy", lambda: BAD_ANNOTATION_POLICIES)
register_check(_check_datasets)
