"""Per-object video predictions as one label map per frame, as the official SAM 2 VOS inference
writes them (``put_per_obj_mask``): where objects overlap, the smallest object id wins; and the
label maps written as palette-indexed PNGs in the DAVIS layout, for the official toolkits."""

import os
from typing import Any, List, Mapping, Sequence

import numpy as np

from segtrain.data.datasets import write_object_label_map

__all__ = ["merge_object_masks", "png_labels", "write_label_pngs"]


def merge_object_masks(masks: Mapping[Any, np.ndarray], order: Sequence[Any]) -> np.ndarray:
    """int64 [T, H, W] of positions in ``order`` + 1 (0 = background) from ``masks`` {object id:
    bool [T, H, W]}; an object painted earlier is covered by those of smaller id."""
    shape = next(iter(masks.values())).shape if masks else None
    if shape is None:
        raise ValueError("merge_object_masks needs at least one object mask")
    labels = np.zeros(shape, dtype=np.int64)
    for oid in sorted((o for o in order if o in masks), key=_id_key, reverse=True):
        labels[masks[oid]] = list(order).index(oid) + 1
    return labels


def _id_key(oid: Any):
    return (0, oid) if isinstance(oid, (int, np.integer)) else (1, str(oid))


def png_labels(order: Sequence[Any]) -> List[int]:
    """The PNG value of each object: its id when all ids are integers in [1, 254] (DAVIS label
    values stay themselves), else its position + 1."""
    if all(isinstance(o, (int, np.integer)) and 1 <= int(o) <= 254 for o in order):
        return [int(o) for o in order]
    if len(order) > 254:
        raise ValueError(f"{len(order)} objects do not fit a label PNG")
    return list(range(1, len(order) + 1))


def write_label_pngs(folder: str, frame_names: Sequence[str], labels: np.ndarray, values: Sequence[int]) -> None:
    """Write ``labels`` (int [T, H, W] of positions + 1, as ``merge_object_masks``) as
    ``folder/<frame name>.png`` with position ``k`` written as ``values[k - 1]``."""
    os.makedirs(folder, exist_ok=True)
    lut = np.zeros(len(values) + 1, dtype=np.uint8)
    lut[1:] = values
    for name, frame in zip(frame_names, labels):
        write_object_label_map(os.path.join(folder, f"{name}.png"), lut[frame])
