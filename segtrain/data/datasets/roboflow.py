"""Roboflow COCO exports (the layout of Roboflow 100-VL and ODinW as SAM 3 reads them):
``root/{train,valid,test}/_annotations.coco.json`` with the images next to each json.

Roboflow writes its category 0 as the export's super-category: a category named after the
dataset that no annotation uses and that the others name as ``supercategory``. SAM 3's
``COCO_FROM_JSON`` keeps every category of the json, so category 0 is a concept like the
others: a find of every image (always a presence negative, its name as the prompt), and in
COCO AP a category without ground truth, which the mean leaves out. ``register_roboflow_coco``
does the same. Images without annotations are kept; boxes-only exports (``"segmentation":
[]``) load as box-only annotations.

``write_roboflow_shapes`` writes the built-in shapes dataset in this layout.
"""

import json
import logging
import os
import random
import shutil
import tempfile
from typing import Any, Dict, List

import numpy as np

from segtrain.utils.errors import DatasetError

from ..catalog import DatasetCatalog, MetadataCatalog
from .coco import load_coco_json
from .shapes import SHAPES_CLASSES, draw_background, generate_shapes, write_jpeg

__all__ = [
    "ROBOFLOW_SPLITS",
    "ROBOFLOW_JSON",
    "register_roboflow_coco",
    "load_roboflow_split",
    "official_image_subset",
    "write_roboflow_shapes",
]

logger = logging.getLogger(__name__)

ROBOFLOW_SPLITS = ("train", "valid", "test")
ROBOFLOW_JSON = "_annotations.coco.json"


def _sibling_names(name: str, split: str) -> List[str]:
    return [f"{name}_{s}" for s in ROBOFLOW_SPLITS if s != split]


def official_image_subset(dicts: List[Dict[str, Any]], num_images: int) -> List[Dict[str, Any]]:
    """The ``num_images`` images SAM 3's ``Sam3ImageDataset(limit_ids=num_images)`` trains on:
    the images sorted by id, their positions shuffled by ``random.Random(number of images)``,
    the first ``num_images`` kept (returned in id order). ``num_images`` <= 0 or at least the
    number of images: all of them."""
    ordered = sorted(dicts, key=lambda d: d["image_id"])
    if num_images <= 0 or num_images >= len(ordered):
        return ordered
    positions = list(range(len(ordered)))
    random.Random(len(positions)).shuffle(positions)
    return [ordered[i] for i in sorted(positions[:num_images])]


def load_roboflow_split(name: str, root: str, split: str, num_images: int = 0) -> List[Dict[str, Any]]:
    """Dataset dicts of one split of the export at ``root``, registered as ``<name>_<split>``
    (``load_coco_json`` with the split folder as image root); with ``num_images`` > 0 the
    official few-shot subset of that many images (:func:`official_image_subset`). The class
    names must equal those of a sibling split read before (the concept ids are shared by
    training and evaluation)."""
    dataset_name = f"{name}_{split}"
    folder = os.path.join(root, split)
    json_file = os.path.join(folder, ROBOFLOW_JSON)
    dicts = load_coco_json(json_file, folder, dataset_name)
    meta = MetadataCatalog.get(dataset_name)
    classes = list(meta.thing_classes)
    for other in _sibling_names(name, split):
        theirs = MetadataCatalog.get(other).get("thing_classes")
        if theirs is not None and list(theirs) != classes:
            raise DatasetError(
                f"{json_file}: categories {classes} differ from those of {other} ({list(theirs)}); the splits of a "
                "Roboflow export must share one category list"
            )
    to_contiguous = meta.thing_dataset_id_to_contiguous_id
    if 0 in to_contiguous:
        used = {a["category_id"] for d in dicts for a in d["annotations"]}
        if to_contiguous[0] not in used:
            logger.info(
                "%s: category 0 %r has no annotation (Roboflow's super-category); it stays a concept, a presence "
                "negative of every image, as in SAM 3's COCO_FROM_JSON",
                json_file,
                classes[to_contiguous[0]],
            )
    if num_images > 0:
        total = len(dicts)
        dicts = official_image_subset(dicts, num_images)
        if len(dicts) < total:
            logger.info("%s: %d of its %d images (SAM 3's limit_ids subset)", dataset_name, len(dicts), total)
    return dicts


