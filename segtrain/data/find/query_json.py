"""SA-Co-style find-query JSON -> one dataset dict per (image, text query) pair.

The format of SAM 3's SA-Co benchmarks (read by the official ``coco_json_loaders``): COCO-like,
but each entry of ``images`` is an image-query pair, ``{"id", "file_name", "height", "width",
"text_input"}`` (optional ``is_instance_exhaustive``, ``queried_category``); several entries
may share a ``file_name``. ``annotations`` point at a pair by ``image_id`` and carry ``bbox``
([x, y, w, h], normalized by the image size in SA-Co; absolute with ``normalized_boxes=False``),
an optional ``segmentation`` (RLE or polygons) and ``iscrowd`` (or ``is_crowd``); their
``category_id`` is unused. A pair without annotations is a presence negative.

The text queries form the concept vocabulary: their sorted distinct strings are
``thing_classes`` and a pair's concept is the index of its query there. Each dataset dict
fixes its find (``find_categories`` [1], ``find_is_exhaustive`` [1]), which
``FindDatasetMapper`` uses instead of sampling.
"""

import logging
import os
from typing import Any, Dict, List, Optional

import numpy as np

from segtrain.structures.masks import BoxMode
from segtrain.utils.errors import DatasetError

from ..catalog import DatasetCatalog, MetadataCatalog
from ..datasets.annotation_checks import (
    ProblemLog,
    check_policy,
    check_segmentation,
    check_top_level,
    get_bad_annotation_policy,
    is_int,
    read_json_file,
)
from ..datasets.coco import _bbox_from_segmentation, has_segmentation

__all__ = ["load_find_query_json", "register_find_query_json"]

logger = logging.getLogger(__name__)

_PAIR_KEYS = ("id", "file_name", "height", "width", "text_input")
# normalized boxes may overshoot [0, 1] by rounding
_NORMALIZED_SLACK = 1e-3


def _checked_pairs(json_file: str, pairs: List[Any], image_root: str, problems: ProblemLog) -> List[Dict[str, Any]]:
    kept, seen = [], set()
    for k, pair in enumerate(pairs):
        if not isinstance(pair, dict):
            problems.report(f"images entry #{k} is not a JSON object", image=True)
            continue
        pid = pair.get("id", f"#{k}")
        missing = [key for key in _PAIR_KEYS if key not in pair]
        if missing:
            problems.report(
                f"image-query pair id {pid}: missing required key(s) {', '.join(missing)} "
                f"(required: {', '.join(_PAIR_KEYS)})",
                image=True,
            )
            continue
        if not is_int(pid):
            problems.report(f"images entry #{k}: id must be an integer, got {pid!r}", image=True)
            continue
        if pid in seen:
            raise DatasetError(f"{json_file}: image-query pair id {pid} is used twice")
        text = pair["text_input"]
        if not isinstance(text, str) or not text.strip():
            problems.report(
                f"image-query pair id {pid}: text_input must be a non-empty string, got {text!r}", image=True
            )
            continue
        h, w = pair["height"], pair["width"]
        if not (is_int(h) and is_int(w) and h > 0 and w > 0):
            problems.report(
                f"image-query pair id {pid}: height/width must be positive integers, got {h!r}/{w!r}", image=True
            )
            continue
        if not os.path.isfile(os.path.join(image_root, pair["file_name"])):
            problems.report(
                f"image-query pair id {pid}: image file not found: {os.path.join(image_root, pair['file_name'])!r}",
                image=True,
            )
            continue
        seen.add(pid)
        kept.append(pair)
    return kept


def _checked_box(ann: Dict[str, Any], h: int, w: int, normalized: bool) -> Optional[List[float]]:
    """Absolute [x, y, w, h] of ``ann["bbox"]`` (None when absent); ValueError when malformed."""
    bbox = ann.get("bbox")
    if bbox is None:
        return None
    ok = isinstance(bbox, (list, tuple)) and len(bbox) == 4
    ok = ok and all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox) and bbox[2] >= 0 <= bbox[3]
    if not ok:
        raise ValueError(f"bbox must be 4 finite numbers [x, y, w>=0, h>=0], got {bbox!r}")
    if not normalized:
        return [float(v) for v in bbox]
    x, y, bw, bh = (float(v) for v in bbox)
    if min(x, y) < -_NORMALIZED_SLACK or x + bw > 1 + _NORMALIZED_SLACK or y + bh > 1 + _NORMALIZED_SLACK:
        raise ValueError(
            f"bbox {list(bbox)} is not normalized to [0, 1] (SA-Co boxes are; pass normalized_boxes=False "
            "for pixel boxes)"
        )
    return [x * w, y * h, bw * w, bh * h]


