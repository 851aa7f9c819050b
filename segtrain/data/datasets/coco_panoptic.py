"""COCO panoptic JSON + PNG folder -> dataset dicts, and ``register_coco_panoptic``.

Each dict: ``file_name`` (the image), ``image_id``, ``height``, ``width``,
``pan_seg_file_name`` (the PNG: id = R + 256 G + 256^2 B) and ``segments_info``: ``{"id",
"category_id" (contiguous, over every category: things and stuff), "iscrowd", "area",
"bbox"}``. ``InstanceDatasetMapper`` turns them into Mask2Former's panoptic targets and
``PanopticEvaluator`` scores against them. Problems (missing files, unknown category ids,
annotations of unknown images) are one-line ``DatasetError`` naming the file and id.
"""

import logging
import os
from typing import Any, Dict, List, Optional

from segtrain.utils.errors import DatasetError

from ..catalog import DatasetCatalog, MetadataCatalog
from .annotation_checks import check_top_level, is_int, parse_categories, read_json_file

__all__ = ["load_coco_panoptic_json", "panoptic_category_metadata", "register_coco_panoptic"]

logger = logging.getLogger(__name__)


def load_coco_panoptic_json(
    json_file: str, image_root: str, panoptic_root: str, dataset_name: Optional[str] = None
) -> List[Dict[str, Any]]:
    """Read a COCO panoptic annotation file; images under ``image_root``, PNGs under
    ``panoptic_root``. With ``dataset_name``, its metadata gets ``stuff_classes`` (every
    category, in id order), ``thing_classes``, ``thing_dataset_id_to_contiguous_id`` (thing
    dataset id -> index in ``stuff_classes``) and ``stuff_dataset_id_to_contiguous_id``."""
    data = read_json_file(json_file, "panoptic annotation")
    check_top_level(json_file, data, ("images", "annotations", "categories"), "COCO panoptic")
    names_by_id, id_map, valid = parse_categories(json_file, data["categories"])
    images = {}
    for img in data["images"]:
        if not isinstance(img, dict) or not all(k in img for k in ("id", "file_name", "height", "width")):
            raise DatasetError(f"{json_file}: image entry needs id, file_name, height and width, got {img!r}")
        images[img["id"]] = img
    dicts = []
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or "image_id" not in ann or "file_name" not in ann:
            raise DatasetError(f"{json_file}: annotation needs image_id and file_name, got {str(ann)[:200]}")
        img = images.get(ann["image_id"])
        if img is None:
            raise DatasetError(
                f"{json_file}: annotation {ann['file_name']!r} is for image_id {ann['image_id']}, "
                f"which is not in 'images'"
            )
        segments = []
        for seg in ann.get("segments_info", []):
            cid = seg.get("category_id")
            if not is_int(cid) or int(cid) not in id_map:
                raise DatasetError(
                    f"{json_file}: image_id {ann['image_id']} segment {seg.get('id')} has category_id "
                    f"{cid!r}; valid ids: {valid}"
                )
            segments.append(
                {
                    "id": int(seg["id"]),
                    "category_id": id_map[int(cid)],
                    "iscrowd": int(seg.get("iscrowd", 0)),
                    "area": seg.get("area"),
                    "bbox": seg.get("bbox"),
                }
            )
        dicts.append(
            {
                "file_name": os.path.join(image_root, img["file_name"]),
                "image_id": img["id"],
                "height": int(img["height"]),
                "width": int(img["width"]),
                "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
                "segments_info": segments,
            }
        )
    logger.info(
        "Loaded %d panoptic images with %d segments from %s",
        len(dicts),
        sum(len(d["segments_info"]) for d in dicts),
        json_file,
    )
    if dataset_name is not None:  # the same values as at registration, else a one-line DatasetError
        MetadataCatalog.get(dataset_name).set(**panoptic_category_metadata(json_file, data["categories"]))
    return dicts


def panoptic_category_metadata(json_file: str, categories: List[Any]) -> Dict[str, Any]:
    """``stuff_classes`` (every category, in id order: the contiguous ids), ``thing_classes``,
    ``thing_dataset_id_to_contiguous_id`` (thing dataset id -> its index in ``stuff_classes``)
    and ``stuff_dataset_id_to_contiguous_id`` from a COCO panoptic ``categories`` list."""
    names_by_id, id_map, _ = parse_categories(json_file, categories)
    isthing = {int(c["id"]): bool(c.get("isthing", 1)) for c in categories}
    cat_ids = sorted(names_by_id)
    return {
        "stuff_classes": [names_by_id[c] for c in cat_ids],
        "thing_classes": [names_by_id[c] for c in cat_ids if isthing[c]],
        "thing_dataset_id_to_contiguous_id": {c: id_map[c] for c in cat_ids if isthing[c]},
        "stuff_dataset_id_to_contiguous_id": dict(id_map),
    }


def register_coco_panoptic(
    name: str, metadata: Dict[str, Any], image_root: str, panoptic_root: str, panoptic_json: str
) -> None:
    """Register a COCO panoptic split as dataset ``name``. ``metadata`` adds to ``json_file``
    (= ``panoptic_json``), ``image_root``, ``panoptic_root``, ``ignore_label=255``,
    ``evaluator_type="panoptic_seg"`` and the category metadata. The model needs the categories
    when it is built (which are stuff, for panoptic merging), so unless ``metadata`` gives
    ``stuff_classes`` and ``thing_dataset_id_to_contiguous_id`` the JSON is read now for its
    ``categories``; the images and segments are read at ``DatasetCatalog.get(name)``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_coco_panoptic: name must be a non-empty str, got {name!r}")
    metadata = dict(metadata or {})
    meta: Dict[str, Any] = {
        "json_file": panoptic_json,
        "image_root": image_root,
        "panoptic_root": panoptic_root,
        "ignore_label": 255,
        "evaluator_type": "panoptic_seg",
    }
    if not ("stuff_classes" in metadata and "thing_dataset_id_to_contiguous_id" in metadata):
        data = read_json_file(panoptic_json, "panoptic annotation")
        check_top_level(panoptic_json, data, ("categories",), "COCO panoptic")
        meta.update(panoptic_category_metadata(panoptic_json, data["categories"]))
    meta.update(metadata)
    DatasetCatalog.register(name, lambda: load_coco_panoptic_json(panoptic_json, image_root, panoptic_root, name))
    MetadataCatalog.get(name).set(**meta)
