"""``FindDatasetMapper``: an instance-dataset dict -> one image and its finds.

Registered in ``MAPPER_REGISTRY``; select it with ``INPUT.DATASET_MAPPER_NAME
FindDatasetMapper`` and any instance dataset (shapes, COCO, ``register_coco_instances``)
trains the concept detector. The image is read and augmented once; its finds (the concepts
``FindSampler`` picks) share it, and :func:`segtrain.data.find.collate_find_targets` builds
their packed targets inside the model, once the batch padding is known.
"""

import copy
import logging
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from segtrain.config import configurable
from segtrain.structures import Instances
from segtrain.structures.masks import BoxMode, masks_to_boxes
from segtrain.utils.errors import ConfigError, DatasetError

from ..catalog import thing_classes_of
from ..datasets.coco import BAD_ANNOTATION_POLICIES, has_segmentation
from ..detection_utils import check_image_size, read_image, transform_segmentations
from ..mappers.build import MAPPER_REGISTRY
from ..transforms import Augmentation, apply_augmentations, build_augmentations
from .sampler import FindSampler

__all__ = ["FindDatasetMapper", "num_concepts_from_cfg"]

logger = logging.getLogger(__name__)


def _transform_boxes(boxes_xyxy: np.ndarray, transforms, out_h: int, out_w: int) -> np.ndarray:
    """[N, 4] absolute XYXY -> the boxes enclosing the transformed corners, clipped to the image."""
    if len(boxes_xyxy) == 0:
        return np.zeros((0, 4), dtype=np.float32)
    x0, y0, x1, y1 = boxes_xyxy.T
    corners = np.stack(
        [np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x0, y1], 1), np.stack([x1, y1], 1)], axis=1
    ).reshape(-1, 2)
    pts = transforms.apply_coords(corners.astype(np.float64)).reshape(-1, 4, 2)
    out = np.concatenate([pts.min(axis=1), pts.max(axis=1)], axis=1)
    out[:, 0::2] = out[:, 0::2].clip(0, out_w)
    out[:, 1::2] = out[:, 1::2].clip(0, out_h)
    return out.astype(np.float32)


def num_concepts_from_cfg(cfg, is_train: bool) -> int:
    """``INPUT.FIND.NUM_CONCEPTS``, or when it is 0 the number of ``thing_classes`` of the
    datasets the mapper serves (``DATASETS.TRAIN`` or ``DATASETS.TEST``; a lazily read dataset
    is read for it). The datasets must agree."""
    k = int(cfg.INPUT.FIND.NUM_CONCEPTS)
    if k != 0:
        return k
    key = "DATASETS.TRAIN" if is_train else "DATASETS.TEST"
    counts = {}
    for name in cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST:
        classes = thing_classes_of(name)
        if classes is None:
            raise ConfigError(
                f"INPUT.FIND.NUM_CONCEPTS is 0 (the datasets' number of categories), but {key} dataset {name!r} has no "
                "thing_classes; set INPUT.FIND.NUM_CONCEPTS"
            )
        counts[name] = len(classes)
    if not counts:
        raise ConfigError(f"INPUT.FIND.NUM_CONCEPTS is 0 (the datasets' number of categories), but {key} is empty")
    if len(set(counts.values())) > 1:
        raise ConfigError(
            f"{key}: the datasets have different numbers of categories {counts}; finds need one concept "
            "vocabulary (set INPUT.FIND.NUM_CONCEPTS)"
        )
    return next(iter(counts.values()))


