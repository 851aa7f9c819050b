"""SAM 2 family config: the SAM 2.1 model (``MODEL.SAM2``) and the simple video criterion
(``MODEL.CRITERION.VIDEO_SIMPLE``).

Every option of the official ``sam2.1_hiera_{t,s,b+,l}.yaml`` configs is a key here, with the
official default (the tiny model's sizes); the official name of each is in its comment
where the key name differs. A few keys are not in SAM 2: switches for training small models
from scratch on a CPU (``projects/sam2/sam2.1_tiny.yaml``), each documented at its key and off
by default. The training-prompt defaults are the SAM 2.1 fine-tuning values.
"""

from segtrain.config import CfgNode as CN
from segtrain.config import register_config_addition

__all__ = ["add_sam2_config"]


@register_config_addition
def add_sam2_config(cfg) -> None:
    """Add ``MODEL.SAM2`` and ``MODEL.CRITERION.VIDEO_SIMPLE`` (needs ``MODEL.CRITERION``)."""
    s = cfg.MODEL.SAM2 = CN()
    # Square model input (official image_size); frames are resized to it
    # (INPUT.VIDEO.IMAGE_SIZE must be equal when training or evaluating on video clips)
    s.IMAGE_SIZE = 1024
    # Width of the image embedding, prompt tokens, decoder and memory attention (neck d_model)
    s.D_MODEL = 256
    # Width of the memory maps (memory_encoder.out_dim); also the memory attention's kv_in_dim
    s.MEM_DIM = 64

    # image_encoder.trunk: "Hiera" (SAM 2), or "TinyConv" (not in SAM 2: a few conv stages
    # with GroupNorm, MODEL.SAM2.TINY_BACKBONE, that train from scratch in minutes on a CPU)
    s.TRUNK = CN()
    s.TRUNK.NAME = "Hiera"
    s.TRUNK.EMBED_DIM = 96
    s.TRUNK.NUM_HEADS = 1
    s.TRUNK.DROP_PATH_RATE = 0.0
    s.TRUNK.Q_POOL = 3
    s.TRUNK.Q_STRIDE = [2, 2]
    s.TRUNK.STAGES = [1, 2, 7, 2]
    s.TRUNK.DIM_MUL = 2.0
    s.TRUNK.HEAD_MUL = 2.0
    s.TRUNK.WINDOW_POS_EMBED_BKG_SPATIAL_SIZE = [7, 7]
    s.TRUNK.WINDOW_SPEC = [8, 4, 14, 7]
    s.TRUNK.GLOBAL_ATT_BLOCKS = [5, 7, 9]
    # TinyConv trunk: channels and residual blocks per stride-2 stage (strides 2, 4, 8, ...)
    s.TINY_BACKBONE = CN()
    s.TINY_BACKBONE.CHANNELS = [32, 64, 128]
    s.TINY_BACKBONE.BLOCKS = [1, 1, 2]
    # image_encoder.neck (FpnNeck; backbone_channel_list is the trunk's channel_list) and
    # image_encoder.scalp (coarsest levels dropped). The neck's outputs after the scalp must be
    # 3 levels of strides s, 2s, 4s: the coarsest is the image embedding, the two finer ones
    # the mask decoder's high-resolution features
    s.NECK = CN()
    s.NECK.KERNEL_SIZE = 1
    s.NECK.STRIDE = 1
    s.NECK.PADDING = 0
    s.NECK.FPN_INTERP_MODEL = "nearest"
    s.NECK.FUSE_TYPE = "sum"
    s.NECK.FPN_TOP_DOWN_LEVELS = [2, 3]
    s.NECK.SCALP = 1
    # PositionEmbeddingSine of the neck (num_pos_feats = D_MODEL) and the memory encoder
    # (num_pos_feats = MEM_DIM); normalize=True, scale=None (2 pi) in SAM 2.1
    s.POSITION_ENCODING_TEMPERATURE = 10000.0

    # memory_attention: NUM_LAYERS copies of a layer with RoPE self- and cross-attention
    s.MEMORY_ATTENTION = CN()
    s.MEMORY_ATTENTION.NUM_LAYERS = 4
    s.MEMORY_ATTENTION.POS_ENC_AT_INPUT = True
    s.MEMORY_ATTENTION.ACTIVATION = "relu"
    s.MEMORY_ATTENTION.DIM_FEEDFORWARD = 2048
    s.MEMORY_ATTENTION.DROPOUT = 0.1
    s.MEMORY_ATTENTION.POS_ENC_AT_ATTN = False
    s.MEMORY_ATTENTION.POS_ENC_AT_CROSS_ATTN_KEYS = True
    s.MEMORY_ATTENTION.POS_ENC_AT_CROSS_ATTN_QUERIES = False
    # self_attention / cross_attention (RoPEAttention): heads, downsample_rate, rope_theta,
    # feat_sizes (the precomputed map; other square maps are computed when met)
    s.MEMORY_ATTENTION.NUM_HEADS = 1
    s.MEMORY_ATTENTION.DOWNSAMPLE_RATE = 1
    s.MEMORY_ATTENTION.ROPE_THETA = 10000.0
    s.MEMORY_ATTENTION.FEAT_SIZES = [64, 64]
    # Not in SAM 2 (True there): False uses plain attention, without rotary encoding
    s.MEMORY_ATTENTION.USE_ROPE = True
    # Not in SAM 2: a learnable "objects stay near where they were" bias on the memory
    # cross-attention logits (-scale * squared token distance); helps training from scratch
    s.MEMORY_ATTENTION.LOCALITY_BIAS = False

    # memory_encoder: mask_downsampler (total_stride = the embedding's stride), fuser of CXBlocks
    s.MEMORY_ENCODER = CN()
    s.MEMORY_ENCODER.MASK_DOWNSAMPLER_KERNEL_SIZE = 3
    s.MEMORY_ENCODER.MASK_DOWNSAMPLER_STRIDE = 2
    s.MEMORY_ENCODER.MASK_DOWNSAMPLER_PADDING = 1
    s.MEMORY_ENCODER.NUM_FUSER_LAYERS = 2
    s.MEMORY_ENCODER.CXBLOCK_KERNEL_SIZE = 7
    s.MEMORY_ENCODER.CXBLOCK_PADDING = 3
    s.MEMORY_ENCODER.CXBLOCK_LAYER_SCALE_INIT_VALUE = 1e-6
    s.MEMORY_ENCODER.CXBLOCK_USE_DWCONV = True

    # SAM heads (SAM2Base builds them with these fixed sizes; keys for small models)
    s.PROMPT_ENCODER = CN()
    s.PROMPT_ENCODER.MASK_IN_CHANS = 16
    s.MASK_DECODER = CN()
    s.MASK_DECODER.DEPTH = 2
    s.MASK_DECODER.NUM_HEADS = 8
    s.MASK_DECODER.MLP_DIM = 2048
    s.MASK_DECODER.NUM_MULTIMASK_OUTPUTS = 3
    s.MASK_DECODER.IOU_HEAD_DEPTH = 3
    s.MASK_DECODER.IOU_HEAD_HIDDEN_DIM = 256
    # use_high_res_features_in_sam
    s.MASK_DECODER.USE_HIGH_RES_FEATURES = True
    # SAM 2 squashes predicted IoUs with a sigmoid; from scratch with the L1 IoU loss the
    # sigmoid can saturate near 0 early on (most masks have IoU 0) and never recover
    s.MASK_DECODER.IOU_PREDICTION_USE_SIGMOID = True
    # Object-score head; masks of frames scored "no object" are set to -1024 (SAM 2)
    s.MASK_DECODER.PRED_OBJ_SCORES = True
    s.MASK_DECODER.PRED_OBJ_SCORES_MLP = True
    s.MASK_DECODER.USE_MULTIMASK_TOKEN_FOR_OBJ_PTR = True
    # sam_mask_decoder_extra_args (the official video predictor turns these on)
    s.MASK_DECODER.DYNAMIC_MULTIMASK_VIA_STABILITY = False
    s.MASK_DECODER.DYNAMIC_MULTIMASK_STABILITY_DELTA = 0.05
    s.MASK_DECODER.DYNAMIC_MULTIMASK_STABILITY_THRESH = 0.98

    # Memories attended to: the conditioning frames + the NUM_MASKMEM - 1 previous frames
    s.NUM_MASKMEM = 7
    # Object pointers (decoder output tokens) of other frames as extra memory tokens
    # (use_obj_ptrs_in_encoder, max_obj_ptrs_in_encoder)
    s.USE_OBJ_PTRS = True
    s.MAX_OBJ_PTRS = 16
    # obj_ptr_proj: a 3-layer MLP (else one Linear); obj_ptr_tpos_proj: temporal encodings of
    # the pointers projected to MEM_DIM; the pointer of a "no object" frame is no_obj_ptr
    s.USE_MLP_FOR_OBJ_PTR_PROJ = True
    s.PROJ_TPOS_ENC_IN_OBJ_PTRS = True
    s.FIXED_NO_OBJ_PTR = True
    # no_obj_embed_spatial: added to the memory of a "no object" frame
    s.NO_OBJ_EMBED_SPATIAL = True
    # Pointers get a sine encoding of their frame distance (add_tpos_enc_to_obj_ptrs), signed
    # (use_signed_tpos_enc_to_obj_ptrs); in eval, only conditioning frames at or before the
    # current one give pointers (only_obj_ptrs_in_the_past_for_eval); soft_no_obj_ptr mixes
    # pointer and no_obj_ptr by the object-score probability instead of its sign
    s.ADD_TPOS_ENC_TO_OBJ_PTRS = True
    s.USE_SIGNED_TPOS_ENC_TO_OBJ_PTRS = True
    s.ONLY_OBJ_PTRS_IN_THE_PAST_FOR_EVAL = True
    s.SOFT_NO_OBJ_PTR = False
    # Frames without memory (initial conditioning frames) get no_mem_embed added instead of
    # attending to a no-memory token (directly_add_no_mem_embed)
    s.DIRECTLY_ADD_NO_MEM_EMBED = True
    # At most this many conditioning frames attend (the closest ones; -1: all)
    s.MAX_COND_FRAMES_IN_ATTN = -1
    # Eval: previous-frame memories every STRIDE frames beyond the last frame
    s.MEMORY_TEMPORAL_STRIDE_FOR_EVAL = 1
    # Eval: the memory of several objects of a frame uses non-overlapping masks
    s.NON_OVERLAP_MASKS_FOR_MEM_ENC = False
    # Eval: a click's mask enters the memory binarized (the official video predictor: True)
    s.BINARIZE_MASK_FROM_PTS_FOR_MEM_ENC = False
    # Mask probabilities enter the memory encoder as sigmoid(x) * SCALE + BIAS
    s.SIGMOID_SCALE_FOR_MEM_ENC = 20.0
    s.SIGMOID_BIAS_FOR_MEM_ENC = -10.0
    # 3 masks when a prompt has MIN..MAX points (a box counts 2), and on tracked frames
    # (multimask_output_in_sam)
    s.MULTIMASK_OUTPUT = True
    s.MULTIMASK_MIN_PT_NUM = 0
    s.MULTIMASK_MAX_PT_NUM = 1
    s.MULTIMASK_OUTPUT_FOR_TRACKING = True
    # use_mask_input_as_output_without_sam: a mask prompt is the output itself (logits +-10),
    # the decoder only gives the object pointer
    s.USE_MASK_INPUT_AS_OUTPUT = True
    # Corrective clicks also feed the previous step's mask logits to the prompt encoder
    s.ITER_USE_PREV_MASK_PRED = True
    # Not in SAM 2: on tracked frames, also give the decoder the previous frame's mask logits
    # as a mask prompt (a strong "it is where it was" prior for models trained from scratch)
    s.PREV_MASK_AS_PROMPT_FOR_TRACKING = False

    # build_video_predictor: the official SAM2VideoPredictor's options. APPLY_POSTPROCESSING
    # (the official builder's default) also turns on the model's dynamic multimask via stability
    # (delta 0.05, threshold 0.98) and binarized click masks in the memory; FILL_HOLE_AREA fills
    # background holes of at most that many pixels in the low-res masks (8 with it, else 0)
    s.PREDICTOR = CN()
    s.PREDICTOR.APPLY_POSTPROCESSING = True
    s.PREDICTOR.FILL_HOLE_AREA = 8
    s.PREDICTOR.NON_OVERLAP_MASKS = False
    s.PREDICTOR.CLEAR_NON_COND_MEM_AROUND_INPUT = False
    s.PREDICTOR.ADD_ALL_FRAMES_TO_CORRECT_AS_COND = False

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

    # The same options in eval mode and for the validation loss (the official *_for_eval;
    # defaults as the official SAM2Train and the MOSE fine-tuning: the GT mask on the first frame)
    s.FOR_EVAL = CN()
    s.FOR_EVAL.PROB_TO_USE_PT_INPUT = 0.0
    s.FOR_EVAL.PROB_TO_USE_BOX_INPUT = 0.0
    s.FOR_EVAL.NUM_INIT_COND_FRAMES = 1
    s.FOR_EVAL.RAND_INIT_COND_FRAMES = False
    s.FOR_EVAL.NUM_FRAMES_TO_CORRECT = 1
    s.FOR_EVAL.RAND_FRAMES_TO_CORRECT = False
    # Clicks in eval mode: "center" (the point farthest from the error region's boundary, as the
    # SAM paper evaluates) or "uniform"; training always samples uniformly from the error region
    s.FOR_EVAL.PT_SAMPLING = "center"

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
