"""Models: registries and every built-in component (importing registers them)."""
from . import backbone, criterion, matcher, meta_arch, pixel_decoder, transformer_decoder  # noqa: F401
from .meta_arch.build import META_ARCH_REGISTRY, build_model  # noqa: F401
