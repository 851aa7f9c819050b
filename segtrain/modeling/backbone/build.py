"""BACKBONE registry and builder."""
from typing import Optional

from segtrain.structures.shape_spec import ShapeSpec
from segtrain.utils.registry import Registry

__all__ = ["BACKBONE_REGISTRY", "build_backbone"]

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """Backbones: `fn(cfg, input_shape) -> Backbone` or a class taking cfg; `output_shape()` gives {name: ShapeSpec}."""


def build_backbone(cfg, input_shape: Optional[ShapeSpec] = None):
    """The backbone named by ``cfg.MODEL.BACKBONE.NAME``; ``input_shape`` defaults to
    ``ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))``."""
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    return BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg, input_shape)
