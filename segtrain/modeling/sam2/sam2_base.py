"""``SAM2Base``: the SAM 2 model's per-frame step, as in the official ``sam2/modeling/sam2_base.py``.

image encoder (backbone + FPN neck) -> per frame and object: memory attention over PAST
frames (conditioning frames, the last few frames, object pointers) or, on a prompted frame,
the prompt alone -> prompt encoder + mask decoder (3 multimask outputs + 1 single mask, IoU
and object-score heads, object pointer) -> memory encoder (frame features fused with the
predicted mask) -> the frame's memory-bank entry.

``VideoTracker`` (``video_tracker.py``) adds the training loop over frames with prompt sampling
and the evaluation path; ``VideoPredictor`` drives ``track_step`` frame by frame at inference.
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.modeling.meta_arch.pixel_normalizer import PixelNormalizer
from segtrain.utils.errors import ConfigError, DatasetError

from .common import MLP, NO_OBJ_SCORE, sine_pos_1d
from .image_encoder import FpnNeck
from .mask_decoder import MaskDecoder, TwoWayTransformer
from .memory_attention import MemoryAttention, select_memory_frames, select_obj_ptr_frames
from .memory_encoder import MemoryEncoder
from .prompt_encoder import PromptEncoder

__all__ = ["SAM2Base"]


class SAM2Base(PixelNormalizer, nn.Module):
    """The SAM 2 model (module docstring). Submodule names follow SAM 2 (``image_encoder``,
    ``sam_prompt_encoder``, ``sam_mask_decoder``, ``memory_encoder``, ``memory_attention``,
    ``obj_ptr_proj``), so ``MODEL.FROZEN_MODULES`` reads the same.

    A frame's features are ``{"vision_features": [N, C, h, w], "vision_pos": [C, h, w],
    "high_res": [[N, C/8, 4h, 4w], [N, C/4, 2h, 2w]] or None}``; a memory bank maps a frame
    index to its ``memory_entry``."""

    def __init__(
        self,
        *,
        backbone: nn.Module,
        in_features: Sequence[str],
        d_model: int,
        mem_dim: int,
        image_size: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        num_maskmem: int = 7,
        use_obj_ptrs: bool = True,
        max_obj_ptrs: int = 16,
        memory_attention_layers: int = 2,
        memory_attention_heads: int = 1,
        memory_attention_ff: int = 256,
        num_fuser_layers: int = 2,
        mask_in_chans: int = 16,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        decoder_mlp_dim: int = 256,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 64,
        use_high_res_features: bool = True,
        iou_prediction_use_sigmoid: bool = True,
        pred_obj_scores: bool = True,
        pred_obj_scores_mlp: bool = True,
        sigmoid_scale_for_mem_enc: float = 20.0,
        sigmoid_bias_for_mem_enc: float = -10.0,
        multimask_output_in_sam: bool = True,
        multimask_min_pt_num: int = 0,
        multimask_max_pt_num: int = 1,
        multimask_output_for_tracking: bool = True,
        use_mask_input_as_output_without_sam: bool = True,
        memory_locality_bias: bool = False,
        prev_mask_as_prompt_for_tracking: bool = False,
    ):
        """
        backbone: returns {name: map} with the three ``in_features`` (strides s, 2s, 4s);
        d_model: width of embeddings and tokens; mem_dim: width of memories (divides d_model);
        image_size: square input size (INPUT.VIDEO.IMAGE_SIZE); pixel_mean, pixel_std: per
        channel, 0-255 range. The other arguments are SAM 2's options of the same names
        (MODEL.SAM2 in the config).
        """
        super().__init__()
        if d_model % mem_dim != 0:
            raise ConfigError(f"MODEL.SAM2.D_MODEL ({d_model}) must be a multiple of MODEL.SAM2.MEM_DIM ({mem_dim})")
        if num_maskmem < 1:
            raise ConfigError(f"MODEL.SAM2.NUM_MASKMEM must be >= 1, got {num_maskmem}")
        shapes = backbone.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ConfigError(f"MODEL.SAM2.IN_FEATURES: backbone has no feature(s) {missing}; it has {sorted(shapes)}")
        in_shapes = [shapes[f] for f in in_features]
        embed_stride = in_shapes[-1].stride
        if embed_stride < 4 or image_size % embed_stride != 0:
            raise ConfigError(
                f"INPUT.VIDEO.IMAGE_SIZE ({image_size}) must be a multiple of the embedding stride "
                f"({embed_stride}, >= 4)"
            )
        self.image_size = int(image_size)
        self.embed_stride = int(embed_stride)
        self.in_features = list(in_features)
        emb = image_size // embed_stride
        self.d_model = d_model
        self.mem_dim = mem_dim

        # SAM 2 module names: image_encoder = trunk (backbone) + neck
        self.image_encoder = nn.ModuleDict({"trunk": backbone, "neck": FpnNeck(in_shapes, d_model)})
        self.sam_prompt_encoder = PromptEncoder(d_model, (emb, emb), (image_size, image_size), mask_in_chans)
        self.sam_mask_decoder = MaskDecoder(
            transformer_dim=d_model,
            transformer=TwoWayTransformer(decoder_depth, d_model, decoder_heads, decoder_mlp_dim),
            num_multimask_outputs=num_multimask_outputs,
            iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim,
            use_high_res_features=use_high_res_features,
            iou_prediction_use_sigmoid=iou_prediction_use_sigmoid,
            pred_obj_scores=pred_obj_scores,
            pred_obj_scores_mlp=pred_obj_scores_mlp,
        )
        self.memory_attention = MemoryAttention(
            d_model,
            mem_dim,
            memory_attention_layers,
            memory_attention_heads,
            memory_attention_ff,
            locality_bias=memory_locality_bias,
        )
        self.memory_encoder = MemoryEncoder(d_model, mem_dim, embed_stride, num_fuser_layers)
        # mask prompts of the image size -> the prompt encoder's mask size (4x the embedding)
        k = embed_stride // 4
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=k, stride=k)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(num_maskmem, 1, 1, mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, d_model))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, d_model))
        self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem_dim))
        self.obj_ptr_proj = MLP(d_model, d_model, d_model, 3)
        self.obj_ptr_tpos_proj = nn.Linear(d_model, mem_dim)
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_obj_ptr, self.no_obj_embed_spatial):
            nn.init.trunc_normal_(p, std=0.02)

        self.register_pixel_stats(pixel_mean, pixel_std)
        self.num_maskmem = num_maskmem
        self.use_obj_ptrs = use_obj_ptrs
        self.max_obj_ptrs = max_obj_ptrs
        self.pred_obj_scores = pred_obj_scores
        self.sigmoid_scale_for_mem_enc = sigmoid_scale_for_mem_enc
        self.sigmoid_bias_for_mem_enc = sigmoid_bias_for_mem_enc
        self.multimask_output_in_sam = multimask_output_in_sam
        self.multimask_min_pt_num = multimask_min_pt_num
        self.multimask_max_pt_num = multimask_max_pt_num
        self.multimask_output_for_tracking = multimask_output_for_tracking
        self.use_mask_input_as_output_without_sam = use_mask_input_as_output_without_sam
        self.prev_mask_as_prompt_for_tracking = prev_mask_as_prompt_for_tracking

    # ------------------------------------------------------------------ per-frame step
    def encode_images(self, images: Tensor) -> Dict[str, Any]:
        """images: uint8 (or float 0-255) [K, 3, H, W] RGB at ``image_size``. Returns
        ``vision_features`` [K, C, h, w] (the embedding), ``vision_pos`` [C, h, w] and
        ``high_res`` (list of [K, C/8, 4h, 4w] and [K, C/4, 2h, 2w], or None)."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise DatasetError(
                f"VideoTracker: frames are {tuple(images.shape[-2:])} but the model was built for "
                f"{self.image_size}x{self.image_size} (INPUT.VIDEO.IMAGE_SIZE)"
            )
        x = self.normalize(images)
        feats = self.image_encoder["trunk"](x)
        fpn, pos = self.image_encoder["neck"]([feats[f] for f in self.in_features])
        dec = self.sam_mask_decoder
        high_res = [dec.conv_s0(fpn[0]), dec.conv_s1(fpn[1])] if dec.use_high_res_features else None
        return {"vision_features": fpn[2], "vision_pos": pos[2], "high_res": high_res}

    def _use_multimask(self, is_init_cond_frame: bool, points: Optional[Tuple[Tensor, Tensor]]) -> bool:
        """SAM 2's rule: 3 masks for prompts of MIN..MAX points (none on tracked frames)."""
        num_pts = 0 if points is None else points[1].size(1)
        return (
            self.multimask_output_in_sam
            and (is_init_cond_frame or self.multimask_output_for_tracking)
            and self.multimask_min_pt_num <= num_pts <= self.multimask_max_pt_num
        )

    def forward_sam_heads(
        self,
        features: Tensor,
        high_res: Optional[List[Tensor]],
        points: Optional[Tuple[Tensor, Tensor]],
        mask_inputs: Optional[Tensor],
        multimask_output: bool,
    ) -> Dict[str, Tensor]:
        """Prompt encoder + mask decoder for N objects. features: [N, C, h, w] (memory-
        conditioned, or + no_mem_embed); points: (coords [N, P, 2], labels [N, P]) or None;
        mask_inputs: [N, 1, H', W'] logits or None. Returns ``low_res_multimasks`` [N, M, 4h, 4w],
        ``high_res_multimasks`` [N, M, H, W], ``ious`` [N, M], ``low_res_masks`` /
        ``high_res_masks`` [N, 1, ...] (the mask with the best predicted IoU), ``obj_ptr``
        [N, C], ``object_score_logits`` [N, 1]."""
        n = features.shape[0]
        if points is None:  # SAM 2 feeds a single padding point when there is no click
            points = (features.new_zeros(n, 1, 2), -torch.ones(n, 1, dtype=torch.int64, device=features.device))
        if mask_inputs is not None:
            size = self.sam_prompt_encoder.mask_input_size
            if tuple(mask_inputs.shape[-2:]) != size:
                mask_inputs = F.interpolate(
                    mask_inputs.float(), size=size, mode="bilinear", align_corners=False, antialias=True
                )
            # previous-step logits can hold NO_OBJ_SCORE; keep the prompt in a sane range
            mask_inputs = mask_inputs.clamp(-32.0, 32.0)
        sparse, dense = self.sam_prompt_encoder(points, mask_inputs, n)
        low_multi, ious, sam_tokens, obj_logits = self.sam_mask_decoder(
            features, self.sam_prompt_encoder.get_dense_pe(), sparse, dense, multimask_output, high_res
        )
        if self.pred_obj_scores:
            is_obj = obj_logits > 0
            low_multi = torch.where(is_obj[:, :, None, None], low_multi, torch.full_like(low_multi, NO_OBJ_SCORE))
        low_multi = low_multi.float()
        high_multi = F.interpolate(
            low_multi, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        rows = torch.arange(n, device=features.device)
        if low_multi.size(1) > 1:
            best = torch.argmax(ious, dim=-1)
            low, high = low_multi[rows, best].unsqueeze(1), high_multi[rows, best].unsqueeze(1)
            token = sam_tokens[rows, best] if sam_tokens.size(1) > 1 else sam_tokens[:, 0]
        else:
            low, high, token = low_multi, high_multi, sam_tokens[:, 0]
        obj_ptr = self.obj_ptr_proj(token)
        if self.pred_obj_scores:
            lam = is_obj.to(obj_ptr.dtype)
            obj_ptr = lam * obj_ptr + (1 - lam) * self.no_obj_ptr
        return {
            "low_res_multimasks": low_multi,
            "high_res_multimasks": high_multi,
            "ious": ious,
            "low_res_masks": low,
            "high_res_masks": high,
            "obj_ptr": obj_ptr,
            "object_score_logits": obj_logits,
        }

    def use_mask_as_output(self, features: Tensor, high_res: Optional[List[Tensor]], mask: Tensor) -> Dict[str, Tensor]:
        """A mask prompt [N, 1, H, W] in {0, 1} taken as the prediction itself (logits +-10,
        IoU 1, object score +-10); the decoder runs on it only for the object pointer."""
        mask = mask.float()
        high = mask * 20.0 - 10.0
        low = F.interpolate(
            high, size=self.sam_prompt_encoder.mask_input_size, mode="bilinear", align_corners=False, antialias=True
        )
        ious = mask.new_ones(mask.shape[0], 1)
        is_obj = mask.flatten(1).any(dim=1, keepdim=True)
        lam = is_obj.to(mask.dtype)
        if self.use_obj_ptrs:
            obj_ptr = self.forward_sam_heads(features, high_res, None, self.mask_downsample(mask), False)["obj_ptr"]
        else:
            obj_ptr = features.new_zeros(mask.shape[0], self.d_model)
        if self.pred_obj_scores:
            obj_ptr = lam * obj_ptr + (1 - lam) * self.no_obj_ptr
        return {
            "low_res_multimasks": low,
            "high_res_multimasks": high,
            "ious": ious,
            "low_res_masks": low,
            "high_res_masks": high,
            "obj_ptr": obj_ptr,
            "object_score_logits": 20.0 * lam - 10.0,
        }

    def condition_on_memory(
        self,
        frame_idx: int,
        vision_features: Tensor,
        vision_pos: Tensor,
        memory_bank: Mapping[int, Mapping[str, Tensor]],
        cond_frames: Sequence[int],
    ) -> Tensor:
        """Memory attention of frame ``frame_idx`` ([N, C, h, w]) over the memories in
        ``memory_bank`` (frame -> ``maskmem_features`` [N, Cm, h, w], ``maskmem_pos_enc``,
        ``obj_ptr`` [N, C]) chosen by ``select_memory_frames`` (past frames only). Without
        any past memory the frame is treated as unconditioned (``+ no_mem_embed``)."""
        n, c, h, w = vision_features.shape
        selected = select_memory_frames(frame_idx, cond_frames, memory_bank.keys(), self.num_maskmem)
        if not selected:
            return vision_features + self.no_mem_embed.view(1, c, 1, 1)
        mems, mem_pos = [], []
        for s, t_pos in selected:
            m = memory_bank[s]
            mems.append(m["maskmem_features"].flatten(2).transpose(1, 2))
            tpos = self.maskmem_tpos_enc[self.num_maskmem - t_pos - 1].view(1, 1, -1)
            mem_pos.append(m["maskmem_pos_enc"].flatten(2).transpose(1, 2) + tpos)
        num_spatial = sum(m.shape[1] for m in mems)
        if self.use_obj_ptrs:
            ptr_frames = select_obj_ptr_frames(frame_idx, cond_frames, memory_bank.keys(), self.max_obj_ptrs)
            if ptr_frames:
                ptrs = torch.stack([memory_bank[s]["obj_ptr"] for s, _ in ptr_frames], dim=1)  # [N, P, C]
                dist = torch.tensor([d for _, d in ptr_frames], device=ptrs.device, dtype=torch.float32)
                tpos = self.obj_ptr_tpos_proj(sine_pos_1d(dist / max(self.max_obj_ptrs - 1, 1), c).to(ptrs.dtype))
                split = c // self.mem_dim  # a pointer of C channels becomes C / Cm memory tokens
                ptrs = ptrs.reshape(n, -1, split, self.mem_dim).flatten(1, 2)
                tpos = tpos.repeat_interleave(split, dim=0)
                mems.append(ptrs)
                mem_pos.append(tpos.unsqueeze(0).expand(n, -1, -1))
        memory = torch.cat(mems, dim=1)
        memory_pos = torch.cat(mem_pos, dim=1)
        pos = vision_pos.unsqueeze(0).expand(n, -1, -1, -1)
        return self.memory_attention(vision_features, pos, memory, memory_pos, num_spatial_memory=num_spatial)

    def encode_memory(
        self, vision_features: Tensor, high_res_masks: Tensor, object_score_logits: Tensor, is_mask_from_pts: bool
    ) -> Tuple[Tensor, Tensor]:
        """Memory of a frame from its raw embedding [N, C, h, w] and final mask logits
        [N, 1, H, W]. Returns (features [N, Cm, h, w], position encoding [N, Cm, h, w])."""
        if is_mask_from_pts and not self.training:
            mask = (high_res_masks > 0).to(vision_features.dtype)  # a click's mask is binarized at test time
        else:
            mask = torch.sigmoid(high_res_masks).to(vision_features.dtype)
        mask = mask * self.sigmoid_scale_for_mem_enc + self.sigmoid_bias_for_mem_enc
        feats, pos = self.memory_encoder(vision_features, mask)
        if self.pred_obj_scores:
            absent = (object_score_logits <= 0).to(feats.dtype)  # [N, 1]
            feats = feats + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return feats, pos

    def track_step(
        self,
        frame_idx: int,
        frame: Mapping[str, Any],
        memory_bank: Mapping[int, Mapping[str, Tensor]],
        cond_frames: Sequence[int],
        *,
        is_init_cond_frame: bool,
        points: Optional[Tuple[Tensor, Tensor]] = None,
        mask_inputs: Optional[Tensor] = None,
    ):
        """One frame for N objects. ``frame``: ``vision_features`` [N, C, h, w], ``vision_pos``,
        ``high_res`` of the objects' images. A prompted (initial conditioning) frame uses its
        prompt and no memory; another frame attends to the past memories.
        Returns (features the decoder saw, the SAM heads' outputs)."""
        vis, hr = frame["vision_features"], frame["high_res"]
        if is_init_cond_frame:
            pix = vis + self.no_mem_embed.view(1, -1, 1, 1)
        else:
            pix = self.condition_on_memory(frame_idx, vis, frame["vision_pos"], memory_bank, cond_frames)
        if mask_inputs is not None and is_init_cond_frame and self.use_mask_input_as_output_without_sam:
            return pix, self.use_mask_as_output(pix, hr, mask_inputs)
        if mask_inputs is None and not is_init_cond_frame and self.prev_mask_as_prompt_for_tracking:
            prev = memory_bank.get(frame_idx - 1)
            mask_inputs = None if prev is None else prev["low_res_masks"]
        multimask = self._use_multimask(is_init_cond_frame, points)
        return pix, self.forward_sam_heads(pix, hr, points, mask_inputs, multimask)

    def memory_entry(
        self, frame: Mapping[str, Any], out: Mapping[str, Tensor], is_mask_from_pts: bool
    ) -> Dict[str, Tensor]:
        """The memory-bank entry of a processed frame."""
        feats, pos = self.encode_memory(
            frame["vision_features"], out["high_res_masks"], out["object_score_logits"], is_mask_from_pts
        )
        entry = {
            "maskmem_features": feats,
            "maskmem_pos_enc": pos,
            "obj_ptr": out["obj_ptr"],
            "low_res_masks": out["low_res_masks"],
        }
        return entry
