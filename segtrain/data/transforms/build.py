"""``build_augmentations(cfg, is_train)``: the augmentation list from ``INPUT.*``."""

import logging
import math
from typing import List

from segtrain.utils.errors import ConfigError

from .augmentation import (
    Augmentation,
    ColorJitter,
    FixedSizeCrop,
    RandomCrop,
    RandomFlip,
    RandomPadToSize,
    RandomSquareResize,
    ResizeScale,
    ResizeShortestEdge,
)

__all__ = ["build_augmentations", "square_resize_sizes"]

logger = logging.getLogger(__name__)

_FLIPS = ("horizontal", "vertical", "none")


def square_resize_sizes(square) -> List[int]:
    """The sizes ``INPUT.SQUARE_RESIZE`` draws from: multiples of ``STEP`` from ``MIN_SIZE``
    (rounded up) to ``MAX_SIZE``, as SAM 3's ``get_random_resize_scales`` (480..992 for
    480 / 1008 / 32)."""
    step, lo, hi = int(square.STEP), int(square.MIN_SIZE), int(square.MAX_SIZE)
    if step <= 0 or lo <= 0 or hi < lo:
        raise ConfigError(
            f"INPUT.SQUARE_RESIZE needs STEP > 0 and 0 < MIN_SIZE <= MAX_SIZE; got STEP {step}, "
            f"MIN_SIZE {lo}, MAX_SIZE {hi}"
        )
    first = step * math.ceil(lo / step)
    sizes = list(range(first, hi + 1, step))
    if not sizes:
        raise ConfigError(f"INPUT.SQUARE_RESIZE: no multiple of STEP {step} between MIN_SIZE {lo} and MAX_SIZE {hi}")
    return sizes


def _square_resize(inp, is_train: bool) -> List[Augmentation]:
    sq = inp.SQUARE_RESIZE
    if not is_train:
        return [RandomSquareResize((int(sq.MAX_SIZE),))]
    augs: List[Augmentation] = [RandomSquareResize(square_resize_sizes(sq))]
    if int(sq.PAD_SIZE) > 0:
        if int(sq.PAD_SIZE) < int(sq.MAX_SIZE):
            raise ConfigError(
                f"INPUT.SQUARE_RESIZE.PAD_SIZE {sq.PAD_SIZE} is below MAX_SIZE {sq.MAX_SIZE}: images would not fit"
            )
        augs.append(RandomPadToSize(int(sq.PAD_SIZE), float(sq.PAD_VALUE)))
    return augs


def build_augmentations(cfg, is_train: bool) -> List[Augmentation]:
    """Training: [RandomCrop] + (ResizeShortestEdge | LSJ ResizeScale + FixedSizeCrop |
    SQUARE_RESIZE) + [RandomFlip] + [ColorJitter]. Test: ResizeShortestEdge(MIN_SIZE_TEST),
    or with ``INPUT.SQUARE_RESIZE`` a square resize to its ``MAX_SIZE`` (SAM 3's evaluation)."""
    inp = cfg.INPUT
    if inp.SQUARE_RESIZE.ENABLED and inp.LSJ.ENABLED:
        raise ConfigError("INPUT.SQUARE_RESIZE.ENABLED and INPUT.LSJ.ENABLED are both True; choose one resize")
    if not is_train:
        if inp.SQUARE_RESIZE.ENABLED:
            return _square_resize(inp, is_train)
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
    elif inp.SQUARE_RESIZE.ENABLED:
        augs += _square_resize(inp, is_train) + flip_aug
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
