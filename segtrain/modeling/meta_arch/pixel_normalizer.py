"""Input normalization shared by the meta-architectures."""

from typing import Any, Dict, List, Sequence

import torch
from torch import Tensor

from segtrain.structures.image_list import ImageList

__all__ = ["PixelNormalizer"]


class PixelNormalizer:
    """Mixin for an ``nn.Module`` meta-arch: ``pixel_mean`` / ``pixel_std`` buffers [C, 1, 1]
    (not saved in checkpoints), the model's ``device``, and image normalization. Call
    :meth:`register_pixel_stats` in ``__init__``; :meth:`preprocess_image` also needs
    ``self.size_divisibility``."""

    def register_pixel_stats(self, pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> None:
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize(self, images: Tensor) -> Tensor:
        """``(images - mean) / std`` in float32 on the model's device; images [..., C, H, W]."""
        return (images.to(self.device, non_blocking=True).float() - self.pixel_mean) / self.pixel_std

    def preprocess_image(self, batched_inputs: List[Dict[str, Any]]) -> ImageList:
        """Normalize each image (uint8 [3, H, W] RGB) and pad the batch (zeros = the mean colour)."""
        return ImageList.from_tensors([self.normalize(x["image"]) for x in batched_inputs], self.size_divisibility)
