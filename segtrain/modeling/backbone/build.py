"""BACKBONE registry and builder."""
from segtrain.utils.registry import Registry

__all__ = ["BACKBONE_REGISTRY"]

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """Backbones: `fn(cfg, input_shape) -> Backbone` or a class taking cfg; `output_shape()` gives {name: ShapeSpec}."""
