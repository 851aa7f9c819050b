"""Helpers shared by mappers: read an image and check it against its annotations, apply the
bad-annotation policy to one item, and turn (transformed) annotations into an ``Instances``
of targets."""

import logging
import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from segtrain.structures import Instances
from segtrain.structures.masks import masks_to_boxes, polygons_to_bitmask, rle_to_bitmask
from segtrain.utils.errors import DatasetError

from .datasets.annotation_checks import BAD_ANNOTATION_POLICIES
from .transforms.transform import Transform

__all__ = [
    "read_image",
    "read_image_checked",
    "check_image_size",
    "check_mapper_policy",
    "map_or_skip",
    "bad_items_skipped",
    "transform_segmentations",
    "annotations_to_instances",
    "read_panoptic_ids",
    "read_label_map",
    "segment_map_targets",
]

logger = logging.getLogger(__name__)

_IMAGE_FORMATS = ("RGB", "BGR")


def read_image(file_name: str, format: str = "RGB") -> np.ndarray:
    """Read an image with OpenCV as uint8 [H, W, 3] in ``format`` ("RGB" or "BGR").

    EXIF orientation is applied; grey / 16-bit / float images are converted (floats
    in [0, 1] are scaled to 255). Raises ``DatasetError`` naming the file when it is
    missing, cannot be decoded, or holds NaN / Inf.
    """
    if format not in _IMAGE_FORMATS:
        raise DatasetError(f"image format must be one of {', '.join(_IMAGE_FORMATS)}; got {format!r}")
    if not os.path.isfile(file_name):
        raise DatasetError(f"image file not found: {file_name!r}")
    # ANYDEPTH keeps 16-bit / float data so that NaN can be detected before conversion
    img = cv2.imread(file_name, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if img is None or img.size == 0:
        raise DatasetError(f"{file_name}: image cannot be decoded (corrupt or unsupported format)")
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating):
            if not np.isfinite(img).all():
                raise DatasetError(f"{file_name}: image holds NaN or infinite pixel values")
            scale = 255.0 if float(img.max(initial=0.0)) <= 1.0 else 1.0
            img = np.clip(img * scale + 0.5, 0, 255).astype(np.uint8)
        elif img.dtype == np.uint16:
            img = ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
        else:
            img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if format == "RGB":
        img = np.ascontiguousarray(img[:, :, ::-1])
    return img


def read_image_checked(
    file_name: str, format: str, height: Optional[int], width: Optional[int], where: str
) -> np.ndarray:
    """``read_image``, then a ``DatasetError`` naming ``file_name`` and ``where`` (e.g. "image id
    3", "video id 2 frame 5") when the decoded size differs from the annotations' ``height`` x
    ``width`` (None: not checked)."""
    img = read_image(file_name, format)
    _check_size(img, height, width, file_name, where)
    return img


def check_image_size(dataset_dict: Dict[str, Any], image: np.ndarray) -> None:
    """Raise ``DatasetError`` when the decoded image size differs from the dict's
    ``height`` / ``width`` (the annotation JSON's)."""
    _check_size(
        image,
        dataset_dict.get("height"),
        dataset_dict.get("width"),
        dataset_dict.get("file_name"),
        f"image id {dataset_dict.get('image_id')}",
    )


def _check_size(image: np.ndarray, height: Optional[int], width: Optional[int], file_name: Any, where: str) -> None:
    h, w = image.shape[:2]
    if (height is not None and height != h) or (width is not None and width != w):
        raise DatasetError(f"{file_name}: {where} is {w}x{h} (WxH) but the annotations say {width}x{height}")


def check_mapper_policy(policy: str) -> str:
    """``policy`` when it is a valid ``on_bad_annotation`` of a mapper, else a ``DatasetError``."""
    if policy not in BAD_ANNOTATION_POLICIES:
        raise DatasetError(f"on_bad_annotation must be one of {', '.join(BAD_ANNOTATION_POLICIES)}; got {policy!r}")
    return policy


# Bad items this process's mappers skipped; ``MapDataset`` reads it before and after each item
# (in loader workers too) to report the count to the main process.
_SKIPPED = [0]


def bad_items_skipped() -> int:
    """How many items ``map_or_skip`` has skipped in this process so far."""
    return _SKIPPED[0]


def map_or_skip(
    map_fn: Callable[[Dict[str, Any]], Any], dataset_dict: Dict[str, Any], policy: str, what: str = "an image"
) -> Optional[Any]:
    """``map_fn(dataset_dict)``; a ``DatasetError`` is raised again under the "error" policy, and
    under "skip" it is logged (one warning naming the item) and gives ``None``."""
    try:
        return map_fn(dataset_dict)
    except DatasetError as e:
        if policy == "error":
            raise
        _SKIPPED[0] += 1
        logger.warning("Skipping %s (DATASETS.ON_BAD_ANNOTATION='skip'): %s", what, e)
        return None