def load_find_query_json(
    json_file: str,
    image_root: str,
    dataset_name: Optional[str] = None,
    *,
    normalized_boxes: bool = True,
    on_bad_annotation: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """Read a find-query json (module docstring) into one dataset dict per image-query pair.

    Returns ``[{"file_name", "height", "width", "image_id"`` (the pair id), ``"text_input",
    "annotations"``: ``[{"id", "bbox"`` (absolute XYWH; from the mask when absent), ``"bbox_mode", "category_id"`` (the
    concept), ``"iscrowd"``, and ``"segmentation"`` unless box-only``}]``, ``"find_categories"``:
    ``[concept]``, ``"find_is_exhaustive"``: ``[bool]}]``. With ``dataset_name`` the metadata
    gets ``thing_classes`` (the vocabulary) and an identity ``thing_dataset_id_to_contiguous_id``.
    An annotation needs a ``bbox`` or a ``segmentation``; a bad entry is a one-line
    ``DatasetError`` naming the file and the entry (``on_bad_annotation="skip"``: dropped).
    """
    policy = check_policy(on_bad_annotation or get_bad_annotation_policy())
    data = read_json_file(json_file, "find-query")
    check_top_level(json_file, data, ("images", "annotations"), "find-query")
    problems = ProblemLog(json_file, policy, logger)
    pairs = _checked_pairs(json_file, data["images"], image_root, problems)
    vocabulary = sorted({p["text_input"] for p in pairs})
    concept_of = {text: c for c, text in enumerate(vocabulary)}
    by_id = {p["id"]: p for p in pairs}
    all_ids = {p.get("id") for p in data["images"] if isinstance(p, dict)}

    anns_of: Dict[int, List[Dict[str, Any]]] = {pid: [] for pid in by_id}
    ann_ids = set()
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            problems.report(f"annotation #{k} is not a JSON object")
            continue
        aid = ann.get("id", f"#{k}")
        if "image_id" not in ann:
            problems.report(f"annotation id {aid}: missing required key image_id")
            continue
        pid = ann["image_id"]
        if isinstance(pid, (list, dict)) or pid not in by_id:
            if isinstance(pid, (list, dict)) or pid not in all_ids:
                problems.report(f"annotation id {aid}: image_id {pid!r} is not an image-query pair in 'images'")
            continue  # its pair was reported
        if aid in ann_ids:
            raise DatasetError(f"{json_file}: annotation id {aid} is used twice")
        pair = by_id[pid]
        h, w = pair["height"], pair["width"]
        try:
            bbox = _checked_box(ann, h, w, normalized_boxes)
        except ValueError as e:
            problems.report(f"annotation id {aid} (pair id {pid}): {e}")
            continue
        segm = ann["segmentation"] if has_segmentation(ann) else None
        if segm is not None:
            err = check_segmentation(segm, h, w)
            if err is not None:
                problems.report(f"annotation id {aid} (pair id {pid}): {err}")
                continue
        elif bbox is None:
            problems.report(f"annotation id {aid} (pair id {pid}): has neither 'segmentation' nor 'bbox'")
            continue
        crowd = ann.get("iscrowd", ann.get("is_crowd", 0))
        if crowd not in (0, 1, True, False):
            problems.report(f"annotation id {aid} (pair id {pid}): iscrowd must be 0 or 1, got {crowd!r}")
            continue
        ann_ids.add(aid)
        if bbox is None:  # a mask without a box: its tight box, as load_coco_json does
            bbox = _bbox_from_segmentation(segm, h, w)
        obj: Dict[str, Any] = {
            "id": aid,
            "category_id": concept_of[pair["text_input"]],
            "iscrowd": int(crowd),
            "bbox": bbox,
            "bbox_mode": BoxMode.XYWH_ABS,
        }
        if segm is not None:
            obj["segmentation"] = segm
        anns_of[pid].append(obj)

    root = os.path.abspath(image_root)
    dicts = []
    for pair in pairs:
        concept = concept_of[pair["text_input"]]
        dicts.append(
            {
                "file_name": os.path.join(root, pair["file_name"]),
                "height": int(pair["height"]),
                "width": int(pair["width"]),
                "image_id": pair["id"],
                "text_input": pair["text_input"],
                "annotations": anns_of[pair["id"]],
                "find_categories": [concept],
                "find_is_exhaustive": [bool(pair.get("is_instance_exhaustive", 1))],
            }
        )
    problems.log_summary(image_word="image-query pair")
    logger.info(
        "Loaded %d image-query pairs (%d distinct queries, %d annotations) from %s",
        len(dicts),
        len(vocabulary),
        len(ann_ids),
        json_file,
    )
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(
            thing_classes=list(vocabulary),
            thing_dataset_id_to_contiguous_id={c: c for c in range(len(vocabulary))},
        )
    return dicts


def register_find_query_json(
    name: str,
    json_file: str,
    image_root: str,
    metadata: Optional[Dict[str, Any]] = None,
    *,
    normalized_boxes: bool = True,
) -> None:
    """Register the find-query json ``json_file`` (images under ``image_root``) as dataset
    ``name`` (read at ``DatasetCatalog.get``). The metadata has no ``json_file``: evaluators
    convert the dataset dicts (one COCO image per pair) since the file's boxes and categories
    are not COCO's; ``evaluator_type`` is ``FindEvaluator``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_find_query_json: name must be a non-empty str, got {name!r}")
    DatasetCatalog.register(
        name, lambda: load_find_query_json(json_file, image_root, name, normalized_boxes=normalized_boxes)
    )
    meta = {"find_query_json": json_file, "image_root": image_root, "evaluator_type": "FindEvaluator"}
    meta.update(metadata or {})
    MetadataCatalog.get(name).set(**meta)
