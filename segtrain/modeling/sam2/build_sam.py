"""The SAM 2.1 modules from ``MODEL.SAM2`` (the official configs' ``image_encoder``,
``memory_attention`` and ``memory_encoder`` nodes, and the options of ``SAM2Base``)."""

from typing import Any, Dict, List

from torch import nn

from segtrain.utils.errors import ConfigError

from .hieradet import Hiera
from .image_encoder import FpnNeck, ImageEncoder, TinyConvBackbone
from .memory_attention import MemoryAttention, MemoryAttentionLayer
from .memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from .position_encoding import PositionEmbeddingSine
from .transformer import Attention, RoPEAttention

__all__ = ["TRUNKS", "build_trunk", "trunk_strides", "build_image_encoder", "build_memory_attention"]
__all__ += ["build_memory_encoder", "sam2_base_kwargs"]

TRUNKS = ("Hiera", "TinyConv")


def build_trunk(cfg) -> nn.Module:
    """``MODEL.SAM2.TRUNK.NAME``: ``Hiera`` (``MODEL.SAM2.TRUNK``) or ``TinyConv``
    (``MODEL.SAM2.TINY_BACKBONE``)."""
    s = cfg.MODEL.SAM2
    t = s.TRUNK
    if t.NAME == "Hiera":
        return Hiera(
            embed_dim=t.EMBED_DIM,
            num_heads=t.NUM_HEADS,
            drop_path_rate=t.DROP_PATH_RATE,
            q_pool=t.Q_POOL,
            q_stride=tuple(t.Q_STRIDE),
            stages=tuple(t.STAGES),
            dim_mul=t.DIM_MUL,
            head_mul=t.HEAD_MUL,
            window_pos_embed_bkg_spatial_size=tuple(t.WINDOW_POS_EMBED_BKG_SPATIAL_SIZE),
            window_spec=tuple(t.WINDOW_SPEC),
            global_att_blocks=tuple(t.GLOBAL_ATT_BLOCKS),
        )
    if t.NAME == "TinyConv":
        tb = s.TINY_BACKBONE
        names = [f"stage{i + 1}" for i in range(len(tb.CHANNELS))]
        return TinyConvBackbone(3, tb.CHANNELS, tb.BLOCKS, names)
    raise ConfigError(f"MODEL.SAM2.TRUNK.NAME must be one of {', '.join(TRUNKS)}; got {t.NAME!r}")


def trunk_strides(trunk: nn.Module) -> List[int]:
    """Strides of the trunk's outputs, finest first."""
    if isinstance(trunk, Hiera):
        stride, strides = 4, []
        for i, end in enumerate(trunk.stage_ends):
            if i > 0 and end >= 0 and (trunk.stage_ends[i - 1] + 1) in trunk.q_pool_blocks:
                stride *= trunk.q_stride[0]
            strides.append(stride)
        return strides if trunk.return_interm_layers else strides[-1:]
    return [trunk.output_shape()[n].stride for n in trunk._out_features]


def build_image_encoder(cfg) -> ImageEncoder:
    s = cfg.MODEL.SAM2
    n = s.NECK
    trunk = build_trunk(cfg)
    neck = FpnNeck(
        PositionEmbeddingSine(s.D_MODEL, temperature=s.POSITION_ENCODING_TEMPERATURE),
        s.D_MODEL,
        list(trunk.channel_list),
        kernel_size=n.KERNEL_SIZE,
        stride=n.STRIDE,
        padding=n.PADDING,
        fpn_interp_model=n.FPN_INTERP_MODEL,
        fuse_type=n.FUSE_TYPE,
        fpn_top_down_levels=list(n.FPN_TOP_DOWN_LEVELS),
    )
    return ImageEncoder(trunk, neck, scalp=n.SCALP)