def transform_segmentations(
    annotations: Sequence[Dict[str, Any]],
    transforms: Transform,
    image_size: Tuple[int, int],
    output_size: Tuple[int, int],
) -> np.ndarray:
    """Masks of ``annotations`` after ``transforms``: bool [N, H', W'].

    Polygons are transformed as coordinates and rasterized once at the output size;
    RLEs are decoded at ``image_size`` (h, w) and warped like the image (nearest), and so are
    bool [h, w] arrays.
    """
    h, w = image_size
    out_h, out_w = output_size
    masks = np.zeros((len(annotations), out_h, out_w), dtype=bool)
    for i, ann in enumerate(annotations):
        segm = ann["segmentation"]
        if isinstance(segm, np.ndarray):
            masks[i] = transforms.apply_segmentation(segm.astype(np.uint8)).astype(bool)
        elif isinstance(segm, dict):
            if [int(v) for v in segm["size"]] != [h, w]:
                raise DatasetError(
                    f"annotation id {ann.get('id')}: RLE size {list(segm['size'])} differs from the image size "
                    f"[{h}, {w}]"
                )
            m = transforms.apply_segmentation(rle_to_bitmask(segm))
            if m.shape != (out_h, out_w):
                raise DatasetError(
                    f"annotation id {ann.get('id')}: transformed mask is {m.shape}, image is {(out_h, out_w)}"
                )
            masks[i] = m
        else:
            masks[i] = polygons_to_bitmask(transforms.apply_polygons(segm), out_h, out_w)
    return masks


def annotations_to_instances(
    annotations: Sequence[Dict[str, Any]], masks: np.ndarray, image_size: Tuple[int, int]
) -> Instances:
    """Targets of one image. ``masks``: bool [N, H, W] aligned with ``annotations``.
    Empty masks are dropped. Returns ``Instances(image_size)`` with ``gt_classes`` int64 [N'],
    ``gt_boxes`` float32 [N', 4] XYXY (tight boxes of the masks), ``gt_masks`` bool [N', H, W]."""
    h, w = image_size
    gt_masks = torch.from_numpy(np.ascontiguousarray(masks)).reshape(len(annotations), h, w)
    classes = torch.tensor([int(a["category_id"]) for a in annotations], dtype=torch.int64)
    keep = gt_masks.flatten(1).any(dim=1) if len(annotations) else torch.zeros(0, dtype=torch.bool)
    gt_masks, classes = gt_masks[keep], classes[keep]
    return Instances((h, w), gt_classes=classes, gt_boxes=masks_to_boxes(gt_masks), gt_masks=gt_masks)


def read_panoptic_ids(file_name: str) -> np.ndarray:
    """A COCO panoptic PNG as segment ids int64 [H, W]: id = R + 256 G + 256^2 B (0 = void)."""
    bgr = cv2.imread(file_name, cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(f"{file_name}: panoptic PNG cannot be read (missing, corrupt or not an image)")
    bgr = bgr.astype(np.int64)
    return bgr[..., 2] + 256 * bgr[..., 1] + 256 * 256 * bgr[..., 0]


def read_label_map(file_name: str) -> np.ndarray:
    """A semantic label PNG as int64 [H, W] (the first channel of a multi-channel file)."""
    labels = cv2.imread(file_name, cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise DatasetError(f"{file_name}: semantic label PNG cannot be read (missing, corrupt or not an image)")
    return (labels[..., 0] if labels.ndim == 3 else labels).astype(np.int64)


def segment_map_targets(
    dataset_dict: Dict[str, Any],
    transforms: Transform,
    image_size: Tuple[int, int],
    output_size: Tuple[int, int],
    ignore_label: int = 255,
) -> Optional[Instances]:
    """Mask-classification targets of a dataset dict without instance ``annotations``, as
    Mask2Former trains panoptic and semantic models: with ``pan_seg_file_name`` +
    ``segments_info``, one target per non-crowd segment (things and stuff); with
    ``sem_seg_file_name`` (a label PNG), one target per class present (``ignore_label`` is
    not a class). The map is transformed once, nearest-neighbour (padding is "no target"),
    and targets left empty are dropped. ``None`` when the dict has neither file."""
    if dataset_dict.get("pan_seg_file_name"):
        path = dataset_dict["pan_seg_file_name"]
        ids = read_panoptic_ids(path)
        segments = [s for s in dataset_dict.get("segments_info", []) if not s.get("iscrowd", 0)]
        classes = [int(s["category_id"]) for s in segments]
        index = np.zeros(ids.shape, dtype=np.uint16)  # 0 = void / crowd / padding, k + 1 = segment k
        for k, s in enumerate(segments):
            index[ids == int(s["id"])] = k + 1
    elif dataset_dict.get("sem_seg_file_name"):
        path = dataset_dict["sem_seg_file_name"]
        labels = read_label_map(path)
        classes = [int(c) for c in np.unique(labels) if c != ignore_label]
        index = np.zeros(labels.shape, dtype=np.uint16)
        for k, c in enumerate(classes):
            index[labels == c] = k + 1
    else:
        return None
    if len(classes) >= np.iinfo(np.uint16).max:
        raise DatasetError(f"{path}: {len(classes)} segments in one image; at most 65534 are supported")
    _check_size(index, *image_size, path, f"image id {dataset_dict.get('image_id')}")
    index = transforms.apply_segmentation(index)
    if index.shape[:2] != tuple(output_size):
        raise DatasetError(f"{path}: transformed map is {index.shape[:2]}, image is {tuple(output_size)}")
    masks = index[None] == np.arange(1, len(classes) + 1, dtype=np.uint16)[:, None, None]
    return annotations_to_instances([{"category_id": c} for c in classes], masks, tuple(output_size))
