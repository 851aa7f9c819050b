"""Mask2Former: the ``MaskFormer`` meta-architecture, its head (pixel decoder + masked-attention
transformer decoder) and its config node (``MODEL.SEM_SEG_HEAD``, ``MODEL.MASK_FORMER``).
Importing this package registers them."""

from . import checks as _checks  # noqa: F401  (registers the family's start-up checks)
from .config import add_maskformer_config
from .mask_former_head import MaskFormerHead, build_sem_seg_head
from .maskformer_model import MaskFormer
from .msdeformattn import MSDeformAttnPixelDecoder
from .transformer_decoder import TRANSFORMER_DECODER_REGISTRY, MultiScaleMaskedTransformerDecoder

__all__ = [
    "MaskFormer",
    "MaskFormerHead",
    "build_sem_seg_head",
    "MSDeformAttnPixelDecoder",
    "TRANSFORMER_DECODER_REGISTRY",
    "MultiScaleMaskedTransformerDecoder",
    "add_maskformer_config",
]
