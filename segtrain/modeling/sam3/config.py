"""SAM 3 family config: ``MODEL.SAM3`` (the sizes of the official SAM 3 image model,
``Sam3Image``, and its evaluation thresholds). How an instance dataset becomes finds, the
concept vocabulary included, is ``INPUT.FIND`` (``segtrain.data.find``). Loss weights and
matcher costs are NOT here: they belong to the criterion (``MODEL.CRITERION.SAM3``,
``MODEL.MATCHER``; ``segtrain/modeling/criterion/config.py``).
"""

from segtrain.config import CfgNode as CN
from segtrain.config import register_config_addition

__all__ = ["add_sam3_config"]


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
