"""The SAM heads step of SAM 2 (the official ``SAM2Base._forward_sam_heads``,
``_use_mask_as_output``, ``_use_multimask``): prompt encoder + mask decoder on (memory-
conditioned) frame features, the best mask by predicted IoU, the object pointer and its
"no object" gating; or a mask prompt taken as the output itself."""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import NO_OBJ_SCORE

__all__ = ["SamHeads", "SamOutputs"]

# (low_res_multimasks, high_res_multimasks, ious, low_res_masks, high_res_masks, obj_ptr,
# object_score_logits), as the official _forward_sam_heads returns them
SamOutputs = Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


class SamHeads:
    """The SAM-heads methods of ``SAM2Base`` (module docstring)."""

    def _forward_sam_heads(
        self,
        backbone_features: Tensor,
        point_inputs: Optional[Dict[str, Tensor]] = None,
        mask_inputs: Optional[Tensor] = None,
        high_res_features: Optional[List[Tensor]] = None,
        multimask_output: bool = False,
    ) -> SamOutputs:
        """Prompt encoder + mask decoder on features [B, C, h, w]. mask_inputs: [B, 1, H', W']
        logits (resized to the prompt encoder's mask size). Returns ``SamOutputs``:
        low_res_multimasks [B, M, 4h, 4w], high_res_multimasks [B, M, H, W], ious [B, M], the
        best of them (by predicted IoU) [B, 1, ...], obj_ptr [B, C], object_score_logits [B, 1]."""
        b = backbone_features.size(0)
        device = backbone_features.device
        if point_inputs is not None:
            coords, labels = point_inputs["point_coords"], point_inputs["point_labels"]
        else:  # a single padding point when there is no click
            coords = torch.zeros(b, 1, 2, device=device)
            labels = -torch.ones(b, 1, dtype=torch.int32, device=device)
        sam_mask_prompt = None
        if mask_inputs is not None:
            if tuple(mask_inputs.shape[-2:]) != tuple(self.sam_prompt_encoder.mask_input_size):
                sam_mask_prompt = F.interpolate(
                    mask_inputs.float(),
                    size=self.sam_prompt_encoder.mask_input_size,
                    align_corners=False,
                    mode="bilinear",
                    antialias=True,
                )
            else:
                sam_mask_prompt = mask_inputs
        sparse, dense = self.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=sam_mask_prompt)
        low_res_multimasks, ious, sam_output_tokens, object_score_logits = self.sam_mask_decoder(
            image_embeddings=backbone_features,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=high_res_features,
        )
        if self.pred_obj_scores:
            is_obj_appearing = object_score_logits > 0
            low_res_multimasks = torch.where(is_obj_appearing[:, None, None], low_res_multimasks, NO_OBJ_SCORE)
        low_res_multimasks = low_res_multimasks.float()
        high_res_multimasks = F.interpolate(
            low_res_multimasks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        sam_output_token = sam_output_tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(b, device=device)
            low_res_masks = low_res_multimasks[rows, best].unsqueeze(1)
            high_res_masks = high_res_multimasks[rows, best].unsqueeze(1)
            if sam_output_tokens.size(1) > 1:
                sam_output_token = sam_output_tokens[rows, best]
        else:
            low_res_masks, high_res_masks = low_res_multimasks, high_res_multimasks
        obj_ptr = self.obj_ptr_proj(sam_output_token)
        if self.pred_obj_scores:
            lam = object_score_logits.sigmoid() if self.soft_no_obj_ptr else is_obj_appearing.float()
            obj_ptr = self._gate_obj_ptr(obj_ptr, lam)
        return (
            low_res_multimasks,
            high_res_multimasks,
            ious,
            low_res_masks,
            high_res_masks,
            obj_ptr,
            object_score_logits,
        )

    def _gate_obj_ptr(self, obj_ptr: Tensor, lam: Tensor) -> Tensor:
        """The pointer [B, C] of an object scored absent (lam [B, 1] = 0) moves to ``no_obj_ptr``."""
        if self.fixed_no_obj_ptr:
            obj_ptr = lam * obj_ptr
        if hasattr(self, "no_obj_ptr"):
            obj_ptr = obj_ptr + (1 - lam) * self.no_obj_ptr
        return obj_ptr

    def _use_mask_as_output(
        self, backbone_features: Tensor, high_res_features: Optional[List[Tensor]], mask_inputs: Tensor
    ) -> SamOutputs:
        """A binary mask prompt [B, 1, H, W] as the prediction itself (logits +-10, IoU 1, object
        score +-10); the SAM heads run on its downsampled form only for the object pointer."""
        out_scale, out_bias = 20.0, -10.0
        mask_float = mask_inputs.float()
        high_res_masks = mask_float * out_scale + out_bias
        low_res_masks = F.interpolate(
            high_res_masks,
            # the decoder's low-res size (image / 4 at SAM 2's stride 16)
            size=self.sam_prompt_encoder.mask_input_size,
            align_corners=False,
            mode="bilinear",
            antialias=True,
        )
        ious = mask_inputs.new_ones(mask_inputs.size(0), 1).float()
        if not self.use_obj_ptrs_in_encoder:
            obj_ptr = torch.zeros(mask_inputs.size(0), self.hidden_dim, device=mask_inputs.device)
        else:
            obj_ptr = self._forward_sam_heads(
                backbone_features, mask_inputs=self.mask_downsample(mask_float), high_res_features=high_res_features
            )[5]
        lam = torch.any(mask_float.flatten(1) > 0.0, dim=1)[..., None].float()
        object_score_logits = out_scale * lam + out_bias
        if self.pred_obj_scores:
            obj_ptr = self._gate_obj_ptr(obj_ptr, lam)
        return low_res_masks, high_res_masks, ious, low_res_masks, high_res_masks, obj_ptr, object_score_logits

    def _use_multimask(self, is_init_cond_frame: bool, point_inputs: Optional[Dict[str, Tensor]]) -> bool:
        """3 masks for prompts of MIN..MAX points (a box counts 2), on tracked frames too with
        ``multimask_output_for_tracking``."""
        num_pts = 0 if point_inputs is None else point_inputs["point_labels"].size(1)
        return (
            self.multimask_output_in_sam
            and (is_init_cond_frame or self.multimask_output_for_tracking)
            and self.multimask_min_pt_num <= num_pts <= self.multimask_max_pt_num
        )
