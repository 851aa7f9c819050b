"""COCO instance-segmentation JSON -> dataset dicts (CONTRACTS.md), with checks that name
the file and annotation id at fault.

Bad annotations follow a policy: "error" (raise ``DatasetError``) or "skip" (drop the bad
item, log a count). Loaders registered at import have no config, so the policy is read
from a context variable that the loader builders set from ``DATASETS.ON_BAD_ANNOTATION``
(``with bad_annotation_policy("skip"): ...``), or passed explicitly.
"""
import contextlib
import contextvars
import io
import json
import logging
import os
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO

from segtrain.structures.masks import BoxMode
from segtrain.utils.errors import ConfigError, DatasetError

from ..catalog import DatasetCatalog, MetadataCatalog

__all__ = [
    "load_coco_json",
    "register_coco_instances",
    "bad_annotation_policy",
    "get_bad_annotation_policy",
    "BAD_ANNOTATION_POLICIES",
]

logger = logging.getLogger(__name__)

BAD_ANNOTATION_POLICIES = ("error", "skip")
_POLICY: contextvars.ContextVar = contextvars.ContextVar("segtrain_bad_annotation_policy", default="error")

_IMAGE_KEYS = ("id", "file_name", "height", "width")
_ANN_KEYS = ("id", "image_id", "category_id", "segmentation")


def _check_policy(policy: str) -> str:
    if policy not in BAD_ANNOTATION_POLICIES:
        raise ConfigError(
            f"DATASETS.ON_BAD_ANNOTATION must be one of {', '.join(BAD_ANNOTATION_POLICIES)}; got {policy!r}"
        )
    return policy


@contextlib.contextmanager
def bad_annotation_policy(policy: str) -> Iterator[None]:
    """Within the block, loaders treat bad annotations by ``policy`` ("error" / "skip")."""
    token = _POLICY.set(_check_policy(policy))
    try:
        yield
    finally:
        _POLICY.reset(token)


def get_bad_annotation_policy() -> str:
    """The policy in effect ("error" unless a ``bad_annotation_policy`` block says otherwise)."""
    return _POLICY.get()


class _Problems:
    """Raise the first problem ("error") or count them all ("skip")."""

    def __init__(self, json_file: str, policy: str):
        self.json_file, self.policy = json_file, policy
        self.bad_annotations = 0
        self.bad_images = 0
        self.first: Optional[str] = None

    def report(self, msg: str, image: bool = False) -> None:
        full = f"{self.json_file}: {msg}"
        if self.policy == "error":
            raise DatasetError(full)
        if image:
            self.bad_images += 1
        else:
            self.bad_annotations += 1
        if self.first is None:
            self.first = full
        logger.debug("skipped: %s", full)

    def log_summary(self) -> None:
        if self.bad_annotations or self.bad_images:
            logger.warning(
                "Skipped %d bad annotation(s) and %d bad image(s) in %s (DATASETS.ON_BAD_ANNOTATION='skip'); "
                "first: %s", self.bad_annotations, self.bad_images, self.json_file, self.first,
            )


