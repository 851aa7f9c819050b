"""Post-processing shared by meta-architectures: per-pixel outputs back to the original image size."""

from typing import Tuple

import torch.nn.functional as F
from torch import Tensor

__all__ = ["sem_seg_postprocess"]


def sem_seg_postprocess(result: Tensor, img_size: Tuple[int, int], output_height: int, output_width: int) -> Tensor:
    """Crop padded per-pixel predictions to the image and resize to the original size.

    result: [C, Hp, Wp] (anything per pixel, e.g. mask logits); img_size: (h, w) of the
    image inside the padding. Returns [C, output_height, output_width] (bilinear,
    align_corners False, as detectron2's function of the same name).
    """
    result = result[:, : img_size[0], : img_size[1]].unsqueeze(0)
    if (result.shape[-2], result.shape[-1]) != (output_height, output_width):
        result = F.interpolate(result, size=(output_height, output_width), mode="bilinear", align_corners=False)
    return result[0]
