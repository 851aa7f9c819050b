"""Video object segmentation folders in the DAVIS / MOSE / YouTube-VOS layout.

::

    image_root/<video>/<frame>.jpg
    mask_root/<video>/<frame>.png   palette-indexed (or grey-level) object ids: 0 background,
                                    255 void where present; a frame with no PNG is not annotated

An optional list file names the videos to use, one per line (an extension is ignored), as the
official SAM 2 training's ``file_list_txt``. Frames are ordered by their number.

Output (one dict per video; masks are read when a clip needs them, ``video_objects``)::

    {"video_id": <video folder name>, "height", "width", "length",
     "file_names": [frame paths], "mask_file_names": [PNG path or None per frame]}

Problems follow ``DATASETS.ON_BAD_ANNOTATION``: "error" raises a one-line ``DatasetError``
naming the file; "skip" drops the video and logs a count. Checked here: a listed video with no
frame folder or no JPEG, a video with no annotated frame, a PNG whose size differs from its
video's frames (read from the file headers); an unreadable JPEG or PNG is named when a clip reads it.
"""

import logging
import os
import shutil
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from segtrain.utils.errors import DatasetError

from ..catalog import DatasetCatalog, MetadataCatalog
from .annotation_checks import ProblemLog, get_bad_annotation_policy
from .builtin import get_datasets_root

__all__ = [
    "DAVIS_PALETTE",
    "export_vos_folder",
    "image_size",
    "list_frames",
    "list_videos",
    "load_videos",
    "load_vos_folder",
    "register_vos_folder",
    "register_vos_builtin",
    "write_object_label_map",
]

logger = logging.getLogger(__name__)

_FRAME_EXTENSIONS = (".jpg", ".jpeg")


def list_videos(image_root: str, file_list: Optional[str] = None) -> List[str]:
    """The video folder names: the lines of ``file_list`` (extensions dropped) or every folder
    of ``image_root``, sorted."""
    if not os.path.isdir(image_root):
        raise DatasetError(f"{image_root}: the frames folder does not exist")
    if file_list is None:
        return sorted(d for d in os.listdir(image_root) if os.path.isdir(os.path.join(image_root, d)))
    try:
        with open(file_list) as f:
            names = [os.path.splitext(line.strip())[0] for line in f if line.strip()]
    except OSError as e:
        raise DatasetError(f"{file_list}: cannot read the video list ({e.strerror})") from None
    return sorted(set(names))


def _frame_key(stem: str) -> Tuple[int, Any]:
    return (0, int(stem)) if stem.isdigit() else (1, stem)


def list_frames(folder: str) -> List[str]:
    """The JPEG frame stems of ``folder`` ordered by frame number."""
    stems = [os.path.splitext(f)[0] for f in os.listdir(folder) if f.lower().endswith(_FRAME_EXTENSIONS)]
    return sorted(stems, key=_frame_key)


def image_size(path: str) -> Tuple[int, int]:
    """(height, width) from an image file's header; a ``DatasetError`` naming an unreadable file."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, SyntaxError) as e:
        raise DatasetError(f"{path}: cannot read the image ({e})") from None
    return h, w


def _frame_files(folder: str, stems: List[str]) -> List[str]:
    names = {os.path.splitext(f)[0]: f for f in os.listdir(folder) if f.lower().endswith(_FRAME_EXTENSIONS)}
    return [os.path.join(folder, names[s]) for s in stems]


def _load_video(video: str, image_root: str, mask_root: str) -> Dict[str, Any]:
    frame_dir = os.path.join(image_root, video)
    if not os.path.isdir(frame_dir):
        raise DatasetError(f"{frame_dir}: listed video has no frame folder")
    stems = list_frames(frame_dir)
    if not stems:
        raise DatasetError(f"{frame_dir}: no JPEG frame")
    files = _frame_files(frame_dir, stems)
    mask_dir = os.path.join(mask_root, video)
    pngs = set()
    if os.path.isdir(mask_dir):
        pngs = {os.path.splitext(f)[0] for f in os.listdir(mask_dir) if f.endswith(".png")}
    masks = [os.path.join(mask_dir, s + ".png") if s in pngs else None for s in stems]
    if not any(masks):
        raise DatasetError(f"{mask_dir}: video {video!r} has no annotated frame (no PNG named like its frames)")
    h, w = image_size(files[0])
    for m in masks:
        if m is not None and image_size(m) != (h, w):
            mh, mw = image_size(m)
            raise DatasetError(f"{m}: mask is {mw}x{mh} (WxH) but the frames of {video!r} are {w}x{h}")
    return {
        "video_id": video,
        "height": h,
        "width": w,
        "length": len(files),
        "file_names": files,
        "mask_file_names": masks,
    }


def load_videos(videos: List[str], load_one: Callable[[str], Dict[str, Any]], where: str) -> List[Dict[str, Any]]:
    """``load_one(video)`` for each video name; a ``DatasetError`` stops the loading under the
    "error" policy (``DATASETS.ON_BAD_ANNOTATION``) or drops the video under "skip" (counted and
    logged once, with ``where``)."""
    problems = ProblemLog(where, get_bad_annotation_policy(), logger)
    dicts = []
    for video in videos:
        try:
            dicts.append(load_one(video))
        except DatasetError as e:
            if problems.policy == "error":
                raise
            problems.report(str(e), image=True)
    problems.log_summary("video")
    return dicts


def load_vos_folder(
    image_root: str, mask_root: str, file_list: Optional[str] = None, dataset_name: Optional[str] = None
) -> List[Dict[str, Any]]:
    """Video dicts of a DAVIS / MOSE / YouTube-VOS folder (see the module doc)."""
    videos = list_videos(image_root, file_list)
    dicts = load_videos(videos, lambda video: _load_video(video, image_root, mask_root), mask_root)
    logger.info(f"Loaded {len(dicts)} videos from {image_root} and {mask_root} ({dataset_name or 'unnamed'})")
    return dicts


def register_vos_folder(
    name: str, metadata: Dict[str, Any], image_root: str, mask_root: str, file_list: Optional[str] = None
) -> None:
    """Register a DAVIS / MOSE / YouTube-VOS folder as dataset ``name`` (read on first use),
    evaluated by ``VideoEvaluator``."""
    image_root, mask_root = os.path.abspath(image_root), os.path.abspath(mask_root)
    DatasetCatalog.register(name, lambda: load_vos_folder(image_root, mask_root, file_list, name))
    meta = {"image_root": image_root, "mask_root": mask_root, "evaluator_type": "video", "thing_classes": ["object"]}
    meta.update(metadata)
    MetadataCatalog.get(name).set(**meta)


def _voc_palette() -> List[int]:
    """The PASCAL VOC / DAVIS colour map: label ``i`` gets the bits of ``i`` spread over R, G, B
    from the high bit down (1 red, 2 green, 3 olive, ...)."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


