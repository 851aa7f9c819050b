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
from .annotation_checks import (
    ProblemLog,
    check_policy,
    check_segmentation,
    check_top_level,
    checked_annotations,
    get_bad_annotation_policy,
    is_int,
    parse_categories,
    read_json_file,
)
from .builtin import get_datasets_root

__all__ = ["load_ytvis_json", "register_ytvis_instances", "register_ytvis_2019", "YTVIS_EVALUATOR_TYPE"]

logger = logging.getLogger(__name__)

YTVIS_EVALUATOR_TYPE = "video"
_VIDEO_KEYS = ("id", "file_names", "height", "width")
_ANN_KEYS = ("id", "video_id", "category_id", "segmentations")


def _check_video(video: Any, k: int, image_root: str) -> Optional[str]:
    """None when ``video`` (entry #k of 'videos') is well formed and all its frames exist."""
    if not isinstance(video, dict):
        return f"video #{k} is not a JSON object"
    missing = [key for key in _VIDEO_KEYS if key not in video]
    vid = video.get("id", f"#{k}")
    if missing:
        return f"video id {vid}: missing required key(s) {', '.join(missing)} (required: {', '.join(_VIDEO_KEYS)})"
    if not is_int(vid):
        return f"video #{k}: id must be an integer, got {vid!r}"
    h, w = video["height"], video["width"]
    if not (is_int(h) and is_int(w) and h > 0 and w > 0):
        return f"video id {vid}: height/width must be positive integers, got {h!r}/{w!r}"
    names = video["file_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        return f"video id {vid}: 'file_names' must be a non-empty list of paths"
    length = video.get("length", len(names))
    if not is_int(length) or length != len(names):
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
    policy = check_policy(on_bad_annotation or get_bad_annotation_policy())
    data = read_json_file(json_file, "video annotation")
    check_top_level(json_file, data, ("videos", "annotations", "categories"), "video")
    names_by_id, id_map, valid_cat = parse_categories(json_file, data["categories"])
    cat_ids = sorted(names_by_id)

    problems = ProblemLog(json_file, policy, logger)
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
    for ann, aid, vid, category in checked_annotations(
        problems,
        data["annotations"],
        required=_ANN_KEYS,
        parent_key="video_id",
        parents=videos,
        all_parent_ids=all_video_ids,
        id_map=id_map,
        valid_categories=valid_cat,
        seen_ids=ann_ids,
    ):
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
            err = check_segmentation(segm, h, w)
            if err is not None:
                problems.report(f"video id {vid} annotation id {aid} frame {t}: {err}")
                break
            out_segms.append(segm)
        if len(out_segms) != length:
            continue
        ann_ids.add(aid)
        obj = {
            "id": aid,
            "category_id": category,
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
        dicts.append(
            {
                "video_id": vid,
                "height": int(video["height"]),
                "width": int(video["width"]),
                "length": len(video["file_names"]),
                "file_names": [os.path.join(root, n) for n in video["file_names"]],
                "annotations": anns_by_video[vid],
            }
        )
    problems.log_summary("video")
    logger.info(
        "Loaded %d videos (%d frames) with %d object tracks from %s",
        len(dicts),
        sum(d["length"] for d in dicts),
        len(ann_ids),
        json_file,
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
