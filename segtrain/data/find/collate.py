"""Per-image finds -> the find batch: which image and concept each find has, and the packed
SAM 3 targets of docs/losses.md ("SAM 3", Targets).

Boxes are normalized by the padded batch size ``(Hp, Wp)`` (the canvas the model predicts
on, where the masks also live), so predicted and target boxes share one frame even when
images of different sizes are padded together.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from segtrain.structures.masks import pad_masks
from segtrain.structures.targets import targets_to_find_packed
from segtrain.utils.errors import DatasetError

__all__ = ["FindBatch", "find_batch_from_inputs", "collate_find_targets"]


@dataclass
class FindBatch:
    """The B finds of a batch of images.

    image_index: int64 [B], the image (batch position) of each find.
    concepts: int64 [B], the concept (category) id of each find.
    targets: the packed target dict (training) or None.
    """

    image_index: Tensor
    concepts: Tensor
    targets: Optional[Dict[str, Optional[Tensor]]] = None

    def __len__(self) -> int:
        return int(self.image_index.numel())


def _find_categories(inp: Mapping[str, Any], i: int) -> Tensor:
    if "find_categories" not in inp:
        raise DatasetError(
            f"input {i} (image_id {inp.get('image_id', '?')}) has no 'find_categories'; the concept detector needs "
            "INPUT.DATASET_MAPPER_NAME 'FindDatasetMapper' (or inputs that list their finds)"
        )
    return torch.as_tensor(inp["find_categories"], dtype=torch.int64).reshape(-1)


def find_batch_from_inputs(batched_inputs: Sequence[Mapping[str, Any]], device=None) -> FindBatch:
    """Image index and concept of every find of ``batched_inputs`` (no targets)."""
    cats = [_find_categories(x, i) for i, x in enumerate(batched_inputs)]
    image_index = (
        torch.cat([torch.full((len(c),), i, dtype=torch.int64) for i, c in enumerate(cats)])
        if cats
        else torch.zeros(0, dtype=torch.int64)
    )
    concepts = torch.cat(cats) if cats else torch.zeros(0, dtype=torch.int64)
    return FindBatch(image_index.to(device), concepts.to(device))


def collate_find_targets(
    batched_inputs: Sequence[Mapping[str, Any]], pad_size: Tuple[int, int], device=None
) -> FindBatch:
    """The finds of ``batched_inputs`` (``FindDatasetMapper`` outputs) with packed targets.

    pad_size: (Hp, Wp) of the padded image batch. The targets of find (image i, concept c)
    are the instances of image i of class c. Returns a :class:`FindBatch` whose ``targets``
    hold (T = total target boxes): ``boxes [T, 4]`` cxcywh and ``boxes_xyxy [T, 4]``
    normalized by (Wp, Hp), ``num_boxes [B]``, ``boxes_padded [B, maxn, 4]``,
    ``object_ids_padded [B, maxn]`` (-1 = padding), ``masks [T, Hp, Wp]`` bool or None when
    no image of the batch has masks (mask losses are then zero), ``is_valid_mask [T]``,
    ``is_exhaustive [B]`` and ``labels [T]`` (the concept of each row).
    """
    batch = find_batch_from_inputs(batched_inputs)
    any_masks = False
    for i, x in enumerate(batched_inputs):
        if "instances" not in x:
            raise DatasetError(
                f"concept detector training: input {i} (image_id {x.get('image_id', '?')}) has no 'instances'; "
                "use a mapper that keeps annotations (FindDatasetMapper)"
            )
        any_masks = any_masks or x["instances"].has("gt_masks")
    per_find: List[Dict[str, Tensor]] = []
    exhaustive: List[Tensor] = []
    for i, x in enumerate(batched_inputs):
        inst = x["instances"]
        cats = _find_categories(x, i)
        classes = inst.gt_classes.reshape(-1)
        boxes = torch.as_tensor(inst.gt_boxes, dtype=torch.float32).reshape(-1, 4)
        if any_masks:
            if inst.has("gt_masks"):
                masks = pad_masks(inst.gt_masks.bool(), pad_size)
                valid = (
                    inst.gt_mask_valid.bool()
                    if inst.has("gt_mask_valid")
                    else torch.ones(len(classes), dtype=torch.bool)
                )
            else:  # a box-only image in a batch with masks: rows kept, mask terms off for them
                masks = torch.zeros((len(classes), *pad_size), dtype=torch.bool)
                valid = torch.zeros(len(classes), dtype=torch.bool)
        ex = x.get("find_is_exhaustive")
        exhaustive.append(
            torch.ones(len(cats), dtype=torch.bool) if ex is None else torch.as_tensor(ex, dtype=torch.bool).reshape(-1)
        )
        for c in cats.tolist():
            sel = classes == c
            t: Dict[str, Tensor] = {"labels": classes[sel], "boxes": boxes[sel]}
            if any_masks:
                t["masks"] = masks[sel]
                t["is_valid_mask"] = valid[sel]
            per_find.append(t)
    if not per_find:
        raise DatasetError("the batch has no finds (every image has an empty 'find_categories')")
    targets = targets_to_find_packed(per_find, [tuple(pad_size)] * len(per_find))
    targets["is_exhaustive"] = torch.cat(exhaustive)
    if device is not None:
        targets = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in targets.items()}
    batch.targets = targets
    if device is not None:
        batch.image_index, batch.concepts = batch.image_index.to(device), batch.concepts.to(device)
    return batch
