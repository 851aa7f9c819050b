"""Transformer decoders (importing this package registers them)."""

from .build import *  # noqa
from .mask2former_transformer_decoder import MultiScaleMaskedTransformerDecoder  # noqa: F401
