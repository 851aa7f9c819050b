"""PIXEL_DECODER registry and builder."""
from segtrain.utils.registry import Registry

__all__ = ["PIXEL_DECODER_REGISTRY"]

PIXEL_DECODER_REGISTRY = Registry("PIXEL_DECODER")
PIXEL_DECODER_REGISTRY.__doc__ = """Pixel decoders: class(cfg, input_shape) -> module whose forward_features(features) gives (mask_features, transformer_encoder_features, multi_scale_features)."""
