"""Target formats and their converters, so one dataset feeds every criterion family.

:data:`TARGET_FORMATS` lists the formats a criterion can declare in ``target_format``;
:func:`convert_targets` turns per-image instance targets into any of them that has a converter
(``"instances"``, ``"find_packed"``; ``"video"`` targets come from the video loader as they are).

* :func:`instances_to_targets`: mapper ``Instances`` (or dicts) -> ``target_format="instances"``:
  a list of B dicts ``labels [n_b] int64``, ``masks [n_b, H, W]`` (zero-padded at the
  bottom/right to the batch size, dtype kept), ``boxes [n_b, 4]`` absolute XYXY float32.
* :func:`targets_to_find_packed`: per-image instance targets -> ``target_format="find_packed"``,
  one find per image (all its objects, class-agnostic), packed over the batch (T = total
  objects): ``boxes [T, 4]`` normalized cxcywh, ``boxes_xyxy [T, 4]`` normalized xyxy,
  ``num_boxes [B]`` int64, ``boxes_padded [B, maxn, 4]`` (cxcywh, zeros in the padding),
  ``object_ids_padded [B, maxn]`` int64 (-1 = padding), ``masks [T, H, W]`` bool or None,
  ``is_valid_mask [T]`` bool, ``is_exhaustive [B]`` bool, plus ``labels [T]`` int64 (the
  class of each row; the SAM 3 losses ignore it, it makes the conversion reversible).
* :func:`find_packed_to_targets`: the inverse (boxes back to absolute XYXY).

Boxes are normalized by each image's own size ``(h_b, w_b)`` (the valid area before
batch padding), as SAM 3 normalizes by the image it was annotated on.
"""

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from segtrain.structures.boxes import box_cxcywh_to_xyxy, box_xyxy_to_cxcywh
from segtrain.structures.masks import masks_to_boxes, pad_masks
from segtrain.utils.errors import ConfigError, DatasetError

__all__ = [
    "TARGET_FORMATS",
    "DEFAULT_TARGET_FORMAT",
    "convert_targets",
    "is_class_agnostic",
    "instances_to_targets",
    "targets_to_find_packed",
    "find_packed_to_targets",
]

#: The target formats a criterion can declare in ``target_format``: ``"instances"`` (a per-image
#: list of ``{labels, masks[, boxes]}``), ``"find_packed"`` (the packed SAM 3 dict of docs/losses.md),
#: ``"video"`` (``[T, N, H, W]`` masks).
TARGET_FORMATS = ("instances", "find_packed", "video")
#: The format of a criterion that declares no ``target_format``.
DEFAULT_TARGET_FORMAT = "instances"
# Formats whose targets are class-agnostic (one find per image: the criterion scores a single
# objectness logit per query and ignores ``labels``).
_CLASS_AGNOSTIC_FORMATS = frozenset({"find_packed"})


def _fields(item: Any, b: int) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor], Optional[Tuple[int, int]]]:
    """(labels, masks, boxes, image_size) of an Instances or a dict with gt_* or plain keys."""
    if hasattr(item, "get_fields"):
        f = item.get_fields()
        size = tuple(item.image_size)
    elif isinstance(item, Mapping):
        f = item
        size = tuple(item["image_size"]) if "image_size" in item else None
    else:
        raise DatasetError(f"target {b}: expected Instances or a dict, got {type(item).__name__}")
    labels = f.get("gt_classes", f.get("labels"))
    if labels is None:
        raise DatasetError(f"target {b}: no 'gt_classes' (or 'labels'); fields: {sorted(f)}")
    masks = f.get("gt_masks", f.get("masks"))
    boxes = f.get("gt_boxes", f.get("boxes"))
    if boxes is not None and hasattr(boxes, "tensor"):
        boxes = boxes.tensor
    labels = torch.as_tensor(labels).reshape(-1).long()
    if masks is not None:
        masks = torch.as_tensor(masks)
        if masks.dim() != 3 or masks.shape[0] != labels.numel():
            raise DatasetError(
                f"target {b}: masks must be [n, H, W] with n = {labels.numel()} labels, got shape {tuple(masks.shape)}"
            )
        if size is None:
            size = tuple(masks.shape[-2:])
    if boxes is not None:
        boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        if boxes.shape[0] != labels.numel():
            raise DatasetError(f"target {b}: {boxes.shape[0]} boxes for {labels.numel()} labels")
    return labels, masks, boxes, size


