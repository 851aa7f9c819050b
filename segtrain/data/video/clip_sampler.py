"""Which frames and which objects of a video make one training clip, and the adapter that
turns an image dataset dict into a one-frame video dict.

Video dicts are those of the video dataset readers (``"file_names"``; the objects as
``video_objects`` reads them).
"""

import logging
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from segtrain.utils.errors import ConfigError, DatasetError

from ..datasets.coco import has_segmentation
from .video_objects import segmentation_present, video_objects

__all__ = ["ClipSampler", "OBJECT_SAMPLING_MODES", "image_dict_to_video_dict", "as_video_dict", "segmentation_present"]

logger = logging.getLogger(__name__)

OBJECT_SAMPLING_MODES = ("first_frame", "any_frame")


def image_dict_to_video_dict(image_dict: Dict[str, Any]) -> Dict[str, Any]:
    """An image dataset dict (CONTRACTS.md) as a one-frame video dict (the way SAM 2 trains
    on SA-1B images and SA-V videos through one pipeline). Crowd regions are dropped: they
    are not trackable objects. The result has ``"is_image": True``."""
    annos = [a for a in image_dict.get("annotations", []) if not a.get("iscrowd", 0)]
    image_id = image_dict.get("image_id")
    for a in annos:
        if not has_segmentation(a):
            raise DatasetError(
                f"{image_dict.get('file_name')}: annotation id {a.get('id')} has a box but no segmentation; "
                "the video tracker trains on masks, so image datasets used as one-frame clips need masks"
            )
    return {
        "video_id": image_id if image_id is not None else image_dict["file_name"],
        "height": image_dict["height"],
        "width": image_dict["width"],
        "length": 1,
        "file_names": [image_dict["file_name"]],
        "annotations": [
            {"id": a.get("id", k), "category_id": a["category_id"], "iscrowd": 0, "segmentations": [a["segmentation"]]}
            for k, a in enumerate(annos)
        ],
        "is_image": True,
    }


def as_video_dict(d: Dict[str, Any]) -> Dict[str, Any]:
    """``d`` itself when it is a video dict (has ``file_names``), else the one-frame adapter."""
    if "file_names" in d:
        return d
    if "file_name" in d:
        return image_dict_to_video_dict(d)
    raise DatasetError(f"a dataset dict needs 'file_names' (video) or 'file_name' (image); has {sorted(d)}")


class ClipSampler:
    """Pick the frames and objects of one training clip.

    Frames: ``num_frames`` frames ``start, start + k, ..., start + (T - 1) k`` with the stride
    ``k`` uniform in [1, ``max_frame_stride``] (capped so the clip fits) and ``start`` uniform.
    A video shorter than ``num_frames`` is a ``DatasetError`` (the loader filters them out first).

    With probability ``reverse_time_prob`` the clip runs backwards (frames in decreasing order).

    Objects: up to ``max_objects`` (<= 0: all), drawn without replacement among the candidates,
    returned in annotation order:
    - ``"first_frame"`` (default; SAM 2's VOS sampler): objects visible in the clip's FIRST
      frame, i.e. those a first-frame prompt can start. When the first frame shows none, a new
      clip start is drawn (up to ``max_retries`` times), then objects visible in any frame of
      the clip are used instead.
    - ``"any_frame"``: objects visible in any frame of the clip (including ones that appear
      later; their targets are empty before they appear).
    An empty object list means the clip has no visible object at all.

    Random draws use ``np.random`` (seeded per loader worker by ``MapDataset``) unless an
    ``rng`` (``np.random.RandomState``) is given.
    """

    def __init__(
        self,
        num_frames: int,
        max_objects: int,
        *,
        max_frame_stride: int = 1,
        object_sampling: str = "first_frame",
        max_retries: int = 10,
        reverse_time_prob: float = 0.0,
    ):
        if not 0.0 <= reverse_time_prob <= 1.0:
            raise ConfigError(f"INPUT.VIDEO.REVERSE_TIME_PROB must be in [0, 1], got {reverse_time_prob}")
        if num_frames < 1:
            raise ConfigError(f"INPUT.VIDEO.NUM_FRAMES must be >= 1, got {num_frames}")
        if max_frame_stride < 1:
            raise ConfigError(f"INPUT.VIDEO.MAX_FRAME_STRIDE must be >= 1, got {max_frame_stride}")
        if object_sampling not in OBJECT_SAMPLING_MODES:
            raise ConfigError(
                f"INPUT.VIDEO.OBJECT_SAMPLING must be one of {', '.join(OBJECT_SAMPLING_MODES)}; "
                f"got {object_sampling!r}"
            )
        self.num_frames = int(num_frames)
        self.max_objects = int(max_objects)
        self.max_frame_stride = int(max_frame_stride)
        self.object_sampling = object_sampling
        self.max_retries = int(max_retries)
        self.reverse_time_prob = float(reverse_time_prob)

    def __repr__(self) -> str:
        return (
            f"ClipSampler(num_frames={self.num_frames}, max_objects={self.max_objects}, "
            f"max_frame_stride={self.max_frame_stride}, object_sampling={self.object_sampling!r}, "
            f"reverse_time_prob={self.reverse_time_prob})"
        )

    def _frames(self, length: int, rng) -> List[int]:
        if length == 1:  # an image: a one-frame clip whatever num_frames is
            return [0]
        t = self.num_frames
        if t == 1:
            return [int(rng.randint(length))]
        max_stride = min(self.max_frame_stride, (length - 1) // (t - 1))
        stride = int(rng.randint(1, max_stride + 1))
        start = int(rng.randint(length - (t - 1) * stride))
        return [start + i * stride for i in range(t)]

    def sample(self, video: Dict[str, Any], rng=None) -> Tuple[List[int], List[Any]]:
        """(frame indices [T] into the video, keys of the chosen objects: annotation indices,
        label values or masklet indices, see ``video_objects``). Frames are drawn among the
        annotated frames of the video (all of them unless it is a label-map video with gaps)."""
        rng = np.random if rng is None else rng
        objects = video_objects(video)
        pool = objects.annotated_frames()
        length = len(pool)
        # a single image stands for a clip of any length (the image-as-video adapter: T = 1)
        if length < self.num_frames and length != 1:
            raise DatasetError(
                f"video id {video.get('video_id')} has {length} annotated frames, fewer than INPUT.VIDEO.NUM_FRAMES "
                f"({self.num_frames})"
            )
        frames: List[int] = []
        candidates: List[Any] = []
        for _ in range(max(1, self.max_retries) if self.object_sampling == "first_frame" else 1):
            frames = [pool[j] for j in self._frames(length, rng)]
            if self.reverse_time_prob > 0 and rng.uniform() < self.reverse_time_prob:
                frames = frames[::-1]  # before the objects are picked: "first frame" is the last in time
            if self.object_sampling == "first_frame":
                candidates = objects.objects_in(frames[0])
                if candidates:
                    break
        if not candidates:
            candidates = sorted({k for t in frames for k in objects.objects_in(t)})
        return frames, self._choose(candidates, rng)

    def _choose(self, candidates: Sequence[int], rng) -> List[int]:
        if self.max_objects <= 0 or len(candidates) <= self.max_objects:
            return list(candidates)
        picked = rng.choice(len(candidates), size=self.max_objects, replace=False)
        return sorted(candidates[int(i)] for i in picked)

    @staticmethod
    def full(video: Dict[str, Any]) -> Tuple[List[int], List[Any]]:
        """Every frame and every object (evaluation)."""
        return list(range(len(video["file_names"]))), video_objects(video).all_objects()