def register_roboflow_coco(name: str, root: str, num_train_images: int = 0) -> List[str]:
    """Register the Roboflow export at ``root`` as ``<name>_train``, ``<name>_valid`` and
    ``<name>_test`` (the splits whose ``_annotations.coco.json`` exists); returns the names.
    ``num_train_images`` > 0 keeps that many training images, the subset SAM 3's
    ``roboflow_v100_full_ft_100_images`` trains on (:func:`official_image_subset`).

    Nothing is read until ``DatasetCatalog.get``; reading sets ``thing_classes`` (the category
    names, the text prompts of the finds, category 0 included: module docstring) and
    ``thing_dataset_id_to_contiguous_id``. The metadata also has ``json_file``, ``image_root``
    and ``evaluator_type`` ``FindEvaluator``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_roboflow_coco: name must be a non-empty str, got {name!r}")
    if not os.path.isdir(root):
        raise DatasetError(f"Roboflow export folder not found: {root!r}")
    present = [s for s in ROBOFLOW_SPLITS if os.path.isfile(os.path.join(root, s, ROBOFLOW_JSON))]
    if not present:
        raise DatasetError(
            f"{root}: no Roboflow split found (expected {', '.join(f'{s}/{ROBOFLOW_JSON}' for s in ROBOFLOW_SPLITS)})"
        )
    names = []
    for split in present:
        dataset_name = f"{name}_{split}"
        limit = int(num_train_images) if split == "train" else 0
        DatasetCatalog.register(dataset_name, lambda split=split, limit=limit: load_roboflow_split(name, root, split, limit))
        folder = os.path.join(root, split)
        MetadataCatalog.get(dataset_name).set(
            json_file=os.path.join(folder, ROBOFLOW_JSON),
            image_root=folder,
            evaluator_type="FindEvaluator",
            num_train_images=int(num_train_images),
        )
        names.append(dataset_name)
    logger.info("Registered the Roboflow export %s as %s", root, ", ".join(names))
    return names


# ------------------------------------------------------------------ the shapes dataset in this layout
def _roboflow_split(
    src: str, dst: str, indices: List[int], *, masks: bool, empty_images: int, image_size: int, seed: int
) -> None:
    """Write ``dst`` (a split folder) from the shapes split at ``src``: images ``indices``, then
    ``empty_images`` textured images without objects; ids from 0 as Roboflow numbers them."""
    with open(os.path.join(src, "annotations.json")) as f:
        data = json.load(f)
    os.makedirs(dst, exist_ok=True)
    by_image: Dict[int, List[Dict[str, Any]]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    images, annotations = [], []
    for new_id, k in enumerate(indices):
        img = data["images"][k]
        shutil.copyfile(os.path.join(src, "images", img["file_name"]), os.path.join(dst, img["file_name"]))
        images.append(dict(img, id=new_id))
        for a in by_image.get(img["id"], []):
            out = dict(a, id=len(annotations), image_id=new_id)
            if not masks:
                out["segmentation"] = []
            annotations.append(out)
    for e in range(empty_images):
        rng = np.random.default_rng([seed, image_size, e])
        background, _ = draw_background(rng, image_size)
        file_name = f"empty_{e:03d}.jpg"
        write_jpeg(os.path.join(dst, file_name), np.clip(background, 0, 255).astype(np.uint8))
        images.append({"id": len(images), "file_name": file_name, "height": image_size, "width": image_size})
    categories = [{"id": 0, "name": "shapes", "supercategory": "none"}] + [
        {"id": k + 1, "name": c, "supercategory": "shapes"} for k, c in enumerate(SHAPES_CLASSES)
    ]
    out = {"info": {"description": "segtrain shapes, Roboflow layout"}, "licenses": [], "categories": categories}
    out.update(images=images, annotations=annotations)
    with open(os.path.join(dst, ROBOFLOW_JSON), "w") as f:
        json.dump(out, f)


def write_roboflow_shapes(
    root: str,
    *,
    num_train: int = 8,
    num_valid: int = 4,
    num_test: int = 4,
    image_size: int = 64,
    masks: bool = True,
    empty_images: int = 1,
) -> str:
    """Write the shapes dataset as a Roboflow export at ``root``: ``train`` from the shapes
    train split, ``valid`` and ``test`` from disjoint images of its val split, each with
    ``empty_images`` extra images without objects; category 0 ``"shapes"`` is the
    super-category (no annotations), the shape classes are 1..6. ``masks=False`` writes
    boxes only (``"segmentation": []``). Deterministic. Returns ``root``."""
    if min(num_train, num_valid, num_test) < 0 or empty_images < 0:
        raise DatasetError("write_roboflow_shapes: image counts must be >= 0")
    os.makedirs(root, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="roboflow-shapes-", dir=root) as tmp:
        train_src, val_src = os.path.join(tmp, "train"), os.path.join(tmp, "val")
        generate_shapes(train_src, "train", num_train, image_size)
        generate_shapes(val_src, "val", num_valid + num_test, image_size)
        common = {"masks": masks, "empty_images": empty_images, "image_size": image_size}
        _roboflow_split(train_src, os.path.join(root, "train"), list(range(num_train)), seed=1, **common)
        _roboflow_split(val_src, os.path.join(root, "valid"), list(range(num_valid)), seed=2, **common)
        test_ids = list(range(num_valid, num_valid + num_test))
        _roboflow_split(val_src, os.path.join(root, "test"), test_ids, seed=3, **common)
    return root
