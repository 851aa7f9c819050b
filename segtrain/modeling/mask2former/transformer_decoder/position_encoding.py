"""``PositionEmbeddingSine`` at the official Mask2Former import path
(``...transformer_decoder.position_encoding``); the implementation lives in ``segtrain.layers``."""

from segtrain.layers.position_encoding import PositionEmbeddingSine

__all__ = ["PositionEmbeddingSine"]
