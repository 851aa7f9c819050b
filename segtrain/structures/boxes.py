"""Box format conversions, IoU and generalized IoU (DETR / SAM 3 box losses and matchers).

Formats: ``cxcywh`` = (center x, center y, width, height); ``xyxy`` = (x0, y0, x1, y1).
Degenerate boxes (zero width or height, or two identical points) never give NaN:
a zero denominator yields IoU 0 (and GIoU from the remaining term), through a
safe denominator so the gradient stays finite too. Inverted boxes (x1 < x0) count
as zero area.
"""

from typing import Tuple

import torch
from torch import Tensor

__all__ = [
    "box_cxcywh_to_xyxy",
    "box_xyxy_to_cxcywh",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "box_iou_paired",
    "generalized_box_iou_paired",
]


def box_cxcywh_to_xyxy(x: Tensor) -> Tensor:
    """[..., 4] (cx, cy, w, h) -> [..., 4] (cx - w/2, cy - h/2, cx + w/2, cy + h/2)."""
    cx, cy, w, h = x.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(x: Tensor) -> Tensor:
    """[..., 4] (x0, y0, x1, y1) -> [..., 4] ((x0 + x1)/2, (y0 + y1)/2, x1 - x0, y1 - y0)."""
    x0, y0, x1, y1 = x.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """[..., 4] xyxy -> [...] area ``max(x1 - x0, 0) * max(y1 - y0, 0)``."""
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """num / den, with 0 where den <= 0 (and a finite gradient there)."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tuple[Tensor, Tensor]:
    """Pairwise IoU. boxes1: [N, 4] xyxy; boxes2: [M, 4] xyxy.

    Returns ``(iou [N, M], union [N, M])`` with ``union = area1 + area2 - inter``,
    ``iou = inter / union`` (0 where union is 0).
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return _safe_div(inter, union), union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalized IoU (Rezatofighi et al. 2019). boxes1: [N, 4], boxes2: [M, 4] xyxy.

    Returns [N, M] = ``iou - (C - union) / C`` with ``C`` the area of the smallest
    enclosing box (the second term is 0 where C is 0). Values in [-1, 1].
    """
    iou, union = box_iou(boxes1, boxes2)
    lt = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    area_c = wh[..., 0] * wh[..., 1]
    return iou - _safe_div(area_c - union, area_c)


def box_iou_paired(boxes1: Tensor, boxes2: Tensor) -> Tuple[Tensor, Tensor]:
    """Elementwise IoU of matched pairs. boxes1, boxes2: [N, 4] xyxy (row i with row i).

    Returns ``(iou [N], union [N])``; equals the diagonal of :func:`box_iou`.
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[..., :2], boxes2[..., :2])
    rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1 + area2 - inter
    return _safe_div(inter, union), union


def generalized_box_iou_paired(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Elementwise GIoU of matched pairs. boxes1, boxes2: [N, 4] xyxy.

    Returns [N]; equals the diagonal of :func:`generalized_box_iou`.
    """
    iou, union = box_iou_paired(boxes1, boxes2)
    lt = torch.min(boxes1[..., :2], boxes2[..., :2])
    rb = torch.max(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    area_c = wh[..., 0] * wh[..., 1]
    return iou - _safe_div(area_c - union, area_c)
