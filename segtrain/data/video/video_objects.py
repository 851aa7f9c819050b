"""The objects of one video, frame by frame, whatever stores them.

Three stores, one interface (``VideoObjects``), so that clip sampling, the mapper and the
evaluators read every kind of video dataset the same way:

* ``AnnotatedVideo``: a video dict with ``"annotations"`` (``load_ytvis_json``): per object a
  per-frame list of RLE / polygon / ``None``; the object keys are annotation indices;
* ``LabelMapVideo``: a dict with ``"mask_file_names"`` (``load_vos_folder``): per frame a
  DAVIS / MOSE / YouTube-VOS label PNG (palette-indexed or grey; 0 background, ``VOID_LABEL``
  void) or ``None`` when the frame is not annotated; the object keys are the label values;
* ``MaskletVideo``: a dict with ``"masklet_file"`` and ``"masklet_frames"`` (``load_sav_folder``):
  an SA-V JSON whose ``"masklet"`` holds, for each annotated frame, one RLE (or ``None``) per
  object, and the masklet entry of each frame; the object keys are masklet indices.

Files are read when first needed and kept for the life of the object (one clip).
"""

from typing import Any, Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util
from PIL import Image

from segtrain.utils.errors import DatasetError

from ..datasets.sav import read_masklet

__all__ = [
    "VOID_LABEL",
    "VideoObjects",
    "video_objects",
    "read_object_label_map",
    "segmentation_present",
]

VOID_LABEL = 255

Segmentation = Any  # an RLE dict, a polygon list or a bool [H, W] array


def read_object_label_map(path: str, height: Optional[int] = None, width: Optional[int] = None) -> np.ndarray:
    """A palette-indexed or grey-level label PNG as uint8 [H, W] of object ids; a one-line
    ``DatasetError`` naming the file when it cannot be read, is colour (RGB) or is not
    ``height`` x ``width``."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "1"):
                raise DatasetError(
                    f"{path}: a {im.mode} PNG; object masks must be palette-indexed or grey-level (one id per pixel)"
                )
            labels = np.array(im.convert("L") if im.mode == "1" else im)
    except (OSError, SyntaxError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read the mask PNG ({e})") from None
    if height is not None and labels.shape != (height, width):
        raise DatasetError(
            f"{path}: mask is {labels.shape[1]}x{labels.shape[0]} (WxH) but its frame is {width}x{height}"
        )
    return labels.astype(np.uint8)


class VideoObjects:
    """Base class; ``frames`` are indices into the video's ``file_names``."""

    def __init__(self, video: Dict[str, Any]):
        self.video = video
        self.height, self.width = int(video["height"]), int(video["width"])

    def annotated_frames(self) -> List[int]:
        """Frames that carry annotations (supervised in training, scored in evaluation)."""
        return list(range(len(self.video["file_names"])))

    def objects_in(self, t: int) -> List[Any]:
        """Keys of the objects visible in frame ``t``, in key order."""
        raise NotImplementedError

    def all_objects(self) -> List[Any]:
        """Keys of every object of the video, in key order."""
        keys = set()
        for t in self.annotated_frames():
            keys.update(self.objects_in(t))
        return sorted(keys)

    def segmentation(self, t: int, key: Any) -> Optional[Segmentation]:
        """Object ``key`` on frame ``t`` at the original size, or ``None`` when absent."""
        raise NotImplementedError

    def object_id(self, key: Any) -> int:
        return int(key)

    def category_id(self, key: Any) -> int:
        return 0

    def void(self, t: int) -> Optional[np.ndarray]:
        """bool [H, W] of the pixels not to score on frame ``t``, or ``None``."""
        return None


