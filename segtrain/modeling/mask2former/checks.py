"""Start-up checks of the Mask2Former keys: pixel decoder and transformer decoder names, and
the number of classes against the datasets."""

from typing import List

from segtrain.config.checks import register_name_key, register_num_classes_key
from segtrain.modeling.pixel_decoder.build import PIXEL_DECODER_REGISTRY

from .transformer_decoder.build import TRANSFORMER_DECODER_REGISTRY

__all__: List[str] = []

register_name_key(
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "PIXEL_DECODER", lambda: sorted(PIXEL_DECODER_REGISTRY.names())
)
register_name_key(
    "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME",
    "TRANSFORMER_DECODER",
    lambda: sorted(TRANSFORMER_DECODER_REGISTRY.names()),
)
register_num_classes_key("MaskFormer", "MODEL.SEM_SEG_HEAD.NUM_CLASSES")
