"""PIXEL_DECODER registry and builder."""

from typing import Dict

from segtrain.structures.shape_spec import ShapeSpec
from segtrain.utils.errors import ConfigError
from segtrain.utils.registry import Registry

__all__ = ["PIXEL_DECODER_REGISTRY", "build_pixel_decoder"]

PIXEL_DECODER_REGISTRY = Registry("PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = """Pixel decoders: class(cfg, input_shape) -> module whose forward_features(features)
gives (mask_features, transformer_encoder_features, multi_scale_features)."""


def build_pixel_decoder(cfg, input_shape: Dict[str, ShapeSpec]):
    """The pixel decoder named by ``cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME``, built on the
    backbone's ``output_shape()``."""
    name = cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME
    model = PIXEL_DECODER_REGISTRY.get(name)(cfg, input_shape)
    if not callable(getattr(model, "forward_features", None)):
        raise ConfigError(f"pixel decoder {name!r} has no forward_features(features) method")
    return model