class AnnotatedVideo(VideoObjects):
    def __init__(self, video: Dict[str, Any]):
        super().__init__(video)
        self.annos = video["annotations"]

    def objects_in(self, t: int) -> List[int]:
        h, w = self.height, self.width
        return [k for k, a in enumerate(self.annos) if segmentation_present(a["segmentations"][t], h, w)]

    def all_objects(self) -> List[int]:
        return list(range(len(self.annos)))

    def segmentation(self, t: int, key: int) -> Optional[Segmentation]:
        return self.annos[key]["segmentations"][t]

    def object_id(self, key: int) -> int:
        return int(self.annos[key]["id"])

    def category_id(self, key: int) -> int:
        return int(self.annos[key]["category_id"])


class LabelMapVideo(VideoObjects):
    def __init__(self, video: Dict[str, Any]):
        super().__init__(video)
        self.mask_files = video["mask_file_names"]
        self._maps: Dict[int, np.ndarray] = {}

    def _labels(self, t: int) -> Optional[np.ndarray]:
        if self.mask_files[t] is None:
            return None
        if t not in self._maps:
            self._maps[t] = read_object_label_map(self.mask_files[t], self.height, self.width)
        return self._maps[t]

    def annotated_frames(self) -> List[int]:
        return [t for t, f in enumerate(self.mask_files) if f is not None]

    def objects_in(self, t: int) -> List[int]:
        labels = self._labels(t)
        if labels is None:
            return []
        return [int(k) for k in np.unique(labels) if k not in (0, VOID_LABEL)]

    def segmentation(self, t: int, key: int) -> Optional[np.ndarray]:
        labels = self._labels(t)
        if labels is None:
            return None
        mask = labels == key
        return mask if mask.any() else None

    def void(self, t: int) -> Optional[np.ndarray]:
        labels = self._labels(t)
        return None if labels is None else labels == VOID_LABEL


class MaskletVideo(VideoObjects):
    def __init__(self, video: Dict[str, Any]):
        super().__init__(video)
        self._masklet: Optional[List[List[Optional[dict]]]] = None

    def _frame(self, t: int) -> List[Optional[dict]]:
        """The per-object RLEs of frame ``t`` (``masklet_frames[t]`` indexes the masklet)."""
        if self._masklet is None:
            self._masklet = read_masklet(self.video["masklet_file"])
        index = self.video["masklet_frames"][t]
        if index >= len(self._masklet):
            raise DatasetError(
                f"{self.video['masklet_file']}: frame {self.video['file_names'][t]} needs masklet entry {index}, "
                f"but the masklet has {len(self._masklet)}"
            )
        return self._masklet[index]

    def objects_in(self, t: int) -> List[int]:
        return [k for k, rle in enumerate(self._frame(t)) if segmentation_present(rle, self.height, self.width)]

    def all_objects(self) -> List[int]:
        return list(range(len(self._frame(0))))

    def segmentation(self, t: int, key: int) -> Optional[dict]:
        rle = self._frame(t)[key]
        return rle if segmentation_present(rle, self.height, self.width) else None


def segmentation_present(segm: Any, height: int, width: int) -> bool:
    """Whether a per-frame segmentation (RLE dict, polygon list or None) has any pixel.
    SA-V stores absent objects as empty RLEs rather than null, hence the area check."""
    if segm is None:
        return False
    if isinstance(segm, dict):
        counts = segm["counts"]
        if isinstance(counts, list):
            rle = mask_util.frPyObjects(segm, height, width)
        else:
            rle = {"size": list(segm["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        return int(mask_util.area(rle)) > 0
    return len(segm) > 0


def video_objects(video: Dict[str, Any]) -> VideoObjects:
    """The ``VideoObjects`` reader for a video dict, chosen by the keys it has."""
    if "mask_file_names" in video:
        return LabelMapVideo(video)
    if "masklet_file" in video:
        return MaskletVideo(video)
    if "annotations" in video:
        return AnnotatedVideo(video)
    raise DatasetError(
        f"video id {video.get('video_id')}: a video dict needs 'annotations', 'mask_file_names' or 'masklet_file'"
    )
