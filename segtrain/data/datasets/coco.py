"""COCO instance-segmentation JSON -> dataset dicts (CONTRACTS.md), with checks that name
the file and annotation id at fault.

Bad annotations follow ``DATASETS.ON_BAD_ANNOTATION`` ("error" / "skip"; see
``annotation_checks.bad_annotation_policy``, re-exported here).

Box-only annotations: an annotation needs a ``segmentation`` or a ``bbox``. A missing,
``null`` or empty (``[]``) segmentation next to a valid bbox is a box-only annotation; its
dataset dict has no ``"segmentation"`` key (Detectron2's convention). Whether masks exist
is decided per annotation, so a file may mix both kinds; the consumers decide what that
means: ``FindDatasetMapper`` trains the mask terms on the instances that have masks only,
``InstanceDatasetMapper`` (Mask2Former) refuses box-only annotations, ``FindEvaluator``
scores masks only on images whose every annotation has one.
"""

import contextlib
import io
import logging
import os
from typing import Any, Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO

from segtrain.structures.masks import BoxMode
from segtrain.utils.errors import DatasetError

from ..catalog import DatasetCatalog, MetadataCatalog
from .annotation_checks import (
    BAD_ANNOTATION_POLICIES,
    ProblemLog,
    bad_annotation_policy,
    check_policy,
    check_segmentation,
    check_top_level,
    checked_annotations,
    get_bad_annotation_policy,
    is_int,
    parse_categories,
    read_json_file,
)

__all__ = [
    "load_coco_json",
    "has_segmentation",
    "register_coco_instances",
    "bad_annotation_policy",
    "get_bad_annotation_policy",
    "BAD_ANNOTATION_POLICIES",
]

logger = logging.getLogger(__name__)

_IMAGE_KEYS = ("id", "file_name", "height", "width")
_ANN_KEYS = ("id", "image_id", "category_id")  # plus "segmentation" and / or "bbox"


def has_segmentation(ann: Dict[str, Any]) -> bool:
    """True when ``ann`` carries a mask: a ``segmentation`` that is not missing, ``None`` or
    empty (pycocotools writers store box-only annotations as ``"segmentation": []``)."""
    segm = ann.get("segmentation")
    return segm is not None and not (isinstance(segm, (list, tuple, dict)) and len(segm) == 0)


def _bbox_from_segmentation(segm: Any, height: int, width: int) -> List[float]:
    if isinstance(segm, dict):
        rle = mask_util.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
        if isinstance(rle.get("counts"), str):
            rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    else:
        rle = mask_util.merge(mask_util.frPyObjects([list(map(float, p)) for p in segm], height, width))
    return [float(v) for v in mask_util.toBbox(rle)]


