"""SAM 3 family config: ``MODEL.CONCEPT`` (the SAM 3-style ``ConceptDetector``) and
``MODEL.SAM3`` (the official SAM 3 image model, ``Sam3Image``).

``MODEL.CONCEPT`` shapes the ``ConceptDetector`` meta-architecture (backbone from
``MODEL.BACKBONE`` / ``MODEL.RESNETS``, an FPN pixel decoder, a fusion encoder, a DETR-style
decoder with a presence token); how an instance dataset becomes finds is ``INPUT.FIND``
(``segtrain.data.find``). Loss weights and matcher costs are NOT here: they
belong to the criterion (``MODEL.CRITERION.SAM3``, ``MODEL.MATCHER``; ``segtrain/modeling/criterion/config.py``).
Defaults follow SAM 3's detector where a value carries over (200 queries, 6 encoder and
6 decoder layers, width 256, presence token); the project configs shrink them for CPU runs.
"""

from segtrain.config import CfgNode as CN
from segtrain.config import register_config_addition

__all__ = ["add_concept_config", "add_sam3_config"]


@register_config_addition
def add_concept_config(cfg) -> None:
    """Add ``MODEL.CONCEPT`` with its defaults."""
    c = cfg.MODEL.CONCEPT = CN()
    # Size K of the concept vocabulary: a find's prompt is a category id in [0, K)
    c.NUM_CONCEPTS = 80
    # Learned prompt tokens per concept (the "text" tokens the encoder and decoder attend to)
    c.PROMPT_TOKENS = 2
    c.HIDDEN_DIM = 256
    c.NHEADS = 8
    c.DIM_FEEDFORWARD = 2048
    c.DROPOUT = 0.0
    # Fusion encoder layers (image self-attention, cross-attention to the prompt, FFN)
    c.ENC_LAYERS = 6
    # Decoder layers; every layer gives one prediction (the last is the main output, the
    # others are aux_outputs)
    c.DEC_LAYERS = 6
    # One-to-one queries Q
    c.NUM_QUERIES = 200
    # One-to-many queries (0 = none): a separate query group, hidden from the one-to-one
    # queries in self-attention, whose outputs are the ``*_o2m`` keys
    c.NUM_O2M_QUERIES = 0
    # Presence token in the decoder -> presence_logit_dec [B, 1]
    c.PRESENCE_TOKEN = True
    # Two-stage: encoder tokens propose boxes (``first_stage`` output, supervised as an aux
    # output) and the top-Q proposals initialize the decoder's reference boxes
    c.TWO_STAGE = False
    # Backbone features the pixel decoder (BasePixelDecoder FPN) reads, finest to coarsest
    c.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    c.CONVS_DIM = 256
    c.MASK_DIM = 256
    # Norm of the FPN convs: "GN", "BN", "FrozenBN" or ""
    c.NORM = "GN"
    # Stride of the FPN level the fusion encoder reads: 8, 16 or 32
    c.ENCODER_STRIDE = 16
    # Pad the image batch to a multiple of this (< 0: the backbone's size_divisibility)
    c.SIZE_DIVISIBILITY = 32

    c.TEST = CN()
    # A detection is kept when presence probability x query probability exceeds this
    c.TEST.SCORE_THRESHOLD = 0.05
    # Mask probability threshold for the binary masks
    c.TEST.MASK_THRESHOLD = 0.5
    # At most this many detections per find (highest scores first)
    c.TEST.MAX_DETS_PER_FIND = 100


@register_config_addition
def add_sam3_config(cfg) -> None:
    """Add ``MODEL.SAM3``: the sizes of the official SAM 3 image model (``Sam3Image``); the
    defaults are the released model's, so small presets are the same model with smaller numbers."""
    s = cfg.MODEL.SAM3 = CN()
    # Input side (square; the released model: 1008 px, patch 14 -> a 72 x 72 token grid)
    s.IMAGE_SIZE = 1008
    s.PATCH_SIZE = 14
    s.VIT = CN()
    s.VIT.EMBED_DIM = 1024
    s.VIT.DEPTH = 32
    s.VIT.NUM_HEADS = 16
    s.VIT.MLP_RATIO = 4.625
    # Windowed attention everywhere except these blocks (global attention)
    s.VIT.GLOBAL_ATT_BLOCKS = [7, 15, 23, 31]
    s.VIT.WINDOW_SIZE = 24
    # The absolute position table is this size / PATCH_SIZE squared (plus a class slot), tiled
    s.VIT.PRETRAIN_IMG_SIZE = 336
    s.VIT.DROP_PATH_RATE = 0.1
    s.TEXT = CN()
    s.TEXT.WIDTH = 1024
    s.TEXT.HEADS = 16
    s.TEXT.LAYERS = 24
    # Tokens per prompt (start and end tokens included; longer prompts are cut)
    s.TEXT.CONTEXT_LENGTH = 32
    # BPE vocabulary file; "" = the one shipped with segtrain
    s.TEXT.BPE_PATH = ""
    # Width of the prompt tokens, the fusion encoder, the decoder and the heads
    s.D_MODEL = 256
    s.NUM_HEADS = 8
    s.DIM_FEEDFORWARD = 2048
    s.DROPOUT = 0.1
    s.ENCODER = CN()
    s.ENCODER.NUM_LAYERS = 6
    s.DECODER = CN()
    s.DECODER.NUM_LAYERS = 6
    s.DECODER.NUM_QUERIES = 200
    s.GEOMETRY = CN()
    s.GEOMETRY.NUM_LAYERS = 3
    # Recompute activations in the backward pass (ViT blocks, text layers, encoder, decoder)
    s.USE_ACT_CHECKPOINT = True
    # False: no segmentation head (boxes only, the official RF100 / ODinW recipes); the "Masks"
    # loss of MODEL.CRITERION.SAM3.LOSS_FNS is then not built, and a checkpoint's
    # segmentation_head.* tensors are set aside
    s.ENABLE_SEGMENTATION = True
    s.TEST = CN()
    # Sam3Processor's confidence threshold on query probability x presence probability
    s.TEST.CONFIDENCE_THRESHOLD = 0.5
    # Evaluation on dataset finds: detections kept above this score (presence x query
    # probability), at most MAX_DETS_PER_FIND per find, masks at probability MASK_THRESHOLD
    s.TEST.SCORE_THRESHOLD = 0.0
    s.TEST.MASK_THRESHOLD = 0.5
    s.TEST.MAX_DETS_PER_FIND = 100
