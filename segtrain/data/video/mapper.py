"""``VideoDatasetMapper``: video (or image) dataset dict -> one clip with per-frame targets,
augmented identically on every frame."""

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from segtrain.config import configurable
from segtrain.utils.errors import ConfigError, DatasetError

from ..detection_utils import check_mapper_policy, map_or_skip, read_image_checked, transform_segmentations
from ..mappers import MAPPER_REGISTRY
from ..transforms import (
    Augmentation,
    ColorJitter,
    RandomAffine,
    RandomFlip,
    RandomGrayscale,
    ResizeTransform,
    Transform,
    TransformList,
    apply_augmentations,
)
from .clip_sampler import ClipSampler, as_video_dict
from .video_objects import video_objects

__all__ = ["VideoDatasetMapper", "ResizeSquare", "build_video_augmentations"]

logger = logging.getLogger(__name__)

_FLIPS = ("horizontal", "vertical", "none")
_INTERPOLATIONS = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


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
    """Training, in SAM 2's order: [RandomFlip] + [RandomAffine (INPUT.VIDEO.AFFINE)] +
    ResizeSquare(INPUT.VIDEO.IMAGE_SIZE) + [ColorJitter (INPUT.COLOR_JITTER)] + [RandomGrayscale]
    + [ColorJitter per frame (INPUT.VIDEO.PER_FRAME_COLOR_JITTER)]; test: ResizeSquare only.
    The mapper draws each once per clip, except those marked ``per_frame``."""
    v = cfg.INPUT.VIDEO
    if not is_train:
        return [ResizeSquare(v.IMAGE_SIZE)]
    augs: List[Augmentation] = []
    flip = str(v.RANDOM_FLIP).lower()
    if flip not in _FLIPS:
        raise ConfigError(f"INPUT.VIDEO.RANDOM_FLIP must be one of {', '.join(_FLIPS)}; got {v.RANDOM_FLIP!r}")
    if flip != "none":
        augs.append(RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical"))
    if v.AFFINE.ENABLED:
        interp = _INTERPOLATIONS.get(str(v.AFFINE.INTERPOLATION).lower())
        if interp is None:
            raise ConfigError(
                f"INPUT.VIDEO.AFFINE.INTERPOLATION must be one of {', '.join(_INTERPOLATIONS)}; "
                f"got {v.AFFINE.INTERPOLATION!r}"
            )
        augs.append(RandomAffine(v.AFFINE.DEGREES, v.AFFINE.SHEAR, interp=interp))
    augs.append(ResizeSquare(v.IMAGE_SIZE))
    if cfg.INPUT.COLOR_JITTER.ENABLED:
        cj = cfg.INPUT.COLOR_JITTER
        augs.append(ColorJitter(cj.BRIGHTNESS, cj.CONTRAST, cj.SATURATION))
    if v.GRAYSCALE_PROB > 0:
        augs.append(RandomGrayscale(v.GRAYSCALE_PROB))
    if len(v.PER_FRAME_COLOR_JITTER) != 3:
        raise ConfigError(
            "INPUT.VIDEO.PER_FRAME_COLOR_JITTER must be [brightness, contrast, saturation], "
            f"got {v.PER_FRAME_COLOR_JITTER}"
        )
    if any(x > 0 for x in v.PER_FRAME_COLOR_JITTER):
        augs.append(ColorJitter(*v.PER_FRAME_COLOR_JITTER, per_frame=True))
    return augs


@MAPPER_REGISTRY.register()
class VideoDatasetMapper:
    """Read a clip, augment all its frames the same way, and build its per-frame targets.

    Input: a video dict (``load_ytvis_json``, ``load_vos_folder``, ``load_sav_folder``; objects
    read through ``video_objects``) or an image dict (CONTRACTS.md), which is read as a
    one-frame video (``image_dict_to_video_dict``). Training draws frames and objects
    with ``clip_sampler``; inference (``is_train=False``) takes every frame and every object.
    The augmentations are drawn ONCE, on the first frame, and their ``Transform`` is replayed on
    every frame and mask, so a flip, affine or resize is identical across the clip; those marked
    ``per_frame`` (a photometric jitter) are drawn again for every frame, after the others.

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
        affine_tentatives: int = 1,
    ):
        if is_train and clip_sampler is None:
            raise ConfigError("VideoDatasetMapper(is_train=True) needs a clip_sampler")
        self.is_train = is_train
        self.clip_sampler = clip_sampler
        self.augmentations = list(augmentations)
        per_frame = [bool(getattr(a, "per_frame", False)) for a in self.augmentations]
        if per_frame != sorted(per_frame):
            raise ConfigError("VideoDatasetMapper: augmentations drawn per frame must come after the per-clip ones")
        self.clip_augmentations = [a for a, p in zip(self.augmentations, per_frame) if not p]
        self.frame_augmentations = [a for a, p in zip(self.augmentations, per_frame) if p]
        if affine_tentatives < 1:
            raise ConfigError(f"INPUT.VIDEO.AFFINE.NUM_TENTATIVES must be >= 1, got {affine_tentatives}")
        self.affine_tentatives = int(affine_tentatives)
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
            v.NUM_FRAMES,
            v.MAX_OBJECTS,
            max_frame_stride=v.MAX_FRAME_STRIDE,
            object_sampling=v.OBJECT_SAMPLING,
            reverse_time_prob=v.REVERSE_TIME_PROB,
        )
        return {
            "is_train": is_train,
            "clip_sampler": sampler,
            "augmentations": build_video_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "on_bad_annotation": cfg.DATASETS.ON_BAD_ANNOTATION,
            "affine_tentatives": v.AFFINE.NUM_TENTATIVES,
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

        def present(t: int) -> List[Tuple[int, Dict[str, Any]]]:
            return [
                (n, {"id": source.object_id(key), "segmentation": segm})
                for n, key in enumerate(objects)
                if (segm := source.segmentation(t, key)) is not None
            ]

        def read(t: int) -> np.ndarray:
            return read_image_checked(video["file_names"][t], self.image_format, h, w, f"video id {vid} frame {t}")

        first, transforms = self._draw_clip_transforms(read(frames[0]), present(frames[0]), (h, w))
        images: List[np.ndarray] = []
        for i, t in enumerate(frames):
            img = first if i == 0 else transforms.apply_image(read(t))
            img, _ = apply_augmentations(self.frame_augmentations, img)  # drawn anew for every frame
            images.append(img)
        out_h, out_w = images[0].shape[:2]

        masks = np.zeros((len(frames), len(objects), out_h, out_w), dtype=bool)
        for i, t in enumerate(frames):
            found = present(t)
            if not found:
                continue
            try:
                m = transform_segmentations([p for _, p in found], transforms, (h, w), (out_h, out_w))
            except DatasetError as e:
                raise DatasetError(f"{video['file_names'][t]}: video id {vid} frame {t}: {e}") from None
            masks[i, [n for n, _ in found]] = m

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

    def _draw_clip_transforms(
        self, image: np.ndarray, first_frame: List[Tuple[int, Dict[str, Any]]], size: Tuple[int, int]
    ) -> Tuple[np.ndarray, TransformList]:
        """Draw the per-clip augmentations on the first frame: (its augmented image, the transforms
        to replay on the other frames). A random affine that leaves an object of the first frame
        with no pixel is drawn again, up to ``affine_tentatives`` draws, then left out (SAM 2)."""
        affine = any(isinstance(a, RandomAffine) for a in self.clip_augmentations)
        for _ in range(self.affine_tentatives if affine else 1):
            out, transforms = apply_augmentations(self.clip_augmentations, image)
            if not affine or not first_frame:
                return out, transforms
            masks = transform_segmentations([p for _, p in first_frame], transforms, size, out.shape[:2])
            if masks.reshape(len(masks), -1).any(axis=1).all():
                return out, transforms
        logger.debug("an object of the first frame left it under every random affine drawn; affine skipped")
        return apply_augmentations([a for a in self.clip_augmentations if not isinstance(a, RandomAffine)], image)
