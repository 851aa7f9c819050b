"""SAM 2 video tracker family: the ``VideoTracker`` meta-architecture (training loop and
evaluation) on ``SAM2Base`` (the per-frame step); the official SAM 2.1 modules under their
official names (Hiera trunk, FPN neck and image encoder, position encodings, prompt encoder,
two-way transformer and mask decoder, RoPE memory attention, memory encoder); the
training-prompt samplers, the video predictor and the config node (``MODEL.SAM2``). Importing this package
registers them and the tiny conv backbone (``build_tiny_conv_backbone``)."""

from .build_predictor import build_image_predictor, build_sam2, build_video_predictor, load_sam2_weights
from .config import add_sam2_config
from .hieradet import Hiera, MultiScaleAttention, MultiScaleBlock, PatchEmbed
from .image_encoder import FpnNeck, ImageEncoder, TinyConvBackbone, build_tiny_conv_backbone
from .image_predictor import ImagePredictor
from .mask_decoder import MaskDecoder
from .memory_attention import MemoryAttention, MemoryAttentionLayer
from .memory_conditioning import select_closest_cond_frames
from .memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
from .position_encoding import PositionEmbeddingRandom, PositionEmbeddingSine
from .predictor import VideoPredictor
from .prompt_encoder import POINT_LABELS, PromptEncoder
from .prompt_sampling import (
    PromptPlan,
    concat_points,
    get_next_point,
    mask_to_box_inclusive,
    sample_box_points,
    sample_one_point_from_error_center,
    sample_prompt_plan,
    sample_random_points_from_errors,
)
from .sam2_base import SAM2Base
from .transformer import Attention, RoPEAttention, TwoWayAttentionBlock, TwoWayTransformer
from .video_tracker import MULTISTEP_KEYS, VideoTracker

__all__ = [
    "Hiera",
    "MultiScaleAttention",
    "MultiScaleBlock",
    "PatchEmbed",
    "ImageEncoder",
    "PositionEmbeddingRandom",
    "PositionEmbeddingSine",
    "Attention",
    "RoPEAttention",
    "TwoWayAttentionBlock",
    "CXBlock",
    "Fuser",
    "MaskDownSampler",
    "FpnNeck",
    "TinyConvBackbone",
    "build_tiny_conv_backbone",
    "MaskDecoder",
    "TwoWayTransformer",
    "MemoryAttention",
    "MemoryAttentionLayer",
    "select_closest_cond_frames",
    "MemoryEncoder",
    "POINT_LABELS",
    "PromptEncoder",
    "PromptPlan",
    "concat_points",
    "get_next_point",
    "mask_to_box_inclusive",
    "sample_box_points",
    "sample_one_point_from_error_center",
    "sample_prompt_plan",
    "sample_random_points_from_errors",
    "VideoPredictor",
    "ImagePredictor",
    "build_sam2",
    "build_video_predictor",
    "build_image_predictor",
    "load_sam2_weights",
    "SAM2Base",
    "VideoTracker",
    "MULTISTEP_KEYS",
    "add_sam2_config",
]
