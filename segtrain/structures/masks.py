"""Mask formats (COCO polygons, RLE, bitmasks), the ``BoxMode`` of annotation boxes and the
one mask -> box conversion (``masks_to_boxes``).

Box convention (COCO / Detectron2, used everywhere in segtrain): pixel ``(i, j)`` covers
``[j, j + 1] x [i, i + 1]``, so the tight box of a mask is ``[min_col, min_row, max_col + 1,
max_row + 1]`` (x1 / y1 exclusive: one past the last foreground column / row). SAM 2's prompts use
the inclusive corner (x1 / y1 = the last foreground column / row); they convert from this box.
"""

import logging
from enum import IntEnum
from typing import Any, Dict, List, Sequence, Tuple, Union

import numpy as np
import pycocotools.mask as mask_util
import torch

from segtrain.utils.errors import DatasetError

__all__ = [
    "BoxMode",
    "polygons_to_bitmask",
    "rle_to_bitmask",
    "bitmask_to_rle",
    "segmentation_to_bitmask",
    "mask_to_box",
    "masks_to_boxes",
    "pad_masks",
]

logger = logging.getLogger(__name__)

_BoxLike = Union[Sequence[float], np.ndarray, torch.Tensor]


class BoxMode(IntEnum):
    """How the 4 numbers of a box are laid out (absolute pixel coordinates)."""

    XYXY_ABS = 0  # (x0, y0, x1, y1)
    XYWH_ABS = 1  # (x0, y0, width, height), the COCO ``bbox``

    @staticmethod
    def convert(box: _BoxLike, from_mode: "BoxMode", to_mode: "BoxMode") -> _BoxLike:
        """Convert ``box`` ([4] or [N, 4]; list, tuple, ndarray or Tensor) between modes.
        Returns the same container type (a list for a list or tuple input)."""
        from_mode, to_mode = BoxMode(from_mode), BoxMode(to_mode)
        if from_mode == to_mode:
            return box
        original = box
        if isinstance(box, torch.Tensor):
            arr = box.clone()
        else:
            arr = torch.as_tensor(np.asarray(box, dtype=np.float64))
        single = arr.dim() == 1
        if single:
            arr = arr[None]
        if arr.shape[-1] != 4:
            raise ValueError(f"BoxMode.convert expects boxes of shape [4] or [N, 4], got {tuple(arr.shape)}")
        if from_mode == BoxMode.XYWH_ABS:  # -> XYXY
            arr[:, 2:] = arr[:, :2] + arr[:, 2:]
        else:  # XYXY -> XYWH
            arr[:, 2:] = arr[:, 2:] - arr[:, :2]
        if single:
            arr = arr[0]
        if isinstance(original, torch.Tensor):
            return arr
        if isinstance(original, np.ndarray):
            return arr.numpy().astype(original.dtype, copy=False)
        return arr.tolist()


def polygons_to_bitmask(polygons: List[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Rasterize COCO polygons (each ``[x0, y0, x1, y1, ...]``) into a bool [height, width]
    mask; parts are unioned. Out-of-image parts are clipped."""
    if len(polygons) == 0:
        return np.zeros((height, width), dtype=bool)
    polys = [np.asarray(p, dtype=np.float64).reshape(-1).tolist() for p in polygons]
    rles = mask_util.frPyObjects(polys, height, width)
    return mask_util.decode(mask_util.merge(rles)).astype(bool)


def _to_compressed_rle(rle: Dict[str, Any]) -> Dict[str, Any]:
    h, w = (int(v) for v in rle["size"])
    if isinstance(rle["counts"], list):  # uncompressed: run lengths as ints
        return mask_util.frPyObjects(rle, h, w)
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": [h, w], "counts": counts}


def rle_to_bitmask(rle: Dict[str, Any]) -> np.ndarray:
    """Decode a COCO RLE (``counts`` compressed str/bytes or an uncompressed int list)
    into a bool [h, w] mask, ``(h, w) = rle["size"]``."""
    return mask_util.decode(_to_compressed_rle(rle)).astype(bool)


def bitmask_to_rle(mask: Union[np.ndarray, torch.Tensor]) -> Dict[str, Any]:
    """Encode a [H, W] mask (any dtype, nonzero = foreground) as a compressed COCO RLE
    with ``counts`` as a str (JSON-serializable)."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def segmentation_to_bitmask(segm: Union[list, dict], height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygon list or RLE dict) as a bool [height, width] mask.
    The RLE's own size must equal (height, width)."""
    if isinstance(segm, dict):
        size = [int(v) for v in segm["size"]]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} differs from the expected [{height}, {width}]")
        return rle_to_bitmask(segm)
    return polygons_to_bitmask(segm, height, width)


def mask_to_box(mask: Union[np.ndarray, torch.Tensor]) -> List[float]:
    """``masks_to_boxes`` of one [H, W] mask as a list ``[x0, y0, x1, y1]`` (x1 / y1 exclusive);
    all zeros for an empty mask."""
    mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    return masks_to_boxes(mask[None])[0].tolist()


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes of masks [N, H, W] (bool or 0/1), in the module's convention:
    ``[min_col, min_row, max_col + 1, max_row + 1]`` (x1 / y1 exclusive). Returns float32 [N, 4]
    on the masks' device; an empty mask gives ``[0, 0, 0, 0]``."""
    if masks.dim() != 3:
        raise ValueError(f"masks_to_boxes expects [N, H, W], got {tuple(masks.shape)}")
    n, h, w = masks.shape
    boxes = torch.zeros((n, 4), dtype=torch.float32, device=masks.device)
    if n == 0:
        return boxes
    m = masks.bool()
    cols = m.any(dim=1)  # [N, W]
    rows = m.any(dim=2)  # [N, H]
    nonempty = cols.any(dim=1)
    xs = torch.arange(w, device=masks.device, dtype=torch.float32)
    ys = torch.arange(h, device=masks.device, dtype=torch.float32)
    big = float(max(h, w) + 1)
    boxes[:, 0] = torch.where(cols, xs, big).amin(dim=1)
    boxes[:, 1] = torch.where(rows, ys, big).amin(dim=1)
    boxes[:, 2] = torch.where(cols, xs, -1.0).amax(dim=1) + 1
    boxes[:, 3] = torch.where(rows, ys, -1.0).amax(dim=1) + 1
    boxes[~nonempty] = 0.0
    return boxes


def pad_masks(masks: torch.Tensor, size: Tuple[int, int], what: str = "masks") -> torch.Tensor:
    """Zero-pad masks [N, h, w] at the bottom and right to ``size`` = (H, W) -> [N, H, W]
    (the frame of a padded image batch); a DatasetError naming ``what`` when they do not fit."""
    H, W = size
    h, w = masks.shape[-2:]
    if h > H or w > W:
        raise DatasetError(f"{what} of size {(h, w)} do not fit the padded batch size {(H, W)}")
    out = masks.new_zeros((masks.shape[0], H, W))
    out[:, :h, :w] = masks
    return out