def load_coco_json(
    json_file: str,
    image_root: str,
    dataset_name: Optional[str] = None,
    *,
    on_bad_annotation: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """Load a COCO instances JSON into dataset dicts.

    Category ids are mapped to contiguous ids [0, K) in sorted-id order; with
    ``dataset_name`` the metadata gets ``thing_classes`` and
    ``thing_dataset_id_to_contiguous_id``. ``on_bad_annotation`` ("error" / "skip")
    defaults to the policy in effect (see ``bad_annotation_policy``).
    Returns ``[{"file_name", "height", "width", "image_id", "annotations": [...]}]``; each
    annotation has ``id``, ``bbox`` (XYWH, from the mask when the json has none),
    ``bbox_mode``, ``category_id``, ``iscrowd`` and, unless it is box-only (module
    docstring), ``segmentation``. An annotation with neither is a bad annotation.
    """
    policy = check_policy(on_bad_annotation or get_bad_annotation_policy())
    data = read_json_file(json_file, "COCO annotation")
    check_top_level(json_file, data, ("images", "annotations", "categories"), "COCO")
    names_by_id, id_map, valid_cat = parse_categories(json_file, data["categories"])
    cat_ids = sorted(names_by_id)

    problems = ProblemLog(json_file, policy, logger)
    images: List[dict] = []
    image_ids = set()
    for k, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            problems.report(f"image #{k} is not a JSON object", image=True)
            continue
        missing = [key for key in _IMAGE_KEYS if key not in img]
        if missing:
            problems.report(
                f"image id {img.get('id', f'#{k}')}: missing required key(s) {', '.join(missing)} "
                f"(required: {', '.join(_IMAGE_KEYS)})",
                image=True,
            )
            continue
        iid = img["id"]
        if not is_int(iid):
            problems.report(f"image #{k}: id must be an integer, got {iid!r}", image=True)
            continue
        if iid in image_ids:
            raise DatasetError(f"{json_file}: image id {iid} is used twice")
        h, w = img["height"], img["width"]
        if not (is_int(h) and is_int(w) and h > 0 and w > 0):
            problems.report(f"image id {iid}: height/width must be positive integers, got {h!r}/{w!r}", image=True)
            continue
        path = os.path.join(image_root, img["file_name"])
        if not os.path.isfile(path):
            problems.report(f"image id {iid}: image file not found: {path!r}", image=True)
            continue
        image_ids.add(iid)
        images.append(img)
    all_image_ids = {img.get("id") for img in data["images"] if isinstance(img, dict)}
    size_by_id = {img["id"]: (img["height"], img["width"]) for img in images}

    anns: List[dict] = []
    ann_ids = set()
    for ann, aid, iid, _ in checked_annotations(
        problems,
        data["annotations"],
        required=_ANN_KEYS,
        parent_key="image_id",
        parents=size_by_id,
        all_parent_ids=all_image_ids,
        id_map=id_map,
        valid_categories=valid_cat,
        seen_ids=ann_ids,
    ):
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1):
            problems.report(f"annotation id {aid}: iscrowd must be 0 or 1, got {iscrowd!r}")
            continue
        h, w = size_by_id[iid]
        bbox = ann.get("bbox")
        if has_segmentation(ann):
            err = check_segmentation(ann["segmentation"], h, w)
            if err is not None:
                problems.report(f"annotation id {aid} (image id {iid}): {err}")
                continue
        elif bbox is None:
            problems.report(
                f"annotation id {aid} (image id {iid}): has neither 'segmentation' nor 'bbox' "
                f"(one of them is required; an empty segmentation counts as missing)"
            )
            continue
        if bbox is not None:
            ok = isinstance(bbox, (list, tuple)) and len(bbox) == 4
            ok = ok and all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox) and bbox[2] >= 0 <= bbox[3]
            if not ok:
                problems.report(f"annotation id {aid}: bbox must be 4 finite numbers [x, y, w>=0, h>=0], got {bbox!r}")
                continue
        ann_ids.add(aid)
        anns.append(ann)

    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": data["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()

    dicts: List[Dict[str, Any]] = []
    image_root_abs = os.path.abspath(image_root)
    for img in images:
        h, w = img["height"], img["width"]
        objs = []
        for ann in coco.imgToAnns.get(img["id"], []):
            segm = ann["segmentation"] if has_segmentation(ann) else None
            bbox = ann.get("bbox")
            if bbox is None:
                bbox = _bbox_from_segmentation(segm, h, w)
            obj = {
                "id": ann["id"],
                "bbox": [float(v) for v in bbox],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": id_map[ann["category_id"]],
                "iscrowd": int(ann.get("iscrowd", 0)),
            }
            if segm is not None:  # box-only annotations have no "segmentation" key
                obj["segmentation"] = segm
            objs.append(obj)
        dicts.append(
            {
                "file_name": os.path.join(image_root_abs, img["file_name"]),
                "height": int(h),
                "width": int(w),
                "image_id": img["id"],
                "annotations": objs,
            }
        )
    problems.log_summary()
    num_box_only = sum(not has_segmentation(a) for a in anns)
    logger.info("Loaded %d images with %d annotations from %s", len(dicts), len(anns), json_file)
    if num_box_only:
        logger.info("%s: %d of %d annotations are box-only (no segmentation)", json_file, num_box_only, len(anns))

    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(
            thing_classes=[names_by_id[c] for c in cat_ids],
            thing_dataset_id_to_contiguous_id=dict(id_map),
        )
    return dicts


def register_coco_instances(name: str, metadata: Dict[str, Any], json_file: str, image_root: str) -> None:
    """Register COCO instances ``json_file`` (images under ``image_root``) as dataset
    ``name``; nothing is read until ``DatasetCatalog.get(name)``. ``metadata`` adds to
    ``json_file``, ``image_root`` and ``evaluator_type="coco"``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_coco_instances: name must be a non-empty str, got {name!r}")
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    meta = {"json_file": json_file, "image_root": image_root, "evaluator_type": "coco"}
    meta.update(metadata or {})
    MetadataCatalog.get(name).set(**meta)
