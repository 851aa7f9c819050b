"""``VideoDatasetMapper``: video (or image) dataset dict -> one clip with per-frame targets,
augmented identically on every frame."""

import logging
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from segtrain.config import configurable
from segtrain.utils.errors import ConfigError, DatasetError

from ..detection_utils import check_mapper_policy, map_or_skip, read_image_checked, transform_segmentations
from ..mappers import MAPPER_REGISTRY
from ..transforms import Augmentation, ColorJitter, RandomFlip, ResizeTransform, Transform, apply_augmentations
from .clip_sampler import ClipSampler, as_video_dict
from .video_objects import video_objects

__all__ = ["VideoDatasetMapper", "ResizeSquare", "build_video_augmentations"]

logger = logging.getLogger(__name__)

_FLIPS = ("horizontal", "vertical", "none")


class ResizeSquare(Augmentation):
    """Resize to ``size`` x ``size`` regardless of the aspect ratio (SAM 2's input resize):
    every clip of a batch then has the same frame size."""

    def __init__(self, size: int):
        if size <= 0:
            raise ConfigError(f"INPUT.VIDEO.IMAGE_SIZE must be > 0, got {size}")
        self.size = int(size)

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        return ResizeTransform(h, w, self.size, self.size)


def build_video_augmentations(cfg, is_train: bool) -> List[Augmentation]:
    """Training: ResizeSquare(INPUT.VIDEO.IMAGE_SIZE) + [RandomFlip] + [ColorJitter
    (INPUT.COLOR_JITTER)]; test: ResizeSquare only. Drawn once per clip by the mapper."""
    v = cfg.INPUT.VIDEO
    augs: List[Augmentation] = [ResizeSquare(v.IMAGE_SIZE)]
    if not is_train:
        return augs
    flip = str(v.RANDOM_FLIP).lower()
    if flip not in _FLIPS:
        raise ConfigError(f"INPUT.VIDEO.RANDOM_FLIP must be one of {', '.join(_FLIPS)}; got {v.RANDOM_FLIP!r}")
    if flip != "none":
        augs.append(RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    if cfg.INPUT.COLOR_JITTER.ENABLED:
        cj = cfg.INPUT.COLOR_JITTER
        augs.append(ColorJitter(cj.BRIGHTNESS, cj.CONTRAST, cj.SATURATION))
    return augs


@MAPPER_REGISTRY.register()
class VideoDatasetMapper:
    """Read a clip, augment all its frames the same way, and build its per-frame targets.

    Input: a video dict (``load_ytvis_json``, ``load_vos_folder``, ``load_sav_folder``; objects
    read through ``video_objects``) or an image dict (CONTRACTS.md), which is read as a
    one-frame video (``image_dict_to_video_dict``). Training draws frames and objects
    with ``clip_sampler``; inference (``is_train=False``) takes every frame and every object.
    The augmentation is drawn ONCE, on the first frame, and its ``Transform`` is replayed on
    every frame and mask, so a flip or resize is identical across the clip.

    Returns ``{"video_id", "height", "width", "length"`` (original video), ``"is_image"``,
    ``"file_names"`` [T], ``"frame_indices"``: int64 [T] (indices in the video),
    ``"images"``: uint8 [T, 3, H, W] RGB, ``"masks"``: bool [T, N, H, W] (empty where absent),
    ``"obj_ids"``: int64 [N] object ids (annotation ids, label values or masklet indices),
    ``"category_ids"``: int64 [N]}.
    In training a clip without any visible object gives ``None`` (the loader draws another);
    so does a bad video under ``on_bad_annotation="skip"``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        clip_sampler: Optional[ClipSampler] = None,
        augmentations: Sequence[Augmentation] = (),
        image_format: str = "RGB",
        on_bad_annotation: str = "error",
    ):
        if is_train and clip_sampler is None:
            raise ConfigError("VideoDatasetMapper(is_train=True) needs a clip_sampler")
        self.is_train = is_train
        self.clip_sampler = clip_sampler
        self.augmentations = list(augmentations)
        self.image_format = image_format
        self.on_bad_annotation = check_mapper_policy(on_bad_annotation)
        logger.info(
            "VideoDatasetMapper (%s): %s, augmentations: %s",
            "training" if is_train else "inference",
            clip_sampler if is_train else "all frames, all objects",
            self.augmentations,
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        v = cfg.INPUT.VIDEO
        sampler = ClipSampler(
            v.NUM_FRAMES, v.MAX_OBJECTS, max_frame_stride=v.MAX_FRAME_STRIDE, object_sampling=v.OBJECT_SAMPLING
        )
        return {
            "is_train": is_train,
            "clip_sampler": sampler,
            "augmentations": build_video_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "on_bad_annotation": cfg.DATASETS.ON_BAD_ANNOTATION,
        }

    def __call__(self, dataset_dict: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        return map_or_skip(self._map, dataset_dict, self.on_bad_annotation, "a video")

    def _map(self, dataset_dict: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        # the dict belongs to the dataset list; never modify it
        video = as_video_dict(dataset_dict)
        vid = video.get("video_id")
        if self.is_train:
            frames, objects = self.clip_sampler.sample(video)
            if not objects:
                logger.debug("video id %s: no visible object in frames %s; drawing another clip", vid, frames)
                return None
        else:
            frames, objects = ClipSampler.full(video)
        h, w = int(video["height"]), int(video["width"])
        source = video_objects(video)

        images: List[np.ndarray] = []
        transforms = None
        for t in frames:
            file_name = video["file_names"][t]
            img = read_image_checked(file_name, self.image_format, h, w, f"video id {vid} frame {t}")
            if transforms is None:
                # draw the random parameters once per clip; replayed on every other frame
                img, transforms = apply_augmentations(self.augmentations, img)
            else:
                img = transforms.apply_image(img)
            images.append(img)
        out_h, out_w = images[0].shape[:2]

        masks = np.zeros((len(frames), len(objects), out_h, out_w), dtype=bool)
        for i, t in enumerate(frames):
            present = [
                (n, {"id": source.object_id(key), "segmentation": segm})
                for n, key in enumerate(objects)
                if (segm := source.segmentation(t, key)) is not None
            ]
            if not present:
                continue
            try:
                m = transform_segmentations([p for _, p in present], transforms, (h, w), (out_h, out_w))
            except DatasetError as e:
                raise DatasetError(f"{video['file_names'][t]}: video id {vid} frame {t}: {e}") from None
            masks[i, [n for n, _ in present]] = m

        return {
            "video_id": vid,
            "height": h,
            "width": w,
            "length": len(video["file_names"]),
            "is_image": bool(video.get("is_image", False)),
            "file_names": [video["file_names"][t] for t in frames],
            "frame_indices": torch.tensor(frames, dtype=torch.int64),
            "images": torch.from_numpy(np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))),
            "masks": torch.from_numpy(masks),
            "obj_ids": torch.tensor([source.object_id(k) for k in objects], dtype=torch.int64),
            "category_ids": torch.tensor([source.category_id(k) for k in objects], dtype=torch.int64),
        }
