"""Instance targets of a batch packed into one tensor each (``PackedInstanceTargets``): the form
the batched Mask2Former matcher and criterion read, built once per batch."""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from segtrain.utils.errors import DatasetError

__all__ = ["PackedInstanceTargets", "pack_instance_targets"]


@dataclass
class PackedInstanceTargets:
    """Per-image instance targets concatenated over the batch (G = total GT masks).

    labels: [G] int64; masks: [G, H, W] float32 (zero-padded to the batch's largest
    H, W); sizes: n_b per image; offsets: first row of each image in the packed rows.
    """

    labels: Tensor
    masks: Optional[Tensor]
    sizes: List[int]
    offsets: List[int]

    @property
    def batch_size(self) -> int:
        return len(self.sizes)

    @property
    def num_masks(self) -> int:
        return int(sum(self.sizes))

    def _rows(self, device) -> Tuple[Tensor, Tensor]:
        """(image, position in its image) of every packed row: [G] int64 each, on ``device``.
        Built on the host from ``sizes`` and copied without waiting (no device sync), once
        per device."""
        cache = self.__dict__.setdefault("_rows_cache", {})
        key = str(device)
        if key not in cache:
            b = torch.repeat_interleave(torch.arange(len(self.sizes)), torch.as_tensor(self.sizes, dtype=torch.int64))
            j = torch.arange(int(b.numel())) - torch.as_tensor(self.offsets, dtype=torch.int64)[b]
            cache[key] = (b.to(device, non_blocking=True), j.to(device, non_blocking=True))
        return cache[key]

    def image_index(self) -> Tensor:
        """[G] int64: the image each packed row belongs to (on the labels' device)."""
        return self._rows(self.labels.device)[0]

    def padded(self, values: Tensor, fill: float = 0) -> Tensor:
        """[G, ...] rows -> [B, max n_b, ...], ``fill`` in the padding."""
        maxn = max(self.sizes) if self.sizes else 0
        out = values.new_full((len(self.sizes), maxn) + tuple(values.shape[1:]), fill)
        if values.shape[0]:
            b, j = self._rows(values.device)
            out[b, j] = values
        return out


def pack_instance_targets(targets, device=None, need_masks: bool = True) -> PackedInstanceTargets:
    """Pack a list of B dicts ``{"labels": [n_b] int64, "masks": [n_b, H, W]}``.

    Masks of different sizes are zero-padded at the bottom/right to the largest
    (as Mask2Former's ``nested_tensor_from_tensor_list``) and converted to float32
    once for the whole batch. An already packed object is returned unchanged.
    """
    if isinstance(targets, PackedInstanceTargets):
        return targets
    labels, masks, sizes = [], [], []
    for b, t in enumerate(targets):
        if "labels" not in t:
            raise DatasetError(f"target {b} has no 'labels'; keys: {sorted(t)}")
        lab = torch.as_tensor(t["labels"]).reshape(-1).long()
        labels.append(lab)
        sizes.append(int(lab.numel()))
        if need_masks:
            if "masks" not in t:
                raise DatasetError(f"target {b} has no 'masks'; keys: {sorted(t)}")
            m = torch.as_tensor(t["masks"])
            if m.dim() != 3 or m.shape[0] != lab.numel():
                raise DatasetError(
                    f"target {b}: 'masks' must be [n, H, W] with n = len(labels) = {lab.numel()}, "
                    f"got shape {tuple(m.shape)}"
                )
            masks.append(m)
    if device is None:
        device = labels[0].device if labels else torch.device("cpu")
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int).tolist() if sizes else []
    packed_labels = torch.cat(labels).to(device) if labels else torch.zeros(0, dtype=torch.long, device=device)
    packed_masks = None
    if need_masks and masks:
        H = max(m.shape[-2] for m in masks)
        W = max(m.shape[-1] for m in masks)
        if all(m.shape[-2:] == (H, W) for m in masks):
            packed_masks = torch.cat([m.to(device) for m in masks]).to(torch.float32)
        else:
            packed_masks = torch.zeros((sum(sizes), H, W), dtype=torch.float32, device=device)
            for m, o in zip(masks, offsets):
                packed_masks[o : o + m.shape[0], : m.shape[1], : m.shape[2]] = m.to(device)
    return PackedInstanceTargets(packed_labels, packed_masks, sizes, offsets)
