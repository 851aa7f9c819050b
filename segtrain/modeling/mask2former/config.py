"""Mask2Former family config (``MODEL.SEM_SEG_HEAD``, ``MODEL.MASK_FORMER``).

Defaults are the official ``add_maskformer2_config`` values (Mask2Former repository,
``mask2former/config.py``) except where a comment says otherwise. Loss weights, matcher
costs and point-sampling settings are NOT here: in segtrain they belong to the criterion
(``MODEL.CRITERION.SET_CRITERION``, ``MODEL.MATCHER.HUNGARIAN``; see
``segtrain/modeling/criterion/config.py``), so a criterion can be swapped without touching this node.
"""

from segtrain.config import CfgNode as CN
from segtrain.config import register_config_addition

__all__ = ["add_maskformer_config"]


@register_config_addition
def add_maskformer_config(cfg) -> None:
    """Add ``MODEL.SEM_SEG_HEAD`` and ``MODEL.MASK_FORMER`` with their official defaults."""
    # ------------------------------------------------------------------ head
    cfg.MODEL.SEM_SEG_HEAD = CN()
    # Only "MaskFormerHead" (pixel decoder + transformer predictor) exists
    cfg.MODEL.SEM_SEG_HEAD.NAME = "MaskFormerHead"
    # Number of classes K; predictions have K + 1 logits (index K = "no object")
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 80
    # Category id ignored by semantic-segmentation targets
    cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE = 255
    # Kept for config compatibility with official YAMLs; the criterion's weights decide the loss
    cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 1.0

    # >>> pixel decoder keys (owned by the backbone / pixel-decoder engineer) >>>
    # PIXEL_DECODER registry name: "MSDeformAttnPixelDecoder" (Mask2Former) or
    # "BasePixelDecoder" (plain FPN, for small configs)
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "MSDeformAttnPixelDecoder"
    # Backbone features the pixel decoder reads (finest to coarsest)
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    # Channels of the pixel decoder's intermediate maps (and of multi_scale_features)
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 256
    # Channels of mask_features (dotted with the query embeddings)
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 256
    # Norm of the FPN convs: "GN", "BN", "SyncBN", "FrozenBN" or ""
    cfg.MODEL.SEM_SEG_HEAD.NORM = "GN"
    # Output stride of mask_features
    cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE = 4
    # Deformable-attention encoder layers in MSDeformAttnPixelDecoder
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 6
    # Features the deformable encoder attends over (the rest are merged FPN-style)
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = ["res3", "res4", "res5"]
    # Sampling points per head and level
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS = 4
    # FFN width of the deformable encoder (segtrain key: the official code hard-codes 1024
    # here; MASK_FORMER.DIM_FEEDFORWARD is the transformer decoder's)
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 1024
    # (the encoder's heads and dropout are MASK_FORMER.NHEADS and MASK_FORMER.DROPOUT, as official)
    # <<< pixel decoder keys <<<

    # ------------------------------------------------------------------ transformer decoder
    cfg.MODEL.MASK_FORMER = CN()
    # TRANSFORMER_DECODER registry name
    cfg.MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME = "MultiScaleMaskedTransformerDecoder"
    # What the predictor reads: "multi_scale_pixel_decoder" (Mask2Former: 3 pixel-decoder
    # scales), "transformer_encoder", "pixel_embedding", or a backbone feature name
    cfg.MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE = "multi_scale_pixel_decoder"
    # Hand the intermediate predictions (aux_outputs) to the criterion in training; when
    # False they are dropped, so no criterion computes aux losses
    cfg.MODEL.MASK_FORMER.DEEP_SUPERVISION = True
    cfg.MODEL.MASK_FORMER.NHEADS = 8
    # Dropout of the pixel decoder's transformer encoder (the masked decoder uses none);
    # official default 0.1, the Mask2Former configs set 0.0
    cfg.MODEL.MASK_FORMER.DROPOUT = 0.1
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 2048
    cfg.MODEL.MASK_FORMER.ENC_LAYERS = 0
    # Official semantics: the number of PREDICTIONS (learnable queries' own prediction +
    # one per layer), i.e. DEC_LAYERS - 1 transformer layers. 10 = 9 layers, 9 aux outputs.
    cfg.MODEL.MASK_FORMER.DEC_LAYERS = 10
    # Pre-LayerNorm layers (official Mask2Former: post-norm)
    cfg.MODEL.MASK_FORMER.PRE_NORM = False
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = 256
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 100
    # Add the 1x1 input projections even when the pixel decoder already has HIDDEN_DIM channels
    cfg.MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ = False
    # Pad the batch to a multiple of this (< 0: the backbone's size_divisibility)
    cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY = 32
    # segtrain addition, off in the official model: a box per query (pred_boxes, normalized
    # cxcywh, in every output incl. aux), for box-supervised criteria such as Sam3LossWrapper
    cfg.MODEL.MASK_FORMER.BOX_HEAD = False

    # ------------------------------------------------------------------ inference
    cfg.MODEL.MASK_FORMER.TEST = CN()
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = True
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = False
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = False
    # Panoptic: drop queries whose class score is not above this
    cfg.MODEL.MASK_FORMER.TEST.OBJECT_MASK_THRESHOLD = 0.0
    # Panoptic: drop a segment keeping less than this fraction of its own mask
    cfg.MODEL.MASK_FORMER.TEST.OVERLAP_THRESHOLD = 0.0
    # Resize mask logits to the original size before semantic inference (always the case
    # when INSTANCE_ON or PANOPTIC_ON); False is cheaper on large images
    cfg.MODEL.MASK_FORMER.TEST.SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE = False