def build_memory_attention(cfg) -> MemoryAttention:
    s = cfg.MODEL.SAM2
    m = s.MEMORY_ATTENTION
    common = dict(downsample_rate=m.DOWNSAMPLE_RATE, dropout=m.DROPOUT)
    if m.USE_ROPE:
        rope = dict(rope_theta=m.ROPE_THETA, feat_sizes=tuple(m.FEAT_SIZES))
        self_attention = RoPEAttention(s.D_MODEL, m.NUM_HEADS, **rope, **common)
        cross_attention = RoPEAttention(
            s.D_MODEL, m.NUM_HEADS, rope_k_repeat=True, kv_in_dim=s.MEM_DIM, **rope, **common
        )
    else:
        self_attention = Attention(s.D_MODEL, m.NUM_HEADS, **common)
        cross_attention = Attention(s.D_MODEL, m.NUM_HEADS, kv_in_dim=s.MEM_DIM, **common)
    layer = MemoryAttentionLayer(
        activation=m.ACTIVATION,
        cross_attention=cross_attention,
        d_model=s.D_MODEL,
        dim_feedforward=m.DIM_FEEDFORWARD,
        dropout=m.DROPOUT,
        pos_enc_at_attn=m.POS_ENC_AT_ATTN,
        pos_enc_at_cross_attn_keys=m.POS_ENC_AT_CROSS_ATTN_KEYS,
        pos_enc_at_cross_attn_queries=m.POS_ENC_AT_CROSS_ATTN_QUERIES,
        self_attention=self_attention,
    )
    return MemoryAttention(s.D_MODEL, m.POS_ENC_AT_INPUT, layer, m.NUM_LAYERS, locality_bias=m.LOCALITY_BIAS)


def build_memory_encoder(cfg, backbone_stride: int) -> MemoryEncoder:
    """The mask downsampler reduces image-size masks by ``backbone_stride`` (the embedding's)."""
    s = cfg.MODEL.SAM2
    e = s.MEMORY_ENCODER
    cx = CXBlock(
        s.D_MODEL,
        kernel_size=e.CXBLOCK_KERNEL_SIZE,
        padding=e.CXBLOCK_PADDING,
        layer_scale_init_value=e.CXBLOCK_LAYER_SCALE_INIT_VALUE,
        use_dwconv=e.CXBLOCK_USE_DWCONV,
    )
    down = MaskDownSampler(
        s.D_MODEL,
        kernel_size=e.MASK_DOWNSAMPLER_KERNEL_SIZE,
        stride=e.MASK_DOWNSAMPLER_STRIDE,
        padding=e.MASK_DOWNSAMPLER_PADDING,
        total_stride=backbone_stride,
    )
    pos = PositionEmbeddingSine(s.MEM_DIM, temperature=s.POSITION_ENCODING_TEMPERATURE)
    return MemoryEncoder(s.MEM_DIM, down, Fuser(cx, e.NUM_FUSER_LAYERS), pos, in_dim=s.D_MODEL)


