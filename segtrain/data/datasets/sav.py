"""SA-V videos: JPEG frames as the official SAM 2 training extracts them, masklets in the
per-video annotation JSON.

::

    image_root/<video>/<frame number>.jpg       (e.g. 00000.jpg, 24 fps)
    annotation_root/<video>_manual.json         {"masklet": [per annotated frame: [per object:
                                                 RLE or null]], ...}

Annotated frame ``i`` of the masklet is frame number ``i * ann_every`` (SA-V annotates every
4th frame of the 24 fps video). As the official ``JSONRawDataset`` (``rm_unannotated``), a video
keeps only the frames that are annotated for every object; frames of other numbers are dropped.

Output (one dict per video; the JSON is read when a clip needs it, ``video_objects``)::

    {"video_id", "height", "width", "length", "file_names": [kept frames],
     "masklet_file": <json path>, "masklet_frames": [masklet index of each kept frame]}

Problems follow ``DATASETS.ON_BAD_ANNOTATION`` (a missing JSON or frame folder, no JPEG).
"""

import json
import logging
import os
from typing import Any, Dict, List, Optional

from segtrain.utils.errors import DatasetError

from ..catalog import DatasetCatalog, MetadataCatalog
from .vos_folder import image_size, list_frames, list_videos, load_videos

__all__ = ["load_sav_folder", "register_sav_folder", "read_masklet"]

logger = logging.getLogger(__name__)


def read_masklet(path: str) -> List[List[Optional[dict]]]:
    """The ``"masklet"`` (or ``"masks"``) list of an SA-V annotation JSON: per annotated frame,
    one RLE or ``None`` per object."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read the SA-V annotation JSON ({e})") from None
    frames = data if isinstance(data, list) else data.get("masklet", data.get("masks"))
    if not isinstance(frames, list) or not all(isinstance(f, list) for f in frames):
        raise DatasetError(f"{path}: no 'masklet' list of per-frame object RLE lists")
    return frames


def _load_video(video: str, image_root: str, annotation_root: str, ann_every: int) -> Optional[Dict[str, Any]]:
    frame_dir = os.path.join(image_root, video)
    json_file = os.path.join(annotation_root, f"{video}_manual.json")
    if not os.path.isfile(json_file):
        raise DatasetError(f"{json_file}: annotation JSON of video {video!r} not found")
    if not os.path.isdir(frame_dir):
        raise DatasetError(f"{frame_dir}: video has no frame folder")
    stems = [s for s in list_frames(frame_dir) if s.isdigit()]
    if not stems:
        raise DatasetError(f"{frame_dir}: no numbered JPEG frame")
    masklet = read_masklet(json_file)
    complete = {i * ann_every for i, objs in enumerate(masklet) if objs is not None and None not in objs}
    kept = [s for s in stems if int(s) in complete]
    if not kept:
        raise DatasetError(f"{json_file}: no frame of {frame_dir} is annotated (every {ann_every}th frame is)")
    files = [os.path.join(frame_dir, s + os.path.splitext(_first_jpeg(frame_dir, s))[1]) for s in kept]
    h, w = image_size(files[0])
    return {
        "video_id": video,
        "height": h,
        "width": w,
        "length": len(files),
        "file_names": files,
        "masklet_file": json_file,
        "masklet_frames": [int(s) // ann_every for s in kept],
    }


def _first_jpeg(folder: str, stem: str) -> str:
    for ext in (".jpg", ".jpeg", ".JPG", ".JPEG"):
        if os.path.isfile(os.path.join(folder, stem + ext)):
            return stem + ext
    raise DatasetError(f"{os.path.join(folder, stem)}.jpg: frame not found")


def load_sav_folder(
    image_root: str,
    annotation_root: str,
    file_list: Optional[str] = None,
    ann_every: int = 4,
    dataset_name: Optional[str] = None,
) -> List[Dict[str, Any]]:
    """Video dicts of an SA-V folder (see the module doc)."""
    if ann_every < 1:
        raise DatasetError(f"SA-V ann_every must be >= 1, got {ann_every}")

    def load_one(video: str) -> Dict[str, Any]:
        return _load_video(video, image_root, annotation_root, ann_every)

    dicts = load_videos(list_videos(image_root, file_list), load_one, annotation_root)
    logger.info(f"Loaded {len(dicts)} SA-V videos from {annotation_root} ({dataset_name or 'unnamed'})")
    return dicts


def register_sav_folder(
    name: str,
    metadata: Dict[str, Any],
    image_root: str,
    annotation_root: str,
    file_list: Optional[str] = None,
    ann_every: int = 4,
) -> None:
    """Register an SA-V folder as dataset ``name`` (read on first use), evaluated by ``VideoEvaluator``."""
    image_root, annotation_root = os.path.abspath(image_root), os.path.abspath(annotation_root)
    DatasetCatalog.register(name, lambda: load_sav_folder(image_root, annotation_root, file_list, ann_every, name))
    meta = {"image_root": image_root, "annotation_root": annotation_root, "evaluator_type": "video"}
    meta.update(metadata)
    MetadataCatalog.get(name).set(**meta)
