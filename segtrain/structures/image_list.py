"""``ImageList``: images of different sizes padded into one batch tensor."""

import logging
from typing import List, Sequence, Tuple

import torch
from torch import Tensor

from segtrain.utils.errors import SegtrainError

__all__ = ["ImageList"]

logger = logging.getLogger(__name__)


class ImageList:
    """A padded batch ``tensor`` [B, C, Hp, Wp] plus each image's unpadded ``(h, w)``.

    Images sit in the top-left corner; padding is on the bottom and right, so a
    prediction is cropped back with ``[..., :h, :w]``.
    """

    def __init__(self, tensor: Tensor, image_sizes: List[Tuple[int, int]]):
        self.tensor = tensor
        self.image_sizes = image_sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> Tensor:
        """The unpadded image ``idx``: [C, h, w] (a view)."""
        h, w = self.image_sizes[idx]
        return self.tensor[idx, ..., :h, :w]

    def to(self, *args, **kwargs) -> "ImageList":
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    @staticmethod
    def from_tensors(tensors: Sequence[Tensor], size_divisibility: int = 0, pad_value: float = 0.0) -> "ImageList":
        """Pad ``tensors`` (each [..., h_i, w_i], same leading dims) to a common size.

        The size is the per-axis maximum, rounded up to a multiple of ``size_divisibility``
        when it is > 0. Returns an ImageList with ``tensor`` [B, ..., Hp, Wp].
        """
        if len(tensors) == 0:
            raise SegtrainError("ImageList.from_tensors: got an empty list of images")
        first = tensors[0]
        for t in tensors:
            if t.dim() != first.dim() or t.shape[:-2] != first.shape[:-2]:
                raise SegtrainError(
                    f"ImageList.from_tensors: images must share their leading dims; got {tuple(first.shape)} "
                    f"and {tuple(t.shape)}"
                )
        image_sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
        max_h = max(s[0] for s in image_sizes)
        max_w = max(s[1] for s in image_sizes)
        if size_divisibility > 1:
            stride = size_divisibility
            max_h = (max_h + stride - 1) // stride * stride
            max_w = (max_w + stride - 1) // stride * stride

        if len(tensors) == 1 and image_sizes[0] == (max_h, max_w):
            batched = first.unsqueeze(0)  # nothing to pad: a view, no copy
        else:
            batched = first.new_full((len(tensors),) + tuple(first.shape[:-2]) + (max_h, max_w), pad_value)
            for img, pad_img in zip(tensors, batched):
                pad_img[..., : img.shape[-2], : img.shape[-1]].copy_(img)
        return ImageList(batched.contiguous(), image_sizes)
