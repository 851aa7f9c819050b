"""RoIAlign in plain PyTorch, with torchvision's ``roi_align`` semantics for
``aligned=False`` (boxes at least 1 px) and adaptive sampling (``sampling_ratio=-1``: each bin
averages ``ceil(box_size / output_size)`` bilinear samples per axis)."""

import math
from typing import List, Sequence

import torch
from torch import Tensor

__all__ = ["roi_align"]


def _axis_samples(start: Tensor, size: Tensor, out: int, grid: int) -> Tensor:
    """Sample coordinates [out * grid] along one axis of a box."""
    bin_size = size / out
    steps = torch.arange(out, device=start.device, dtype=start.dtype)[:, None] * bin_size
    offsets = (torch.arange(grid, device=start.device, dtype=start.dtype)[None, :] + 0.5) * bin_size / grid
    return (start + steps + offsets).reshape(-1)


def _bilinear_axis(coord: Tensor, length: int):
    """Low / high indices and weights of bilinear sampling along an axis; samples further than
    one pixel outside the map get zero weight."""
    valid = (coord >= -1.0) & (coord <= length)
    coord = coord.clamp(min=0)
    low = coord.floor().long()
    at_end = low >= length - 1
    low = torch.where(at_end, torch.full_like(low, length - 1), low)
    high = torch.where(at_end, low, low + 1)
    coord = torch.where(at_end, low.to(coord.dtype), coord)
    frac = coord - low.to(coord.dtype)
    w_low, w_high = (1 - frac) * valid, frac * valid
    return low, high, w_low, w_high


def roi_align(features: Tensor, boxes: Sequence[Tensor], output_size: int, spatial_scale: float = 1.0) -> Tensor:
    """features [N, C, H, W]; boxes: per image a [K_i, 4] xyxy tensor in feature pixels (after
    ``spatial_scale``). Returns [sum K_i, C, output_size, output_size], images in order."""
    if len(boxes) != features.shape[0]:
        raise ValueError(f"roi_align: {len(boxes)} box sets for {features.shape[0]} images")
    _, C, H, W = features.shape
    out = output_size
    pooled: List[Tensor] = []
    for img, img_boxes in enumerate(boxes):
        fmap = features[img]
        for box in img_boxes.to(features.dtype) * spatial_scale:
            x1, y1, x2, y2 = box.unbind(0)
            roi_w = torch.clamp(x2 - x1, min=1.0)
            roi_h = torch.clamp(y2 - y1, min=1.0)
            grid_h = max(int(math.ceil(float(roi_h) / out)), 1)
            grid_w = max(int(math.ceil(float(roi_w) / out)), 1)
            ys = _axis_samples(y1, roi_h, out, grid_h)
            xs = _axis_samples(x1, roi_w, out, grid_w)
            y_lo, y_hi, wy_lo, wy_hi = _bilinear_axis(ys, H)
            x_lo, x_hi, wx_lo, wx_hi = _bilinear_axis(xs, W)
            rows_lo, rows_hi = fmap[:, y_lo], fmap[:, y_hi]  # [C, Sy, W]
            values = (
                rows_lo[:, :, x_lo] * (wy_lo[:, None] * wx_lo[None, :])
                + rows_lo[:, :, x_hi] * (wy_lo[:, None] * wx_hi[None, :])
                + rows_hi[:, :, x_lo] * (wy_hi[:, None] * wx_lo[None, :])
                + rows_hi[:, :, x_hi] * (wy_hi[:, None] * wx_hi[None, :])
            )  # [C, out * grid_h, out * grid_w]
            pooled.append(values.view(C, out, grid_h, out, grid_w).mean(dim=(2, 4)))
    if not pooled:
        return features.new_zeros((0, C, out, out))
    return torch.stack(pooled)
