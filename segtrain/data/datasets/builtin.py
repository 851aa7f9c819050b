"""Built-in datasets, registered at import of ``segtrain.data`` under ``$SEGTRAIN_DATASETS``
(default ``./datasets``): ``shapes_train`` / ``shapes_val`` (generated on first use) and,
when ``<root>/coco`` exists, ``coco_2017_train`` / ``coco_2017_val`` and the panoptic
``coco_2017_train_panoptic`` / ``coco_2017_val_panoptic``. The datasets a config describes
(the shapes sizes, a Roboflow export at ``DATASETS.ROBOFLOW.ROOT``) are registered by
``register_datasets_from_cfg``."""

import logging
import os
from typing import Optional

from ..catalog import DatasetCatalog, MetadataCatalog
from .coco import load_coco_json, register_coco_instances
from .coco_panoptic import panoptic_category_metadata, register_coco_panoptic
from .coco_panoptic_categories import coco_panoptic_categories
from .roboflow import ROBOFLOW_SPLITS, register_roboflow_coco
from .shapes import SHAPES_CLASSES, SHAPES_COLORS, ensure_shapes, shapes_dir

__all__ = [
    "get_datasets_root",
    "register_shapes",
    "register_shapes_from_cfg",
    "register_roboflow_from_cfg",
    "register_datasets_from_cfg", "register_coco_2017", "SHAPES_SPLITS"]

logger = logging.getLogger(__name__)

# name -> split; the sizes come from DATASETS.SHAPES (defaults: 2000 train, 200 val, 256 px)
SHAPES_SPLITS = {"shapes_train": "train", "shapes_val": "val"}
_DEFAULT_SHAPES = {"num_train": 2000, "num_val": 200, "image_size": 256}

_COCO_2017 = {
    "coco_2017_train": ("coco/train2017", "coco/annotations/instances_train2017.json"),
    "coco_2017_val": ("coco/val2017", "coco/annotations/instances_val2017.json"),
}
# name -> (images, panoptic PNGs, panoptic JSON), Detectron2's layout under <root>
_COCO_2017_PANOPTIC = {
    "coco_2017_train_panoptic": (
        "coco/train2017",
        "coco/panoptic_train2017",
        "coco/annotations/panoptic_train2017.json",
    ),
    "coco_2017_val_panoptic": ("coco/val2017", "coco/panoptic_val2017", "coco/annotations/panoptic_val2017.json"),
}


def get_datasets_root() -> str:
    """``$SEGTRAIN_DATASETS`` (default ``./datasets``) as an absolute path."""
    return os.path.abspath(os.path.expanduser(os.environ.get("SEGTRAIN_DATASETS", "./datasets")))


def _replace(name: str) -> None:
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def register_shapes(
    root: Optional[str] = None, *, num_train: int = 2000, num_val: int = 200, image_size: int = 256
) -> None:
    """(Re-)register ``shapes_train`` / ``shapes_val`` with these sizes under ``root``
    (default ``$SEGTRAIN_DATASETS``). Images are generated at the first ``get``."""
    root = os.path.abspath(root) if root else get_datasets_root()
    sizes = {"train": int(num_train), "val": int(num_val)}
    for name, split in SHAPES_SPLITS.items():
        n = sizes[split]
        folder = shapes_dir(root, split, n, image_size)

        def load(name=name, split=split, n=n):
            d = ensure_shapes(root, split, n, image_size)
            return load_coco_json(os.path.join(d, "annotations.json"), os.path.join(d, "images"), name)

        _replace(name)
        DatasetCatalog.register(name, load)
        MetadataCatalog.get(name).set(
            thing_classes=list(SHAPES_CLASSES),
            thing_colors=[list(c) for c in SHAPES_COLORS],
            thing_dataset_id_to_contiguous_id={k + 1: k for k in range(len(SHAPES_CLASSES))},
            evaluator_type="coco",
            json_file=os.path.join(folder, "annotations.json"),
            image_root=os.path.join(folder, "images"),
            num_images=n,
            image_size=int(image_size),
        )


def register_shapes_from_cfg(cfg) -> None:
    """Re-register the shapes datasets with ``cfg.DATASETS.SHAPES`` sizes (and the current
    ``$SEGTRAIN_DATASETS``); the loader builders call this first."""
    sh = cfg.DATASETS.SHAPES
    register_shapes(num_train=sh.NUM_TRAIN, num_val=sh.NUM_VAL, image_size=sh.IMAGE_SIZE)


def register_roboflow_from_cfg(cfg) -> None:
    """Register the Roboflow export at ``DATASETS.ROBOFLOW.ROOT`` (when set) as
    ``<NAME>_train`` / ``_valid`` / ``_test``; a second call with the same folder keeps the
    registration (and the metadata its reading set)."""
    rf = cfg.DATASETS.ROBOFLOW
    if not rf.ROOT:
        return
    root = os.path.abspath(os.path.expanduser(rf.ROOT))
    names = [f"{rf.NAME}_{split}" for split in ROBOFLOW_SPLITS]
    registered = [n for n in names if n in DatasetCatalog]
    same = all(
        MetadataCatalog.get(n).get("image_root", "").startswith(root + os.sep)
        and MetadataCatalog.get(n).get("num_train_images") == int(rf.NUM_TRAIN_IMAGES)
        for n in registered
    )
    if registered and same:
        return
    for name in registered:
        _replace(name)
    register_roboflow_coco(rf.NAME, root, int(rf.NUM_TRAIN_IMAGES))


def register_datasets_from_cfg(cfg) -> None:
    """Every dataset the config describes: the shapes sizes (``DATASETS.SHAPES``) and a
    Roboflow export (``DATASETS.ROBOFLOW``); the loader and evaluator builders call this first."""
    register_shapes_from_cfg(cfg)
    register_roboflow_from_cfg(cfg)


def register_coco_2017(root: Optional[str] = None) -> None:
    """Register COCO 2017 train/val, instances and panoptic, when ``<root>/coco`` exists
    (nothing is read yet)."""
    root = os.path.abspath(root) if root else get_datasets_root()
    if not os.path.isdir(os.path.join(root, "coco")):
        return
    for name, (image_dir, json_rel) in _COCO_2017.items():
        _replace(name)
        register_coco_instances(name, {}, os.path.join(root, json_rel), os.path.join(root, image_dir))
    # the category metadata comes from the built-in table: no JSON is read at import
    meta = panoptic_category_metadata("COCO panoptic categories", coco_panoptic_categories())
    for name, (image_dir, png_dir, json_rel) in _COCO_2017_PANOPTIC.items():
        _replace(name)
        register_coco_panoptic(
            name, meta, os.path.join(root, image_dir), os.path.join(root, png_dir), os.path.join(root, json_rel)
        )


register_shapes(**_DEFAULT_SHAPES)
register_coco_2017()
