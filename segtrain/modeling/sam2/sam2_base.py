"""``SAM2Base``: the SAM 2 model and its per-frame step, as the official
``sam2/modeling/sam2_base.py``.

image encoder (Hiera trunk + FPN neck) -> per frame and object: memory attention over the
memory bank (``memory_conditioning.py``) or, on an initial conditioning frame, the prompt
alone -> prompt encoder + mask decoder (3 multimask outputs + 1 single mask, IoU and
object-score heads, object pointer) -> memory encoder (frame features fused with the
predicted mask) -> the frame's output (``maskmem_features``, ``obj_ptr``, ...), which later
frames read from ``output_dict``.

``VideoTracker`` (``video_tracker.py``) adds the training loop over frames with prompt sampling
(the official ``SAM2Train``) and the evaluation path; ``VideoPredictor`` drives ``track_step``
frame by frame at inference.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from segtrain.modeling.meta_arch.pixel_normalizer import PixelNormalizer
from segtrain.utils.errors import ConfigError, DatasetError

from .common import MLP
from .mask_decoder import MaskDecoder
from .memory_conditioning import MemoryConditioning
from .prompt_encoder import PromptEncoder
from .sam_heads import SamHeads
from .transformer import TwoWayTransformer

__all__ = ["SAM2Base"]


class SAM2Base(SamHeads, MemoryConditioning, PixelNormalizer, nn.Module):
    """The SAM 2 model (module docstring), with the official submodule and parameter names,
    so the released checkpoints load as they are and ``MODEL.FROZEN_MODULES`` reads the same.

    Tensors follow the official layout: vision features are lists (finest first) of
    [HW, B, C] sequences with their sizes; ``point_inputs`` is {"point_coords": [B, P, 2]
    (x, y) input pixels, "point_labels": [B, P] int}; ``mask_inputs`` [B, 1, H, W]."""

    def __init__(
        self,
        *,
        image_encoder: nn.Module,
        memory_attention: nn.Module,
        memory_encoder: nn.Module,
        feature_strides: Sequence[int],
        image_size: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        num_maskmem: int = 7,
        use_obj_ptrs_in_encoder: bool = True,
        max_obj_ptrs_in_encoder: int = 16,
        use_mlp_for_obj_ptr_proj: bool = True,
        proj_tpos_enc_in_obj_ptrs: bool = True,
        fixed_no_obj_ptr: bool = True,
        no_obj_embed_spatial: bool = True,
        mask_in_chans: int = 16,
        decoder_depth: int = 2,
        decoder_heads: int = 8,
        decoder_mlp_dim: int = 2048,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features_in_sam: bool = True,
        iou_prediction_use_sigmoid: bool = True,
        pred_obj_scores: bool = True,
        pred_obj_scores_mlp: bool = True,
        use_multimask_token_for_obj_ptr: bool = True,
        sam_mask_decoder_extra_args: Optional[Dict[str, Any]] = None,
        sigmoid_scale_for_mem_enc: float = 20.0,
        sigmoid_bias_for_mem_enc: float = -10.0,
        multimask_output_in_sam: bool = True,
        multimask_min_pt_num: int = 0,
        multimask_max_pt_num: int = 1,
        multimask_output_for_tracking: bool = True,
        use_mask_input_as_output_without_sam: bool = True,
        binarize_mask_from_pts_for_mem_enc: bool = False,
        max_cond_frames_in_attn: int = -1,
        directly_add_no_mem_embed: bool = True,
        memory_temporal_stride_for_eval: int = 1,
        non_overlap_masks_for_mem_enc: bool = False,
        add_tpos_enc_to_obj_ptrs: bool = True,
        use_signed_tpos_enc_to_obj_ptrs: bool = True,
        only_obj_ptrs_in_the_past_for_eval: bool = True,
        soft_no_obj_ptr: bool = False,
        prev_mask_as_prompt_for_tracking: bool = False,
    ):
        """
        image_encoder: ``ImageEncoder`` whose ``backbone_fpn`` (after its scalp) has strides
        ``feature_strides`` (finest first): 3 levels of strides s, 2s, 4s with the high-res
        features, the last one the image embedding; memory_attention: ``MemoryAttention``;
        memory_encoder: ``MemoryEncoder`` (its out_proj width is the memory width);
        image_size: square input size (MODEL.SAM2.IMAGE_SIZE); pixel_mean, pixel_std: per
        channel, 0-255 range. The other arguments are SAM 2's options of the same names; the
        decoder sizes (fixed in SAM 2: depth 2, 8 heads, MLP 2048, IoU head 256, mask_in_chans
        16) are arguments for small models.
        """
        super().__init__()
        if num_maskmem < 1:
            raise ConfigError(f"MODEL.SAM2.NUM_MASKMEM must be >= 1, got {num_maskmem}")
        strides = [int(x) for x in feature_strides]
        num_levels = 3 if use_high_res_features_in_sam else 1
        if len(strides) != num_levels or any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ConfigError(
                f"SAM 2 needs {num_levels} image-encoder level(s) of strides s, 2s, 4s after the scalp "
                f"(MODEL.SAM2.NECK.SCALP, MODEL.SAM2.TRUNK); got strides {strides}"
            )
        backbone_stride = strides[-1]
        if backbone_stride < 4 or image_size % backbone_stride != 0:
            raise ConfigError(
                f"MODEL.SAM2.IMAGE_SIZE ({image_size}) must be a multiple of the embedding stride "
                f"({backbone_stride}, >= 4)"
            )
        if proj_tpos_enc_in_obj_ptrs and not add_tpos_enc_to_obj_ptrs:
            raise ConfigError("MODEL.SAM2.PROJ_TPOS_ENC_IN_OBJ_PTRS needs MODEL.SAM2.ADD_TPOS_ENC_TO_OBJ_PTRS")
        if fixed_no_obj_ptr and not (pred_obj_scores and use_obj_ptrs_in_encoder):
            raise ConfigError("MODEL.SAM2.FIXED_NO_OBJ_PTR needs MASK_DECODER.PRED_OBJ_SCORES and USE_OBJ_PTRS")
        self.image_size = int(image_size)
        self.backbone_stride = backbone_stride
        hidden_dim = image_encoder.neck.d_model
        mem_dim = getattr(getattr(memory_encoder, "out_proj", None), "weight", None)
        mem_dim = hidden_dim if mem_dim is None else mem_dim.shape[0]
        if hidden_dim % mem_dim != 0:
            raise ConfigError(f"MODEL.SAM2.D_MODEL ({hidden_dim}) must be a multiple of MODEL.SAM2.MEM_DIM ({mem_dim})")
        self.hidden_dim = self.d_model = hidden_dim
        self.mem_dim = mem_dim
        emb = image_size // backbone_stride

        self.image_encoder = image_encoder
        self.use_high_res_features_in_sam = use_high_res_features_in_sam
        self.use_obj_ptrs_in_encoder = use_obj_ptrs_in_encoder
        self.max_obj_ptrs_in_encoder = max_obj_ptrs_in_encoder
        if use_obj_ptrs_in_encoder:
            # mask prompts of the image size -> the prompt encoder's mask size (4x the
            # embedding): kernel 4 at SAM 2's stride 16
            k = backbone_stride // 4
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=k, stride=k)
        self.proj_tpos_enc_in_obj_ptrs = proj_tpos_enc_in_obj_ptrs
        self.memory_attention = memory_attention
        self.memory_encoder = memory_encoder
        self.num_maskmem = num_maskmem
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(num_maskmem, 1, 1, mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc):
            nn.init.trunc_normal_(p, std=0.02)
        self.pred_obj_scores = pred_obj_scores
        self.fixed_no_obj_ptr = fixed_no_obj_ptr
        if pred_obj_scores and use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, hidden_dim))
            nn.init.trunc_normal_(self.no_obj_ptr, std=0.02)
        self.no_obj_embed_spatial = None
        if no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem_dim))
            nn.init.trunc_normal_(self.no_obj_embed_spatial, std=0.02)

        self.sam_prompt_encoder = PromptEncoder(hidden_dim, (emb, emb), (image_size, image_size), mask_in_chans)
        self.sam_mask_decoder = MaskDecoder(
            transformer_dim=hidden_dim,
            transformer=TwoWayTransformer(decoder_depth, hidden_dim, decoder_heads, decoder_mlp_dim),
            num_multimask_outputs=num_multimask_outputs,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
            use_high_res_features=use_high_res_features_in_sam,
            iou_prediction_use_sigmoid=iou_prediction_use_sigmoid,
            pred_obj_scores=pred_obj_scores,
            pred_obj_scores_mlp=pred_obj_scores_mlp,
            use_multimask_token_for_obj_ptr=use_multimask_token_for_obj_ptr,
            **(sam_mask_decoder_extra_args or {}),
        )
        if use_obj_ptrs_in_encoder:
            self.obj_ptr_proj = (
                MLP(hidden_dim, hidden_dim, hidden_dim, 3)
                if use_mlp_for_obj_ptr_proj
                else nn.Linear(hidden_dim, hidden_dim)
            )
        else:
            self.obj_ptr_proj = nn.Identity()
        self.obj_ptr_tpos_proj = nn.Linear(hidden_dim, mem_dim) if proj_tpos_enc_in_obj_ptrs else nn.Identity()

        self.register_pixel_stats(pixel_mean, pixel_std)
        self.sigmoid_scale_for_mem_enc = sigmoid_scale_for_mem_enc
        self.sigmoid_bias_for_mem_enc = sigmoid_bias_for_mem_enc
        self.multimask_output_in_sam = multimask_output_in_sam
        self.multimask_min_pt_num = multimask_min_pt_num
        self.multimask_max_pt_num = multimask_max_pt_num
        self.multimask_output_for_tracking = multimask_output_for_tracking
        self.use_mask_input_as_output_without_sam = use_mask_input_as_output_without_sam
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.binarize_mask_from_pts_for_mem_enc = binarize_mask_from_pts_for_mem_enc
        self.max_cond_frames_in_attn = max_cond_frames_in_attn
        self.directly_add_no_mem_embed = directly_add_no_mem_embed
        self.memory_temporal_stride_for_eval = memory_temporal_stride_for_eval
        self.non_overlap_masks_for_mem_enc = non_overlap_masks_for_mem_enc
        self.add_tpos_enc_to_obj_ptrs = add_tpos_enc_to_obj_ptrs
        self.use_signed_tpos_enc_to_obj_ptrs = use_signed_tpos_enc_to_obj_ptrs
        self.only_obj_ptrs_in_the_past_for_eval = only_obj_ptrs_in_the_past_for_eval
        self.soft_no_obj_ptr = soft_no_obj_ptr
        self.prev_mask_as_prompt_for_tracking = prev_mask_as_prompt_for_tracking
        self.num_feature_levels = 3 if use_high_res_features_in_sam else 1

    # ------------------------------------------------------------------ image features
    def normalize_frames(self, images: Tensor) -> Tensor:
        """uint8 (or float 0-255) RGB frames [K, 3, H, W] at ``image_size`` -> the normalized
        input of ``forward_image``."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise DatasetError(
                f"SAM 2: frames are {tuple(images.shape[-2:])} but the model was built for "
                f"{self.image_size}x{self.image_size} (MODEL.SAM2.IMAGE_SIZE)"
            )
        return self.normalize(images)

    def forward_image(self, img_batch: Tensor) -> Dict[str, Any]:
        """Normalized images [K, 3, S, S] -> the image encoder's outputs, with the two finest
        levels of ``backbone_fpn`` already projected by the mask decoder's ``conv_s0`` /
        ``conv_s1`` (with high-res features)."""
        backbone_out = self.image_encoder(img_batch)
        backbone_out["backbone_fpn"] = list(backbone_out["backbone_fpn"])
        if self.use_high_res_features_in_sam:
            fpn = backbone_out["backbone_fpn"]
            fpn[0] = self.sam_mask_decoder.conv_s0(fpn[0])
            fpn[1] = self.sam_mask_decoder.conv_s1(fpn[1])
        return backbone_out

    def _prepare_backbone_features(self, backbone_out: Dict[str, Any]):
        """(backbone_out, vision_feats [[HW, K, C_l]], vision_pos_embeds [[HW, K, C]], feat_sizes
        [(H, W)]) of the last ``num_feature_levels`` levels, finest first."""
        n = self.num_feature_levels
        feature_maps = backbone_out["backbone_fpn"][-n:]
        pos_maps = backbone_out["vision_pos_enc"][-n:]
        feat_sizes = [(x.shape[-2], x.shape[-1]) for x in pos_maps]
        vision_feats = [x.flatten(2).permute(2, 0, 1) for x in feature_maps]
        vision_pos_embeds = [x.flatten(2).permute(2, 0, 1) for x in pos_maps]
        return backbone_out, vision_feats, vision_pos_embeds, feat_sizes

    # ------------------------------------------------------------------ memory
    def _encode_new_memory(
        self,
        current_vision_feats: List[Tensor],
        feat_sizes: List[Tuple[int, int]],
        pred_masks_high_res: Tensor,
        object_score_logits: Tensor,
        is_mask_from_pts: bool,
    ) -> Tuple[Tensor, List[Tensor]]:
        """Memory of a frame from its raw embedding and final mask logits [B, 1, H, W]:
        (maskmem_features [B, Cm, h, w], maskmem_pos_enc [[B, Cm, h, w]])."""
        b = current_vision_feats[-1].size(1)
        h, w = feat_sizes[-1]
        pix_feat = current_vision_feats[-1].permute(1, 2, 0).reshape(b, self.hidden_dim, h, w)
        if self.non_overlap_masks_for_mem_enc and not self.training:
            pred_masks_high_res = self._apply_non_overlapping_constraints(pred_masks_high_res)
        if self.binarize_mask_from_pts_for_mem_enc and is_mask_from_pts and not self.training:
            mask_for_mem = (pred_masks_high_res > 0).float()
        else:
            mask_for_mem = torch.sigmoid(pred_masks_high_res)
        if self.sigmoid_scale_for_mem_enc != 1.0:
            mask_for_mem = mask_for_mem * self.sigmoid_scale_for_mem_enc
        if self.sigmoid_bias_for_mem_enc != 0.0:
            mask_for_mem = mask_for_mem + self.sigmoid_bias_for_mem_enc
        out = self.memory_encoder(pix_feat, mask_for_mem, skip_mask_sigmoid=True)
        maskmem_features, maskmem_pos_enc = out["vision_features"], out["vision_pos_enc"]
        if self.no_obj_embed_spatial is not None:
            absent = 1 - (object_score_logits > 0).float()
            maskmem_features = maskmem_features + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return maskmem_features, maskmem_pos_enc

    def _apply_non_overlapping_constraints(self, pred_masks: Tensor) -> Tensor:
        """Keep each pixel only for its highest-scoring object: the others are clamped to <= -10."""
        if pred_masks.size(0) == 1:
            return pred_masks
        max_obj = torch.argmax(pred_masks, dim=0, keepdim=True)
        keep = max_obj == torch.arange(pred_masks.size(0), device=pred_masks.device)[:, None, None, None]
        return torch.where(keep, pred_masks, torch.clamp(pred_masks, max=-10.0))

    # ------------------------------------------------------------------ per-frame step
    def _prev_mask_prompt(self, frame_idx: int, output_dict, track_in_reverse: bool) -> Optional[Tensor]:
        """The previous frame's low-res mask logits (``prev_mask_as_prompt_for_tracking``),
        clamped to +-32: a "no object" frame holds -1024, far outside what a prompt looks like."""
        prev = frame_idx + 1 if track_in_reverse else frame_idx - 1
        out = output_dict["non_cond_frame_outputs"].get(prev) or output_dict["cond_frame_outputs"].get(prev)
        return None if out is None else out["pred_masks"].clamp(-32.0, 32.0)

    def _track_step(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: List[Tensor],
        current_vision_pos_embeds: List[Tensor],
        feat_sizes: List[Tuple[int, int]],
        point_inputs: Optional[Dict[str, Tensor]],
        mask_inputs: Optional[Tensor],
        output_dict: Dict[str, Dict[int, Dict[str, Any]]],
        num_frames: int,
        track_in_reverse: bool,
        prev_sam_mask_logits: Optional[Tensor],
    ):
        """(current_out, SamOutputs, high_res_features, features the decoder saw)."""
        current_out: Dict[str, Any] = {"point_inputs": point_inputs, "mask_inputs": mask_inputs}
        high_res_features = None
        if len(current_vision_feats) > 1:
            high_res_features = [
                x.permute(1, 2, 0).reshape(x.size(1), x.size(2), *s)
                for x, s in zip(current_vision_feats[:-1], feat_sizes[:-1])
            ]
        if mask_inputs is not None and self.use_mask_input_as_output_without_sam:
            pix_feat = current_vision_feats[-1].permute(1, 2, 0).reshape(-1, self.hidden_dim, *feat_sizes[-1])
            return current_out, self._use_mask_as_output(pix_feat, high_res_features, mask_inputs), None, pix_feat
        pix_feat = self._prepare_memory_conditioned_features(
            frame_idx,
            is_init_cond_frame,
            current_vision_feats[-1:],
            current_vision_pos_embeds[-1:],
            feat_sizes[-1:],
            output_dict,
            num_frames,
            track_in_reverse,
        )
        if prev_sam_mask_logits is not None:
            mask_inputs = prev_sam_mask_logits
        elif mask_inputs is None and not is_init_cond_frame and self.prev_mask_as_prompt_for_tracking:
            mask_inputs = self._prev_mask_prompt(frame_idx, output_dict, track_in_reverse)
        multimask_output = self._use_multimask(is_init_cond_frame, point_inputs)
        sam_outputs = self._forward_sam_heads(pix_feat, point_inputs, mask_inputs, high_res_features, multimask_output)
        return current_out, sam_outputs, high_res_features, pix_feat

    def _encode_memory_in_output(
        self, current_vision_feats, feat_sizes, point_inputs, run_mem_encoder, high_res_masks, object_score_logits, out
    ) -> None:
        if run_mem_encoder and self.num_maskmem > 0:
            feats, pos = self._encode_new_memory(
                current_vision_feats, feat_sizes, high_res_masks, object_score_logits, point_inputs is not None
            )
            out["maskmem_features"], out["maskmem_pos_enc"] = feats, pos
        else:
            out["maskmem_features"], out["maskmem_pos_enc"] = None, None

    def track_step(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: List[Tensor],
        current_vision_pos_embeds: List[Tensor],
        feat_sizes: List[Tuple[int, int]],
        point_inputs: Optional[Dict[str, Tensor]],
        mask_inputs: Optional[Tensor],
        output_dict: Dict[str, Dict[int, Dict[str, Any]]],
        num_frames: int,
        track_in_reverse: bool = False,
        run_mem_encoder: bool = True,
        prev_sam_mask_logits: Optional[Tensor] = None,
    ) -> Dict[str, Any]:
        """One frame for B objects. Returns {"pred_masks": [B, 1, 4h, 4w], "pred_masks_high_res":
        [B, 1, H, W], "obj_ptr": [B, C], "maskmem_features", "maskmem_pos_enc", ... and, in eval,
        "object_score_logits" [B, 1]}."""
        current_out, sam_outputs, _, _ = self._track_step(
            frame_idx,
            is_init_cond_frame,
            current_vision_feats,
            current_vision_pos_embeds,
            feat_sizes,
            point_inputs,
            mask_inputs,
            output_dict,
            num_frames,
            track_in_reverse,
            prev_sam_mask_logits,
        )
        _, _, _, low_res_masks, high_res_masks, obj_ptr, object_score_logits = sam_outputs
        current_out["pred_masks"] = low_res_masks
        current_out["pred_masks_high_res"] = high_res_masks
        current_out["obj_ptr"] = obj_ptr
        if not self.training:
            current_out["object_score_logits"] = object_score_logits
        self._encode_memory_in_output(
            current_vision_feats,
            feat_sizes,
            point_inputs,
            run_mem_encoder,
            high_res_masks,
            object_score_logits,
            current_out,
        )
        return current_out
