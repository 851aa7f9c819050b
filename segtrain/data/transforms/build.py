"""``build_augmentations(cfg, is_train)``: the augmentation list from ``INPUT.*``."""

import logging
from typing import List

from segtrain.utils.errors import ConfigError

from .augmentation import (
    Augmentation,
    ColorJitter,
    FixedSizeCrop,
    RandomCrop,
    RandomFlip,
    ResizeScale,
    ResizeShortestEdge,
)

__all__ = ["build_augmentations"]

logger = logging.getLogger(__name__)

_FLIPS = ("horizontal", "vertical", "none")


def build_augmentations(cfg, is_train: bool) -> List[Augmentation]:
    """Training: [RandomCrop] + (ResizeShortestEdge | LSJ ResizeScale + FixedSizeCrop)
    + [RandomFlip] + [ColorJitter]. Test: ResizeShortestEdge(MIN_SIZE_TEST) only."""
    inp = cfg.INPUT
    if not is_train:
        if inp.MIN_SIZE_TEST <= 0:
            return []
        return [ResizeShortestEdge(inp.MIN_SIZE_TEST, inp.MAX_SIZE_TEST, "choice")]

    augs: List[Augmentation] = []
    flip = str(inp.RANDOM_FLIP).lower()
    if flip not in _FLIPS:
        raise ConfigError(f"INPUT.RANDOM_FLIP must be one of {', '.join(_FLIPS)}; got {inp.RANDOM_FLIP!r}")
    flip_aug = [] if flip == "none" else [RandomFlip(horizontal=flip == "horizontal", vertical=flip == "vertical")]

    if inp.LSJ.ENABLED:
        size = int(inp.LSJ.IMAGE_SIZE)
        augs += flip_aug
        augs.append(ResizeScale(inp.LSJ.MIN_SCALE, inp.LSJ.MAX_SCALE, size, size))
        augs.append(FixedSizeCrop((size, size)))
    else:
        if inp.CROP.ENABLED:
            augs.append(RandomCrop(inp.CROP.TYPE, inp.CROP.SIZE))
        min_size = inp.MIN_SIZE_TRAIN
        if isinstance(min_size, int):
            min_size = (min_size,)
        augs.append(ResizeShortestEdge(tuple(min_size), inp.MAX_SIZE_TRAIN, inp.MIN_SIZE_TRAIN_SAMPLING))
        augs += flip_aug
    if inp.COLOR_JITTER.ENABLED:
        cj = inp.COLOR_JITTER
        augs.append(ColorJitter(cj.BRIGHTNESS, cj.CONTRAST, cj.SATURATION))
    return augs
