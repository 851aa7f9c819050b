"""Video family config: the SAM 2-style tracker (``MODEL.SAM2``) and the simple video
criterion (``MODEL.CRITERION.VIDEO_SIMPLE``).

Training-prompt defaults are the SAM 2.1 fine-tuning values; the network sizes are tiny
(SAM 2 uses a Hiera image encoder, d_model 256, 4 memory-attention layers) so that the
project configs train on a CPU. Clip sampling lives in ``INPUT.VIDEO``; the tracker's input
size is ``INPUT.VIDEO.IMAGE_SIZE``.
"""

from segtrain.config import CfgNode as CN
from segtrain.config import register_config_addition

__all__ = ["add_sam2_config"]


@register_config_addition
def add_sam2_config(cfg) -> None:
    """Add ``MODEL.SAM2`` and ``MODEL.CRITERION.VIDEO_SIMPLE`` (needs ``MODEL.CRITERION``)."""
    s = cfg.MODEL.SAM2 = CN()
    # Three backbone levels of strides s, 2s, 4s (finest first): the coarsest is the image
    # embedding, the two finer ones feed the mask decoder's upsampling
    s.IN_FEATURES = ["stage1", "stage2", "stage3"]
    # build_tiny_conv_backbone (MODEL.BACKBONE.NAME): channels and residual blocks per stride-2 stage
    s.TINY_BACKBONE = CN()
    s.TINY_BACKBONE.CHANNELS = [32, 64, 128]
    s.TINY_BACKBONE.BLOCKS = [1, 1, 2]
    # Width of the image embedding, prompt tokens, decoder and memory attention
    s.D_MODEL = 64
    # Width of the memory maps (SAM 2: 64); D_MODEL must be a multiple (object pointers are split)
    s.MEM_DIM = 64
    # Memories attended to: the conditioning frames + the NUM_MASKMEM - 1 previous frames
    s.NUM_MASKMEM = 7
    # Object pointers (decoder output tokens) of past frames as extra memory tokens
    s.USE_OBJ_PTRS = True
    s.MAX_OBJ_PTRS = 16
    s.MEMORY_ATTENTION = CN()
    s.MEMORY_ATTENTION.NUM_LAYERS = 2
    s.MEMORY_ATTENTION.NUM_HEADS = 1
    s.MEMORY_ATTENTION.DIM_FEEDFORWARD = 256
    # Not in SAM 2: a learnable "objects stay near where they were" bias on the memory
    # cross-attention logits (-scale * squared token distance); helps training from scratch
    s.MEMORY_ATTENTION.LOCALITY_BIAS = False
    s.MEMORY_ENCODER = CN()
    s.MEMORY_ENCODER.NUM_FUSER_LAYERS = 2
    s.PROMPT_ENCODER = CN()
    s.PROMPT_ENCODER.MASK_IN_CHANS = 16
    s.MASK_DECODER = CN()
    s.MASK_DECODER.DEPTH = 2
    s.MASK_DECODER.NUM_HEADS = 4
    s.MASK_DECODER.MLP_DIM = 256
    s.MASK_DECODER.NUM_MULTIMASK_OUTPUTS = 3
    s.MASK_DECODER.IOU_HEAD_DEPTH = 3
    s.MASK_DECODER.IOU_HEAD_HIDDEN_DIM = 64
    s.MASK_DECODER.USE_HIGH_RES_FEATURES = True
    # SAM 2 squashes predicted IoUs with a sigmoid; from scratch with the L1 IoU loss the
    # sigmoid can saturate near 0 early on (most masks have IoU 0) and never recover
    s.MASK_DECODER.IOU_PREDICTION_USE_SIGMOID = True
    # Object-score head; masks of frames scored "no object" are set to -1024 (SAM 2)
    s.MASK_DECODER.PRED_OBJ_SCORES = True
    s.MASK_DECODER.PRED_OBJ_SCORES_MLP = True
    # Mask probabilities enter the memory encoder as sigmoid(x) * SCALE + BIAS
    s.SIGMOID_SCALE_FOR_MEM_ENC = 20.0
    s.SIGMOID_BIAS_FOR_MEM_ENC = -10.0
    # 3 masks when a prompt has MIN..MAX points (a box counts 2), and on tracked frames
    s.MULTIMASK_OUTPUT = True
    s.MULTIMASK_MIN_PT_NUM = 0
    s.MULTIMASK_MAX_PT_NUM = 1
    s.MULTIMASK_OUTPUT_FOR_TRACKING = True
    # A mask prompt is the output itself (logits +-10), the decoder only gives the object pointer
    s.USE_MASK_INPUT_AS_OUTPUT = True
    # Corrective clicks also feed the previous step's mask logits to the prompt encoder
    s.ITER_USE_PREV_MASK_PRED = True
    # Not in SAM 2: on tracked frames, also give the decoder the previous frame's mask logits
    # as a mask prompt (a strong "it is where it was" prior for models trained from scratch)
    s.PREV_MASK_AS_PROMPT_FOR_TRACKING = False

    # Training prompts (SAM 2.1 fine-tuning values)
    s.TRAIN = CN()
    s.TRAIN.PROB_TO_USE_PT_INPUT = 0.5
    s.TRAIN.PROB_TO_USE_BOX_INPUT = 0.5
    s.TRAIN.NUM_INIT_COND_FRAMES = 2
    s.TRAIN.RAND_INIT_COND_FRAMES = True
    s.TRAIN.NUM_FRAMES_TO_CORRECT = 2
    s.TRAIN.RAND_FRAMES_TO_CORRECT = True
    s.TRAIN.NUM_CORRECTION_POINTS = 7
    s.TRAIN.PROB_TO_SAMPLE_FROM_GT = 0.1
    s.TRAIN.ADD_ALL_FRAMES_TO_CORRECT_AS_COND = True
    # Box prompts: corners moved by up to BOX_NOISE x the box side, at most BOX_NOISE_BOUND px
    s.TRAIN.BOX_NOISE = 0.1
    s.TRAIN.BOX_NOISE_BOUND = 20

    # Evaluation: each object is prompted on the first frame it is visible in, with its GT
    # "mask" (semi-supervised VOS, DAVIS protocol), its "box" or one "point" (centre click)
    s.TEST = CN()
    s.TEST.PROMPT = "mask"
    # More prompt kinds to evaluate as well, each reported as video_<kind>/J&F etc.
    # (best-checkpoint and early stopping read the PROMPT ones, video/...)
    s.TEST.EXTRA_PROMPTS = ()

    # Seed-001 video loss: BCE (loss_mask), dice, soft IoU, temporal consistency
    v = cfg.MODEL.CRITERION.VIDEO_SIMPLE = CN()
    v.WEIGHT_DICT = CN({"loss_mask": 1.0, "loss_dice": 1.0, "loss_iou": 0.5, "loss_temporal": 0.1})
    v.SMOOTH = 1e-6
