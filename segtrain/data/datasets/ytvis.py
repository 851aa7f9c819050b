"""YouTube-VIS / SA-V-style video instance JSON -> video dataset dicts, with checks that name
the file, video id, annotation id and frame at fault.

Input JSON::

    {"videos": [{"id", "file_names": [per-frame paths relative to image_root], "height", "width",
                 "length" (optional; must equal len(file_names))}],
     "annotations": [{"id", "video_id", "category_id",
                      "segmentations": per-frame list of an RLE dict (compressed str counts or an
                                       uncompressed int list), a polygon list, or null (absent),
                      "bboxes", "areas": per-frame lists (optional, passed through), "iscrowd"}],
     "categories": [{"id", "name"}]}

Output (one dict per video)::

    {"video_id", "height", "width", "length", "file_names": [absolute paths],
     "annotations": [{"id", "category_id" (contiguous, [0, K)), "iscrowd",
                      "segmentations": [per frame: RLE dict / polygon list / None when absent]}]}

An empty polygon list ``[]`` for a frame is read as absent, like ``null``. Bad annotations and
videos follow ``DATASETS.ON_BAD_ANNOTATION`` (see ``coco.bad_annotation_policy``): "error"
raises a one-line ``DatasetError``; "skip" drops the annotation / video and logs a count.
"""
import logging
import os
from typing import Any, Dict, List, Optional

from segtrain.utils.errors import DatasetError

from ..catalog import DatasetCatalog, MetadataCatalog
from .coco import _check_policy, _check_segmentation, _is_int, _Problems, get_bad_annotation_policy

__all__ = ["load_ytvis_json", "register_ytvis_instances", "register_ytvis_2019", "YTVIS_EVALUATOR_TYPE"]

logger = logging.getLogger(__name__)

YTVIS_EVALUATOR_TYPE = "video"
_VIDEO_KEYS = ("id", "file_names", "height", "width")
_ANN_KEYS = ("id", "video_id", "category_id", "segmentations")


def _read_json(json_file: str) -> Any:
    import json

    if not os.path.isfile(json_file):
        raise DatasetError(f"video annotation file not found: {json_file!r}")
    try:
        with open(json_file, "r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{json_file}: malformed JSON at line {e.lineno} column {e.colno} (char {e.pos}): {e.msg}"
        ) from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{json_file}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None


