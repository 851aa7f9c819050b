"""Models: the registries and ``build_model``, the shared backbone and pixel decoder, the
shared loss library (``criterion``, ``matcher``) and one package per family (``mask2former``,
``sam2``, ``sam3``). Importing this package registers every built-in component, config node
and start-up check.

As in Detectron2: ``from segtrain.modeling import META_ARCH_REGISTRY, BACKBONE_REGISTRY,
CRITERION_REGISTRY, MATCHER_REGISTRY, build_model``.
"""

from . import backbone, criterion, mask2former, matcher, meta_arch, pixel_decoder, sam2, sam3  # noqa: F401  (the shared parts first)  # noqa: F401  (families register themselves)
from . import checks as _checks  # noqa: F401  (registers the model keys' start-up checks)
from .backbone import BACKBONE_REGISTRY, Backbone, build_backbone
from .criterion import CORE_LOSS_KEY, CRITERION_REGISTRY, build_criterion
from .mask2former import MaskFormer
from .matcher import MATCHER_REGISTRY, build_matcher
from .meta_arch import META_ARCH_REGISTRY, build_model
from .pixel_decoder import PIXEL_DECODER_REGISTRY, build_pixel_decoder
from .sam2 import VideoTracker
from .sam3 import Sam3Image

__all__ = [
    "META_ARCH_REGISTRY",
    "BACKBONE_REGISTRY",
    "CRITERION_REGISTRY",
    "MATCHER_REGISTRY",
    "PIXEL_DECODER_REGISTRY",
    "CORE_LOSS_KEY",
    "build_model",
    "build_backbone",
    "build_criterion",
    "build_matcher",
    "build_pixel_decoder",
    "Backbone",
    "MaskFormer",
    "VideoTracker",
    "Sam3Image",
]