DAVIS_PALETTE = _voc_palette()


def write_object_label_map(path: str, labels: np.ndarray) -> None:
    """Write uint8 [H, W] object ids as a palette-indexed PNG (DAVIS colours)."""
    if labels.ndim != 2 or labels.min() < 0 or labels.max() > 255:
        raise ValueError(f"{path}: object ids must be a [H, W] array of values in [0, 255]")
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(DAVIS_PALETTE)
    im.save(path)


def export_vos_folder(dicts: List[Dict[str, Any]], out_root: str, label_maps) -> Tuple[str, str]:
    """Write videos in the DAVIS layout: ``out_root/JPEGImages/<video>/NNNNN.jpg`` (copies of the
    frames) and ``out_root/Annotations/<video>/NNNNN.png``, where ``label_maps(video)`` gives
    uint8 [T, H, W] object ids (0 background) for each dict. Returns (image_root, mask_root)."""
    image_root, mask_root = os.path.join(out_root, "JPEGImages"), os.path.join(out_root, "Annotations")
    for d in dicts:
        video = str(d["video_id"])
        os.makedirs(os.path.join(image_root, video), exist_ok=True)
        os.makedirs(os.path.join(mask_root, video), exist_ok=True)
        labels = label_maps(d)
        for t, src in enumerate(d["file_names"]):
            shutil.copyfile(src, os.path.join(image_root, video, f"{t:05d}.jpg"))
            write_object_label_map(os.path.join(mask_root, video, f"{t:05d}.png"), labels[t])
    return image_root, mask_root


# name -> (image root, mask root, list file) under $SEGTRAIN_DATASETS, as the datasets unpack
_VOS_BUILTIN = {
    "davis2017_train": ("DAVIS/JPEGImages/480p", "DAVIS/Annotations/480p", "DAVIS/ImageSets/2017/train.txt"),
    "davis2017_val": ("DAVIS/JPEGImages/480p", "DAVIS/Annotations/480p", "DAVIS/ImageSets/2017/val.txt"),
    "mose_train": ("MOSE/train/JPEGImages", "MOSE/train/Annotations", None),
}


def register_vos_builtin(root: Optional[str] = None) -> List[str]:
    """Register DAVIS 2017 (``davis2017_train`` / ``davis2017_val``) and MOSE (``mose_train``) when
    their folders exist under ``root`` (default ``$SEGTRAIN_DATASETS``); returns the names."""
    root = os.path.abspath(root) if root else get_datasets_root()
    names = []
    for name, (images, masks, file_list) in _VOS_BUILTIN.items():
        image_root, mask_root = os.path.join(root, images), os.path.join(root, masks)
        list_file = os.path.join(root, file_list) if file_list else None
        if not (os.path.isdir(image_root) and os.path.isdir(mask_root)) or (
            list_file and not os.path.isfile(list_file)
        ):
            continue
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
        register_vos_folder(name, {}, image_root, mask_root, list_file)
        names.append(name)
    return names


register_vos_builtin()
