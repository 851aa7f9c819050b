"""``InstanceDatasetMapper``: dataset dict -> model input for instance segmentation."""

import copy
import logging
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from segtrain.config import configurable
from segtrain.data.catalog import MetadataCatalog
from segtrain.utils.errors import ConfigError, DatasetError

from ..datasets.coco import has_segmentation
from ..detection_utils import (
    annotations_to_instances,
    check_mapper_policy,
    map_or_skip,
    read_image_checked,
    segment_map_targets,
    transform_segmentations,
)
from ..transforms import Augmentation, apply_augmentations, build_augmentations
from .build import MAPPER_REGISTRY

__all__ = ["InstanceDatasetMapper"]

logger = logging.getLogger(__name__)


@MAPPER_REGISTRY.register()
class InstanceDatasetMapper:
    """Read the image, augment it, and build the targets (CONTRACTS.md "Mapper output").

    Returns ``{"file_name", "image_id", "height", "width"`` (original size),
    ``"image"``: uint8 [3, H, W] RGB, ``"instances"``: ``Instances`` with ``gt_classes``
    int64 [N], ``gt_boxes`` float32 [N, 4] XYXY, ``gt_masks`` bool [N, H, W]}.
    Crowd annotations and instances whose mask is empty after augmentation are dropped.
    ``instances`` is present whenever the dict has ``annotations`` (also at test time,
    for a validation loss). With ``on_bad_annotation="skip"`` a bad image gives ``None``.

    A dict without ``annotations`` but with a panoptic PNG (``pan_seg_file_name`` +
    ``segments_info``) or a semantic label PNG (``sem_seg_file_name``) gets Mask2Former's
    panoptic / semantic targets instead: one mask per non-crowd segment, things and stuff,
    or one per class present (``ignore_label`` excluded), in the same ``instances`` fields
    (``segment_map_targets``).

    Every non-crowd annotation needs a mask: a box-only one (no / empty ``segmentation``)
    raises a ``ConfigError`` naming the dataset(s) ``dataset_names`` (under either policy:
    the model, not the image, is at fault); box-only data trains the concept detector
    (``FindDatasetMapper``).
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: Sequence[Augmentation] = (),
        image_format: str = "RGB",
        on_bad_annotation: str = "error",
        dataset_names: Sequence[str] = (),
        ignore_label: int = 255,
    ):
        """dataset_names: the datasets this mapper reads, for error messages only.
        ignore_label: the unlabelled value of semantic label PNGs."""
        self.ignore_label = int(ignore_label)
        self.is_train = is_train
        self.dataset_names = tuple(dataset_names)
        self.augmentations = list(augmentations)
        self.image_format = image_format
        self.on_bad_annotation = check_mapper_policy(on_bad_annotation)
        mode = "training" if is_train else "inference"
        logger.info("InstanceDatasetMapper (%s) augmentations: %s", mode, self.augmentations)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> Dict[str, Any]:
        return {
            "is_train": is_train,
            "augmentations": build_augmentations(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "on_bad_annotation": cfg.DATASETS.ON_BAD_ANNOTATION,
            "dataset_names": tuple(cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST),
            "ignore_label": _ignore_label(cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST),
        }

    def __call__(self, dataset_dict: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        return map_or_skip(self._map, dataset_dict, self.on_bad_annotation, "an image")

    def _map(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        # the dict belongs to the dataset list; never modify it
        annos: Optional[List[dict]] = dataset_dict.get("annotations")
        image = read_image_checked(
            dataset_dict["file_name"],
            self.image_format,
            dataset_dict.get("height"),
            dataset_dict.get("width"),
            f"image id {dataset_dict.get('image_id')}",
        )
        h, w = image.shape[:2]
        image, transforms = apply_augmentations(self.augmentations, image)
        out_h, out_w = image.shape[:2]
        out = {
            "file_name": dataset_dict["file_name"],
            "image_id": dataset_dict.get("image_id"),
            "height": dataset_dict.get("height", h),
            "width": dataset_dict.get("width", w),
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
        }
        if annos is not None:
            annos = [copy.copy(a) for a in annos if not a.get("iscrowd", 0)]
            self._check_masks(annos, dataset_dict)
            try:
                masks = transform_segmentations(annos, transforms, (h, w), (out_h, out_w))
            except DatasetError as e:
                raise DatasetError(f"{dataset_dict['file_name']}: {e}") from None
            out["instances"] = annotations_to_instances(annos, masks, (out_h, out_w))
        else:
            targets = segment_map_targets(dataset_dict, transforms, (h, w), (out_h, out_w), self.ignore_label)
            if targets is not None:
                out["instances"] = targets
        return out

    def _check_masks(self, annos: List[dict], dataset_dict: Dict[str, Any]) -> None:
        box_only = [a for a in annos if not has_segmentation(a)]
        if not box_only:
            return
        if self.dataset_names:
            which = f"dataset{'s' if len(self.dataset_names) > 1 else ''} {', '.join(map(repr, self.dataset_names))}"
        else:
            which = "the dataset"
        raise ConfigError(
            f"InstanceDatasetMapper (Mask2Former) needs instance masks, but {which} has box-only annotations "
            f"(annotation id {box_only[0].get('id', '?')} of image id {dataset_dict.get('image_id')}, "
            f"{dataset_dict.get('file_name')}: no 'segmentation'); add masks, or train box-only data with the "
            "concept detector (INPUT.DATASET_MAPPER_NAME 'FindDatasetMapper')"
        )


def _ignore_label(dataset_names: Sequence[str]) -> int:
    """``ignore_label`` of the first dataset's metadata (255 when unset or unregistered)."""
    names = list(dataset_names)
    return int(getattr(MetadataCatalog.get(names[0]), "ignore_label", 255)) if names else 255
