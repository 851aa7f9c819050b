"""``META_ARCH_REGISTRY``, ``build_model`` and the pixel normalization shared by meta-architectures."""

from .build import META_ARCH_REGISTRY, build_model, resolve_device
from .pixel_normalizer import PixelNormalizer

__all__ = ["META_ARCH_REGISTRY", "build_model", "resolve_device", "PixelNormalizer"]