@MAPPER_REGISTRY.register()
class FindDatasetMapper:
    """Read, augment, build the targets and pick the finds of one image.

    Returns ``{"file_name", "image_id", "height", "width"`` (original size),
    ``"image"``: uint8 [3, H, W] RGB,
    ``"instances"``: ``Instances((H, W))`` with ``gt_classes`` int64 [N], ``gt_boxes`` float32
    [N, 4] absolute XYXY and, when some annotation has a segmentation, ``gt_masks`` bool
    [N, H, W] with ``gt_mask_valid`` bool [N] (False for box-only annotations),
    ``"find_categories"``: int64 [F] concept ids of the image's finds (positives first),
    ``"find_is_exhaustive"``: bool [F]}.

    The finds are the ``FindSampler``'s pick, unless the dataset dict lists its own
    (``"find_categories"``: concept ids, optional ``"find_is_exhaustive"``: one bool each, as
    the find-query json reader writes them); both honour the sampler's per-find object cap.

    Boxes are the tight boxes of the augmented masks when a segmentation exists (so a dataset
    with masks but no ``bbox`` works), else the annotation's ``bbox`` (``bbox_mode``)
    transformed like the image. Masks are decided per annotation: a box-only annotation
    (no / empty ``segmentation``) in an image with masks gets an empty mask row with
    ``gt_mask_valid`` False; an image without any mask has no ``gt_masks``, and
    ``collate_find_targets`` then gives ``masks`` None (mask losses zero, box and
    classification losses as usual). Crowd annotations and instances left empty by the
    augmentation are dropped. With ``on_bad_annotation="skip"`` a bad image gives ``None``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: Sequence[Augmentation] = (),
        find_sampler: FindSampler,
        image_format: str = "RGB",
        is_exhaustive: bool = True,
        on_bad_annotation: str = "error",
    ):
        if on_bad_annotation not in BAD_ANNOTATION_POLICIES:
            raise DatasetError(
                f"on_bad_annotation must be one of {', '.join(BAD_ANNOTATION_POLICIES)}; got {on_bad_annotation!r}"
            )
        self.is_train = is_train
        self.augmentations = list(augmentations)
        self.find_sampler = find_sampler
        self.image_format = image_format
        self.is_exhaustive = bool(is_exhaustive)
        self.on_bad_annotation = on_bad_annotation
        logger.info(
            "FindDatasetMapper (%s): %s, augmentations: %s",
            "training" if is_train else "inference",
            find_sampler,
            self.augmentations,
        )

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        f = cfg.INPUT.FIND
        sampler = FindSampler(
            num_concepts_from_cfg(cfg, is_train),
            num_negatives=f.NUM_NEGATIVES if is_train else f.TEST_NUM_NEGATIVES,
            max_positives=f.MAX_POSITIVES if is_train else -1,
            max_objects_per_find=f.MAX_OBJECTS_PER_FIND if is_train else -1,
        )
        return {
            "is_train": is_train,
            "augmentations": build_augmentations(cfg, is_train),
            "find_sampler": sampler,
            "image_format": cfg.INPUT.FORMAT,
            "is_exhaustive": f.IS_EXHAUSTIVE,
            "on_bad_annotation": cfg.DATASETS.ON_BAD_ANNOTATION,
        }

    def __call__(self, dataset_dict: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        try:
            return self._map(dataset_dict)
        except DatasetError as e:
            if self.on_bad_annotation == "error":
                raise
            logger.warning("Skipping an image (DATASETS.ON_BAD_ANNOTATION='skip'): %s", e)
            return None

    def _map(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        # the dict belongs to the dataset list; never modify it
        image = read_image(dataset_dict["file_name"], self.image_format)
        check_image_size(dataset_dict, image)
        h, w = image.shape[:2]
        image, transforms = apply_augmentations(self.augmentations, image)
        out_h, out_w = image.shape[:2]
        annos = [copy.copy(a) for a in dataset_dict.get("annotations") or [] if not a.get("iscrowd", 0)]
        try:
            instances = self._instances(annos, transforms, (h, w), (out_h, out_w))
        except DatasetError as e:
            raise DatasetError(f"{dataset_dict['file_name']}: {e}") from None
        classes = instances.gt_classes.tolist()
        if "find_categories" in dataset_dict:  # the dataset fixes its finds (find-query json)
            finds, exhaustive = self._given_finds(dataset_dict, classes)
        else:
            finds = self.find_sampler(classes)
            exhaustive = [self.is_exhaustive] * len(finds)
        return {
            "file_name": dataset_dict["file_name"],
            "image_id": dataset_dict.get("image_id"),
            "height": dataset_dict.get("height", h),
            "width": dataset_dict.get("width", w),
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "instances": instances,
            "find_categories": torch.from_numpy(finds),
            "find_is_exhaustive": torch.tensor(exhaustive, dtype=torch.bool),
        }

    def _given_finds(self, dataset_dict: Dict[str, Any], classes: List[int]):
        """The dataset dict's own finds (int64 [F]) within the object cap, and their flags."""
        given = np.asarray(dataset_dict["find_categories"], dtype=np.int64).reshape(-1)
        k = self.find_sampler.num_concepts
        bad = [int(c) for c in given if not 0 <= c < k]
        if bad:
            raise DatasetError(
                f"image_id {dataset_dict.get('image_id')}: find_categories {bad} outside [0, {k}) "
                "(INPUT.FIND.NUM_CONCEPTS)"
            )
        flags = dataset_dict.get("find_is_exhaustive")
        flags = [self.is_exhaustive] * len(given) if flags is None else [bool(v) for v in flags]
        if len(flags) != len(given):
            raise DatasetError(
                f"image_id {dataset_dict.get('image_id')}: {len(flags)} find_is_exhaustive flags for "
                f"{len(given)} find_categories"
            )
        flag_of = dict(zip(given.tolist(), flags))
        finds = self.find_sampler.within_object_cap(given, classes)
        return finds, [flag_of[int(c)] for c in finds]

    def _instances(self, annos: List[Dict[str, Any]], transforms, size, out_size) -> Instances:
        out_h, out_w = out_size
        classes = torch.tensor([int(a["category_id"]) for a in annos], dtype=torch.int64)
        with_seg = [i for i, a in enumerate(annos) if has_segmentation(a)]
        without = [i for i in range(len(annos)) if i not in set(with_seg)]
        for i in without:
            if "bbox" not in annos[i]:
                raise DatasetError(f"annotation id {annos[i].get('id')} has neither 'segmentation' nor 'bbox'")
        boxes = torch.zeros((len(annos), 4), dtype=torch.float32)
        masks = torch.zeros((len(annos) if with_seg else 0, out_h, out_w), dtype=torch.bool)
        if with_seg:
            seg_masks = torch.from_numpy(
                transform_segmentations([annos[i] for i in with_seg], transforms, size, out_size)
            )
            masks[with_seg] = seg_masks
            boxes[with_seg] = masks_to_boxes(seg_masks)
        if without:
            raw = np.asarray(
                [
                    BoxMode.convert(
                        list(map(float, annos[i]["bbox"])),
                        annos[i].get("bbox_mode", BoxMode.XYWH_ABS),
                        BoxMode.XYXY_ABS,
                    )
                    for i in without
                ],
                dtype=np.float64,
            )
            boxes[without] = torch.from_numpy(_transform_boxes(raw, transforms, out_h, out_w))
        mask_valid = torch.zeros(len(annos), dtype=torch.bool)
        mask_valid[with_seg] = True
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        inst = Instances((out_h, out_w), gt_classes=classes[keep], gt_boxes=boxes[keep])
        if with_seg:
            inst.gt_masks = masks[keep]
            inst.gt_mask_valid = mask_valid[keep]
        return inst