def sam2_base_kwargs(cfg) -> Dict[str, Any]:
    """The keyword arguments of ``SAM2Base`` from the config."""
    s = cfg.MODEL.SAM2
    d = s.MASK_DECODER
    image_encoder = build_image_encoder(cfg)
    strides = trunk_strides(image_encoder.trunk)
    kept = strides[: len(strides) - image_encoder.scalp]
    if not kept:
        raise ConfigError(f"MODEL.SAM2.NECK.SCALP ({image_encoder.scalp}) drops every level of the trunk")
    return {
        "image_encoder": image_encoder,
        "memory_attention": build_memory_attention(cfg),
        "memory_encoder": build_memory_encoder(cfg, kept[-1]),
        "feature_strides": kept,
        "image_size": s.IMAGE_SIZE,
        "pixel_mean": cfg.MODEL.PIXEL_MEAN,
        "pixel_std": cfg.MODEL.PIXEL_STD,
        "num_maskmem": s.NUM_MASKMEM,
        "use_obj_ptrs_in_encoder": s.USE_OBJ_PTRS,
        "max_obj_ptrs_in_encoder": s.MAX_OBJ_PTRS,
        "use_mlp_for_obj_ptr_proj": s.USE_MLP_FOR_OBJ_PTR_PROJ,
        "proj_tpos_enc_in_obj_ptrs": s.PROJ_TPOS_ENC_IN_OBJ_PTRS,
        "fixed_no_obj_ptr": s.FIXED_NO_OBJ_PTR,
        "no_obj_embed_spatial": s.NO_OBJ_EMBED_SPATIAL,
        "mask_in_chans": s.PROMPT_ENCODER.MASK_IN_CHANS,
        "decoder_depth": d.DEPTH,
        "decoder_heads": d.NUM_HEADS,
        "decoder_mlp_dim": d.MLP_DIM,
        "num_multimask_outputs": d.NUM_MULTIMASK_OUTPUTS,
        "iou_head_depth": d.IOU_HEAD_DEPTH,
        "iou_head_hidden_dim": d.IOU_HEAD_HIDDEN_DIM,
        "use_high_res_features_in_sam": d.USE_HIGH_RES_FEATURES,
        "iou_prediction_use_sigmoid": d.IOU_PREDICTION_USE_SIGMOID,
        "pred_obj_scores": d.PRED_OBJ_SCORES,
        "pred_obj_scores_mlp": d.PRED_OBJ_SCORES_MLP,
        "use_multimask_token_for_obj_ptr": d.USE_MULTIMASK_TOKEN_FOR_OBJ_PTR,
        "sam_mask_decoder_extra_args": {
            "dynamic_multimask_via_stability": d.DYNAMIC_MULTIMASK_VIA_STABILITY,
            "dynamic_multimask_stability_delta": d.DYNAMIC_MULTIMASK_STABILITY_DELTA,
            "dynamic_multimask_stability_thresh": d.DYNAMIC_MULTIMASK_STABILITY_THRESH,
        },
        "sigmoid_scale_for_mem_enc": s.SIGMOID_SCALE_FOR_MEM_ENC,
        "sigmoid_bias_for_mem_enc": s.SIGMOID_BIAS_FOR_MEM_ENC,
        "multimask_output_in_sam": s.MULTIMASK_OUTPUT,
        "multimask_min_pt_num": s.MULTIMASK_MIN_PT_NUM,
        "multimask_max_pt_num": s.MULTIMASK_MAX_PT_NUM,
        "multimask_output_for_tracking": s.MULTIMASK_OUTPUT_FOR_TRACKING,
        "use_mask_input_as_output_without_sam": s.USE_MASK_INPUT_AS_OUTPUT,
        "binarize_mask_from_pts_for_mem_enc": s.BINARIZE_MASK_FROM_PTS_FOR_MEM_ENC,
        "max_cond_frames_in_attn": s.MAX_COND_FRAMES_IN_ATTN,
        "directly_add_no_mem_embed": s.DIRECTLY_ADD_NO_MEM_EMBED,
        "memory_temporal_stride_for_eval": s.MEMORY_TEMPORAL_STRIDE_FOR_EVAL,
        "non_overlap_masks_for_mem_enc": s.NON_OVERLAP_MASKS_FOR_MEM_ENC,
        "add_tpos_enc_to_obj_ptrs": s.ADD_TPOS_ENC_TO_OBJ_PTRS,
        "use_signed_tpos_enc_to_obj_ptrs": s.USE_SIGNED_TPOS_ENC_TO_OBJ_PTRS,
        "only_obj_ptrs_in_the_past_for_eval": s.ONLY_OBJ_PTRS_IN_THE_PAST_FOR_EVAL,
        "soft_no_obj_ptr": s.SOFT_NO_OBJ_PTR,
        "prev_mask_as_prompt_for_tracking": s.PREV_MASK_AS_PROMPT_FOR_TRACKING,
    }