def instances_to_targets(
    instances: Sequence[Any], image_size: Optional[Tuple[int, int]] = None
) -> List[Dict[str, Tensor]]:
    """Mapper instances -> per-image ``{labels, masks, boxes}`` (``target_format="instances"``).

    instances: B ``Instances`` (``gt_classes``, ``gt_masks`` [n, h, w], ``gt_boxes`` [n, 4] XYXY)
    or dicts with those keys or ``labels`` / ``masks`` / ``boxes``. image_size: the padded
    batch size (H, W) the masks are zero-padded to (default: the largest mask size).
    Boxes missing from the input are the masks' tight boxes.
    """
    fields = [_fields(x, b) for b, x in enumerate(instances)]
    sizes = [f[1].shape[-2:] for f in fields if f[1] is not None]
    if image_size is None and sizes:
        image_size = (max(s[0] for s in sizes), max(s[1] for s in sizes))
    out = []
    for b, (labels, masks, boxes, _) in enumerate(fields):
        t: Dict[str, Tensor] = {"labels": labels}
        if masks is not None:
            t["masks"] = pad_masks(masks, image_size, what=f"target {b}: masks")
            if boxes is None:
                boxes = masks_to_boxes(masks)
        t["boxes"] = boxes if boxes is not None else torch.zeros((labels.numel(), 4), dtype=torch.float32)
        out.append(t)
    return out


def targets_to_find_packed(
    per_image_targets: Sequence[Mapping[str, Tensor]],
    image_sizes: Sequence[Tuple[int, int]],
    is_exhaustive: bool = True,
) -> Dict[str, Optional[Tensor]]:
    """Per-image ``{labels, masks[, boxes]}`` -> the packed SAM 3 find targets (module docstring).

    image_sizes: B ``(h, w)`` used to normalize each image's absolute XYXY boxes.
    A target may carry ``object_ids [n]`` (default ``0..n-1``) and ``is_valid_mask [n]``
    (default: True when masks are given).
    """
    if len(image_sizes) != len(per_image_targets):
        raise DatasetError(
            f"targets_to_find_packed: {len(image_sizes)} image_sizes for {len(per_image_targets)} targets"
        )
    labels, boxes, ids, masks, valid = [], [], [], [], []
    num = []
    has_masks = all(t.get("masks") is not None for t in per_image_targets) and len(per_image_targets) > 0
    for b, (t, (h, w)) in enumerate(zip(per_image_targets, image_sizes)):
        lab = torch.as_tensor(t["labels"]).reshape(-1).long()
        n = lab.numel()
        bx = t.get("boxes")
        if bx is None:
            if t.get("masks") is None:
                raise DatasetError(f"target {b} has neither 'boxes' nor 'masks'")
            bx = masks_to_boxes(torch.as_tensor(t["masks"]))
        bx = torch.as_tensor(bx, dtype=torch.float32).reshape(-1, 4)
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=bx.device)
        labels.append(lab)
        boxes.append(bx / scale)
        ids.append(torch.as_tensor(t.get("object_ids", torch.arange(n))).reshape(-1).long())
        if has_masks:
            masks.append(torch.as_tensor(t["masks"]).bool())
            valid.append(torch.as_tensor(t.get("is_valid_mask", torch.ones(n, dtype=torch.bool))).reshape(-1).bool())
        else:
            valid.append(torch.zeros(n, dtype=torch.bool))
        num.append(n)
    B = len(num)
    maxn = max(num) if num else 0
    xyxy = torch.cat(boxes) if boxes else torch.zeros((0, 4))
    cxcywh = box_xyxy_to_cxcywh(xyxy)
    boxes_padded = torch.zeros((B, maxn, 4), dtype=torch.float32)
    ids_padded = torch.full((B, maxn), -1, dtype=torch.int64)
    o = 0
    for b, n in enumerate(num):
        boxes_padded[b, :n] = cxcywh[o : o + n].cpu()
        ids_padded[b, :n] = ids[b].cpu()
        o += n
    packed_masks = None
    if has_masks:
        H = max(m.shape[-2] for m in masks)
        W = max(m.shape[-1] for m in masks)
        packed_masks = torch.zeros((sum(num), H, W), dtype=torch.bool)
        o = 0
        for m in masks:
            packed_masks[o : o + m.shape[0], : m.shape[1], : m.shape[2]] = m.cpu()
            o += m.shape[0]
    return {
        "boxes": cxcywh,
        "boxes_xyxy": xyxy,
        "num_boxes": torch.as_tensor(num, dtype=torch.int64),
        "boxes_padded": boxes_padded,
        "object_ids_padded": ids_padded,
        "masks": packed_masks,
        "is_valid_mask": torch.cat(valid) if valid else torch.zeros(0, dtype=torch.bool),
        "is_exhaustive": torch.full((B,), bool(is_exhaustive), dtype=torch.bool),
        "labels": torch.cat(labels) if labels else torch.zeros(0, dtype=torch.int64),
    }