def _check_video(video: Any, k: int, image_root: str) -> Optional[str]:
    """None when ``video`` (entry #k of 'videos') is well formed and all its frames exist."""
    if not isinstance(video, dict):
        return f"video #{k} is not a JSON object"
    missing = [key for key in _VIDEO_KEYS if key not in video]
    vid = video.get("id", f"#{k}")
    if missing:
        return f"video id {vid}: missing required key(s) {', '.join(missing)} (required: {', '.join(_VIDEO_KEYS)})"
    if not _is_int(vid):
        return f"video #{k}: id must be an integer, got {vid!r}"
    h, w = video["height"], video["width"]
    if not (_is_int(h) and _is_int(w) and h > 0 and w > 0):
        return f"video id {vid}: height/width must be positive integers, got {h!r}/{w!r}"
    names = video["file_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return f"video id {vid}: 'file_names' must be a non-empty list of paths"
    length = video.get("length", len(names))
    if not _is_int(length) or length != len(names):
        return f"video id {vid}: 'length' is {length!r} but 'file_names' lists {len(names)} frames"
    for t, name in enumerate(names):
        path = os.path.join(image_root, name)
        if not os.path.isfile(path):
            return f"video id {vid} frame {t}: frame file not found: {path!r}"
    return None


def load_ytvis_json(
    json_file: str,
    image_root: str,
    dataset_name: Optional[str] = None,
    *,
    on_bad_annotation: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """Load a YouTube-VIS / SA-V-style JSON into video dataset dicts (module docstring).

    Category ids are mapped to contiguous ids in sorted-id order; with ``dataset_name`` the
    metadata gets ``thing_classes``, ``thing_dataset_id_to_contiguous_id`` and
    ``evaluator_type="video"``. Every per-frame segmentation is checked (type, RLE size equal
    to the video size, polygon shape); every frame file must exist.
    """
    policy = _check_policy(on_bad_annotation or get_bad_annotation_policy())
    data = _read_json(json_file)
    if not isinstance(data, dict):
        raise DatasetError(f"{json_file}: top level must be a JSON object, got {type(data).__name__}")
    for key in ("videos", "annotations", "categories"):
        if key not in data:
            raise DatasetError(
                f"{json_file}: missing required key {key!r} (a video file needs videos, annotations, categories)"
            )
        if not isinstance(data[key], list):
            raise DatasetError(f"{json_file}: {key!r} must be a list, got {type(data[key]).__name__}")

    # categories are fatal under either policy: every annotation depends on them
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
    videos: Dict[int, Dict[str, Any]] = {}
    all_video_ids = set()
    for k, video in enumerate(data["videos"]):
        if isinstance(video, dict):
            all_video_ids.add(video.get("id"))
        err = _check_video(video, k, image_root)
        if err is not None:
            problems.report(err, image=True)
            continue
        if video["id"] in videos:
            raise DatasetError(f"{json_file}: video id {video['id']} is used twice")
        videos[video["id"]] = video

    anns_by_video: Dict[int, List[Dict[str, Any]]] = {vid: [] for vid in videos}
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
        vid = ann["video_id"]
        if vid not in videos:
            if vid not in all_video_ids:
                problems.report(f"annotation id {aid}: video_id {vid!r} is not in 'videos'")
            continue  # its video was skipped and already counted
        cid = ann["category_id"]
        if cid not in id_map:
            problems.report(f"video id {vid} annotation id {aid}: unknown category_id {cid!r} (valid: {valid_cat})")
            continue
        video = videos[vid]
        length, h, w = len(video["file_names"]), video["height"], video["width"]
        segms = ann["segmentations"]
        if not isinstance(segms, list) or len(segms) != length:
            got = f"{len(segms)} entries" if isinstance(segms, list) else type(segms).__name__
            problems.report(
                f"video id {vid} annotation id {aid}: 'segmentations' must list one entry per frame "
                f"({length} frames), got {got}"
            )
            continue
        out_segms: List[Any] = []
        for t, segm in enumerate(segms):
            if segm is None or (isinstance(segm, list) and len(segm) == 0):
                out_segms.append(None)
                continue
            err = _check_segmentation(segm, h, w)
            if err is not None:
                problems.report(f"video id {vid} annotation id {aid} frame {t}: {err}")
                break
            out_segms.append(segm)
        if len(out_segms) != length:
            continue
        ann_ids.add(aid)
        obj = {
            "id": aid,
            "category_id": id_map[cid],
            "iscrowd": int(ann.get("iscrowd", 0)),
            "segmentations": out_segms,
        }
        for key in ("bboxes", "areas"):
            if isinstance(ann.get(key), list) and len(ann[key]) == length:
                obj[key] = ann[key]
        anns_by_video[vid].append(obj)

    root = os.path.abspath(image_root)
    dicts = []
    for vid, video in videos.items():
        dicts.append({
            "video_id": vid,
            "height": int(video["height"]),
            "width": int(video["width"]),
            "length": len(video["file_names"]),
            "file_names": [os.path.join(root, n) for n in video["file_names"]],
            "annotations": anns_by_video[vid],
        })
    problems.log_summary()
    logger.info(
        "Loaded %d videos (%d frames) with %d object tracks from %s",
        len(dicts), sum(d["length"] for d in dicts), len(ann_ids), json_file,
    )
    if dataset_name is not None:
        MetadataCatalog.get(dataset_name).set(
            thing_classes=[names_by_id[c] for c in cat_ids],
            thing_dataset_id_to_contiguous_id=dict(id_map),
            evaluator_type=YTVIS_EVALUATOR_TYPE,
        )
    return dicts


def register_ytvis_instances(name: str, metadata: Dict[str, Any], json_file: str, image_root: str) -> None:
    """Register YouTube-VIS-style ``json_file`` (frames under ``image_root``) as dataset ``name``;
    nothing is read until ``DatasetCatalog.get(name)``. ``metadata`` adds to ``json_file``,
    ``image_root`` and ``evaluator_type="video"``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_ytvis_instances: name must be a non-empty str, got {name!r}")
    DatasetCatalog.register(name, lambda: load_ytvis_json(json_file, image_root, name))
    meta = {"json_file": json_file, "image_root": image_root, "evaluator_type": YTVIS_EVALUATOR_TYPE}
    meta.update(metadata or {})
    MetadataCatalog.get(name).set(**meta)


_YTVIS_2019 = {
    "ytvis_2019_train": ("ytvis_2019/train/JPEGImages", "ytvis_2019/train.json"),
    "ytvis_2019_val": ("ytvis_2019/valid/JPEGImages", "ytvis_2019/valid.json"),
}


def register_ytvis_2019(root: Optional[str] = None) -> None:
    """Register YouTube-VIS 2019 splits whose JSON exists under ``root`` (default
    ``$SEGTRAIN_DATASETS``); a missing folder registers nothing."""
    from .builtin import get_datasets_root

    root = os.path.abspath(root) if root else get_datasets_root()
    for name, (image_dir, json_rel) in _YTVIS_2019.items():
        json_file = os.path.join(root, json_rel)
        if not os.path.isfile(json_file):
            continue
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        register_ytvis_instances(name, {}, json_file, os.path.join(root, image_dir))


register_ytvis_2019()