def _read_json(json_file: str) -> Any:
    if not os.path.isfile(json_file):
        raise DatasetError(f"COCO annotation file not found: {json_file!r}")
    try:
        with open(json_file, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{json_file}: malformed JSON at line {e.lineno} column {e.colno} (char {e.pos}): {e.msg}"
        ) from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{json_file}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_segmentation(segm: Any, height: int, width: int) -> Optional[str]:
    """None when ``segm`` is a valid polygon list or RLE of an image (height, width),
    else what is wrong."""
    if isinstance(segm, dict):
        if "size" not in segm or "counts" not in segm:
            return f"RLE segmentation needs 'size' and 'counts', has {sorted(segm)}"
        size = segm["size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(s) for s in size)):
            return f"RLE 'size' must be [height, width], got {size!r}"
        if [int(size[0]), int(size[1])] != [height, width]:
            return f"RLE size {list(size)} differs from the image size [{height}, {width}]"
        if not isinstance(segm["counts"], (str, bytes, list)):
            return f"RLE 'counts' must be a string or a list of ints, got {type(segm['counts']).__name__}"
        if isinstance(segm["counts"], list) and sum(segm["counts"]) != height * width:
            return f"uncompressed RLE counts sum to {sum(segm['counts'])}, expected {height}*{width}"
        return None
    if isinstance(segm, list):
        if len(segm) == 0:
            return "empty polygon list"
        if not all(isinstance(p, (list, tuple)) for p in segm):
            return "segmentation must be a list of polygons [[x0, y0, x1, y1, ...], ...] or an RLE dict"
        for k, poly in enumerate(segm):
            if len(poly) % 2 != 0:
                return f"polygon {k} has an odd number of coordinates ({len(poly)})"
            if len(poly) < 6:
                return f"polygon {k} has {len(poly) // 2} point(s); at least 3 are needed"
            try:
                arr = np.asarray(poly, dtype=np.float64)
            except (TypeError, ValueError):
                return f"polygon {k} holds non-numeric coordinates"
            if not np.isfinite(arr).all():
                return f"polygon {k} holds a NaN or infinite coordinate"
        return None
    return f"segmentation must be a polygon list or an RLE dict, got {type(segm).__name__}"


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
    Returns ``[{"file_name", "height", "width", "image_id", "annotations": [...]}]``.
    """
    policy = _check_policy(on_bad_annotation or get_bad_annotation_policy())
    data = _read_json(json_file)
    if not isinstance(data, dict):
        raise DatasetError(f"{json_file}: top level must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DatasetError(
                f"{json_file}: missing required key {key!r} (a COCO file needs images, annotations, categories)"
            )
        if not isinstance(data[key], list):
            raise DatasetError(f"{json_file}: {key!r} must be a list, got {type(data[key]).__name__}")

    # Categories: problems here are fatal under either policy (every annotation depends on them).
    names_by_id: Dict[int, str] = {}
    for k, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DatasetError(f"{json_file}: category #{k} needs keys 'id' and 'name', got {cat!r}")
        if not _is_int(cat["id"]):
            raise DatasetError(f"{json_file}: category {cat['name']!r} has a non-integer id {cat['id']!r}")
        if cat["id"] in names_by_id:
            raise DatasetError(f"{json_file}: category id {cat['id']} is used twice")
        names_by_id[int(cat["id"])] = str(cat["name"])
    if not names_by_id:
        raise DatasetError(f"{json_file}: 'categories' is empty")
    cat_ids = sorted(names_by_id)
    id_map = {cid: i for i, cid in enumerate(cat_ids)}
    valid_cat = ", ".join(map(str, cat_ids[:20])) + (", ..." if len(cat_ids) > 20 else "")

    problems = _Problems(json_file, policy)
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
                f"(required: {', '.join(_IMAGE_KEYS)})", image=True,
            )
            continue
        iid = img["id"]
        if not _is_int(iid):
            problems.report(f"image #{k}: id must be an integer, got {iid!r}", image=True)
            continue
        if iid in image_ids:
            raise DatasetError(f"{json_file}: image id {iid} is used twice")
        h, w = img["height"], img["width"]
        if not (_is_int(h) and _is_int(w) and h > 0 and w > 0):
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
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            problems.report(f"annotation #{k} is not a JSON object")
            continue
        aid = ann.get("id", f"#{k}")
        missing = [key for key in _ANN_KEYS if key not in ann]
        if missing:
            problems.report(
                f"annotation id {aid}: missing required key(s) {', '.join(missing)} (required: {', '.join(_ANN_KEYS)})"
            )
            continue
        if aid in ann_ids:
            raise DatasetError(f"{json_file}: annotation id {aid} is used twice")
        iid = ann["image_id"]
        if iid not in size_by_id:
            if iid not in all_image_ids:
                problems.report(f"annotation id {aid}: image_id {iid!r} is not in 'images'")
            continue  # its image was skipped and already counted
        cid = ann["category_id"]
        if cid not in id_map:
            problems.report(f"annotation id {aid}: unknown category_id {cid!r} (valid: {valid_cat})")
            continue
        iscrowd = ann.get("iscrowd", 0)
        if iscrowd not in (0, 1):
            problems.report(f"annotation id {aid}: iscrowd must be 0 or 1, got {iscrowd!r}")
            continue
        h, w = size_by_id[iid]
        err = _check_segmentation(ann["segmentation"], h, w)
        if err is not None:
            problems.report(f"annotation id {aid} (image id {iid}): {err}")
            continue
        bbox = ann.get("bbox")
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
            segm = ann["segmentation"]
            bbox = ann.get("bbox")
            if bbox is None:
                bbox = _bbox_from_segmentation(segm, h, w)
            objs.append({
                "id": ann["id"],
                "bbox": [float(v) for v in bbox],
                "bbox_mode": BoxMode.XYWH_ABS,
                "category_id": id_map[ann["category_id"]],
                "segmentation": segm,
                "iscrowd": int(ann.get("iscrowd", 0)),
            })
        dicts.append({
            "file_name": os.path.join(image_root_abs, img["file_name"]),
            "height": int(h),
            "width": int(w),
            "image_id": img["id"],
            "annotations": objs,
        })
    problems.log_summary()
    logger.info("Loaded %d images with %d annotations from %s", len(dicts), len(anns), json_file)

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
