"""BACKBONE registry and builder."""

from typing import Optional

import torch

from segtrain.structures.shape_spec import ShapeSpec
from segtrain.utils.errors import ConfigError
from segtrain.utils.registry import Registry

__all__ = ["BACKBONE_REGISTRY", "build_backbone"]

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = (
    """Backbones: `fn(cfg, input_shape) -> Backbone` or a class taking cfg; `output_shape()` gives {name: ShapeSpec}."""
)


def build_backbone(cfg, input_shape: Optional[ShapeSpec] = None):
    """The backbone named by ``cfg.MODEL.BACKBONE.NAME``; ``input_shape`` defaults to
    ``ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))``. ``MODEL.COMPILE``: compiled in place."""
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    backbone = BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg, input_shape)
    if cfg.MODEL.get("COMPILE", False):
        compile_in_place(backbone, "MODEL.COMPILE")
    return backbone


def compile_in_place(module, key: str):
    """``torch.compile`` ``module``'s forward in place (``nn.Module.compile``): the module and its
    parameter names stay as they are, so checkpoints and optimizer groups are unaffected."""
    if not hasattr(module, "compile"):
        raise ConfigError(f"{key}: torch {torch.__version__} has no nn.Module.compile (needs torch >= 2.2)")
    module.compile()
    return module
