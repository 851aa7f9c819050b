"""OpenCV augmentations (random, drawing parameters) and the deterministic transforms they return."""

from .augmentation import (
    Augmentation,
    ColorJitter,
    FixedSizeCrop,
    RandomAffine,
    RandomCrop,
    RandomFlip,
    RandomGrayscale,
    ResizeScale,
    ResizeShortestEdge,
    apply_augmentations,
)
from .build import build_augmentations
from .transform import (
    AffineTransform,
    ColorTransform,
    CropTransform,
    HFlipTransform,
    NoOpTransform,
    PadTransform,
    ResizeTransform,
    Transform,
    TransformList,
    VFlipTransform,
)

__all__ = [
    "Augmentation",
    "ColorJitter",
    "FixedSizeCrop",
    "RandomAffine",
    "RandomCrop",
    "RandomFlip",
    "RandomGrayscale",
    "ResizeScale",
    "ResizeShortestEdge",
    "apply_augmentations",
    "build_augmentations",
    "AffineTransform",
    "ColorTransform",
    "CropTransform",
    "HFlipTransform",
    "NoOpTransform",
    "PadTransform",
    "ResizeTransform",
    "Transform",
    "TransformList",
    "VFlipTransform",
]
