"""SAM 2-style video tracker family: the ``VideoTracker`` meta-architecture (training loop and
evaluation) on ``SAM2Base`` (the per-frame step), its image encoder neck, prompt encoder, mask
decoder, memory encoder, memory attention, the training-prompt samplers, the video predictor and
its config node (``MODEL.SAM2``). Importing this package
registers them and the tiny conv backbone (``build_tiny_conv_backbone``)."""

from .config import add_sam2_config
from .image_encoder import FpnNeck, TinyConvBackbone, build_tiny_conv_backbone
from .mask_decoder import MaskDecoder, TwoWayTransformer
from .memory_attention import MemoryAttention, MemoryAttentionLayer, select_memory_frames, select_obj_ptr_frames
from .memory_encoder import MemoryEncoder
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
from .video_tracker import MULTISTEP_KEYS, VideoTracker

__all__ = [
    "FpnNeck",
    "TinyConvBackbone",
    "build_tiny_conv_backbone",
    "MaskDecoder",
    "TwoWayTransformer",
    "MemoryAttention",
    "MemoryAttentionLayer",
    "select_memory_frames",
    "select_obj_ptr_frames",
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
    "SAM2Base",
    "VideoTracker",
    "MULTISTEP_KEYS",
    "add_sam2_config",
]