def find_packed_to_targets(
    packed: Mapping[str, Optional[Tensor]], image_sizes: Sequence[Tuple[int, int]]
) -> List[Dict[str, Tensor]]:
    """Packed SAM 3 find targets -> per-find ``{labels, masks, boxes, object_ids}`` instance targets.

    image_sizes: B ``(h, w)``; boxes come back as absolute XYXY. ``labels`` are the packed
    ``labels`` when present, else 0 (a find is class-agnostic). Masks rows stay [n, H, W] (bool).
    """
    num = [int(n) for n in torch.as_tensor(packed["num_boxes"]).tolist()]
    if len(image_sizes) != len(num):
        raise DatasetError(f"find_packed_to_targets: {len(image_sizes)} image_sizes for {len(num)} finds")
    xyxy = packed.get("boxes_xyxy")
    if xyxy is None:
        xyxy = box_cxcywh_to_xyxy(packed["boxes"])
    labels = packed.get("labels")
    masks = packed.get("masks")
    ids = packed.get("object_ids_padded")
    out, o = [], 0
    for b, (n, (h, w)) in enumerate(zip(num, image_sizes)):
        scale = torch.tensor([w, h, w, h], dtype=torch.float32, device=xyxy.device)
        t = {
            "labels": labels[o : o + n].long() if labels is not None else torch.zeros(n, dtype=torch.int64),
            "boxes": xyxy[o : o + n].float() * scale,
        }
        if masks is not None:
            t["masks"] = masks[o : o + n]
        if ids is not None:
            t["object_ids"] = ids[b, :n]
        out.append(t)
        o += n
    return out


def _as_instances(targets: List[Dict[str, Tensor]], image_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
    return targets


# target_format -> converter(instance targets, image_sizes); the formats that can be built from instance targets
_CONVERTERS: Dict[str, Callable[[List[Dict[str, Tensor]], Sequence[Tuple[int, int]]], Any]] = {
    "instances": _as_instances,
    "find_packed": targets_to_find_packed,
}


def convert_targets(
    target_format: str, instance_targets: List[Dict[str, Tensor]], image_sizes: Sequence[Tuple[int, int]]
) -> Any:
    """Per-image instance targets (``instances_to_targets``) in the criterion's ``target_format``.

    instance_targets: B dicts ``{labels [n_b], masks [n_b, H, W], boxes [n_b, 4] absolute XYXY}``;
    image_sizes: B ``(h, w)`` valid sizes (boxes are normalized by them where the format wants it).
    Returns the list itself for ``"instances"``, the packed dict of ``targets_to_find_packed`` for
    ``"find_packed"``; a ``ConfigError`` naming the valid formats for any other.
    """
    convert = _CONVERTERS.get(target_format)
    if convert is None:
        raise ConfigError(
            f"target_format {target_format!r} cannot be built from instance targets; valid: {', '.join(_CONVERTERS)}"
        )
    return convert(instance_targets, image_sizes)


def is_class_agnostic(target_format: str) -> bool:
    """Whether targets of ``target_format`` carry no class: a criterion of that format scores one
    objectness logit per query (``pred_logits`` [B, Q, 1]) instead of K + 1 class logits."""
    return target_format in _CLASS_AGNOSTIC_FORMATS
