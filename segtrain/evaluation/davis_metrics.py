"""DAVIS 2017 per-frame metrics of one object: J (region IoU, ``db_eval_iou``), F (boundary
F-measure, ``db_eval_boundary`` over ``seg2bmap`` boundaries) and their per-object statistics
(mean, recall, decay; ``db_statistics``). Conventions: docs in ``video_evaluation``.

Masks are [T, H, W] bool (numpy or torch); each function returns per-frame values [T]."""

from typing import Optional, Tuple, Union

import cv2
import numpy as np
import torch

__all__ = ["as_bool_array", "db_eval_iou", "db_eval_boundary", "seg2bmap", "db_statistics"]

_MaskLike = Union[np.ndarray, torch.Tensor]


def as_bool_array(x: _MaskLike) -> np.ndarray:
    """A mask array of any shape (numpy or torch, e.g. [T, H, W]) as a numpy bool array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x).astype(bool)


# ------------------------------------------------------------------ per-frame measures
def db_eval_iou(gt: _MaskLike, pred: _MaskLike, void: Optional[_MaskLike] = None) -> np.ndarray:
    """Region similarity J. gt, pred: [T, H, W] or [H, W] (nonzero = foreground); ``void``: the
    same shape, pixels left out of both the intersection and the union.
    Returns float64 [T] (or a 0-d array): IoU per frame, 1 where the union is empty."""
    gt, pred = as_bool_array(gt), as_bool_array(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"db_eval_iou: GT {gt.shape} and prediction {pred.shape} differ in shape")
    if void is not None:
        keep = ~as_bool_array(void)
        gt, pred = gt & keep, pred & keep
    inter = (gt & pred).sum(axis=(-2, -1)).astype(np.float64)
    union = (gt | pred).sum(axis=(-2, -1)).astype(np.float64)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1.0))


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """DAVIS boundary map of a bool [H, W] mask: pixels whose right, bottom or bottom-right
    neighbour differs (so a boundary is one pixel wide, on the foreground's right/bottom side
    or the background's left/top side, exactly as the DAVIS toolkit)."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    """uint8 structuring element of the pixels within ``radius`` of the centre (skimage's disk)."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (xx * xx + yy * yy <= radius * radius).astype(np.uint8)


def _f_measure_frame(gt: np.ndarray, pred: np.ndarray, bound_pix: int) -> float:
    gt_b, fg_b = seg2bmap(gt), seg2bmap(pred)
    kernel = _disk(bound_pix)
    fg_dil = cv2.dilate(fg_b.astype(np.uint8), kernel).astype(bool)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel).astype(bool)
    gt_match = gt_b & fg_dil
    fg_match = fg_b & gt_dil
    n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision, recall = fg_match.sum() / n_fg, gt_match.sum() / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def db_eval_boundary(
    gt: _MaskLike, pred: _MaskLike, bound_th: float = 0.008, void: Optional[_MaskLike] = None
) -> np.ndarray:
    """Boundary F-measure F. gt, pred: [T, H, W] or [H, W]; ``void`` pixels are removed from both
    masks before their boundaries are taken (as the DAVIS toolkit). ``bound_th`` < 1 is a fraction
    of the image diagonal (tolerance ``ceil(bound_th * sqrt(H^2 + W^2))`` pixels), >= 1 pixels.
    Returns float64 [T] (or a 0-d array)."""
    gt, pred = as_bool_array(gt), as_bool_array(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"db_eval_boundary: GT {gt.shape} and prediction {pred.shape} differ in shape")
    if void is not None:
        keep = ~as_bool_array(void)
        gt, pred = gt & keep, pred & keep
    h, w = gt.shape[-2:]
    bound_pix = int(bound_th if bound_th >= 1 else np.ceil(bound_th * np.hypot(h, w)))
    if gt.ndim == 2:
        return np.asarray(_f_measure_frame(gt, pred, bound_pix))
    return np.array([_f_measure_frame(g, p, bound_pix) for g, p in zip(gt, pred)], dtype=np.float64)


def db_statistics(per_frame: np.ndarray) -> Tuple[float, float, float]:
    """(mean, recall = share of frames > 0.5, decay = mean of the first quarter of the frames
    minus the mean of the last quarter), NaN-aware, as the DAVIS toolkit."""
    x = np.asarray(per_frame, dtype=np.float64)
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(np.nanmean(x))
    recall = float(np.nanmean(x > 0.5))
    ids = (np.round(np.linspace(1, len(x), 5) + 1e-10) - 1).astype(np.int64)
    bins = [x[ids[i] : ids[i + 1] + 1] for i in range(4)]
    decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


# ------------------------------------------------------------------ GT and the baseline
