"""Pixel decoders (``PIXEL_DECODER_REGISTRY``): the generic FPN ``BasePixelDecoder``; families
register their own (Mask2Former's ``MSDeformAttnPixelDecoder``)."""

from .build import PIXEL_DECODER_REGISTRY, build_pixel_decoder
from .fpn import BasePixelDecoder, fpn_lateral_and_output_convs

__all__ = ["PIXEL_DECODER_REGISTRY", "build_pixel_decoder", "BasePixelDecoder", "fpn_lateral_and_output_convs"]
