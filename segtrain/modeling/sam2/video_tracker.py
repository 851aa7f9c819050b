"""``VideoTracker``: a SAM 2-style promptable video object segmentation model.

image encoder (backbone + FPN neck) -> per frame and object: memory attention over PAST
frames (conditioning frames, the last few frames, object pointers) or, on a prompted frame,
the prompt alone -> prompt encoder + mask decoder (3 multimask outputs + 1 single mask, IoU
and object-score heads) -> memory encoder (frame features fused with the predicted mask).

Training (``forward(BatchedVideoDatapoint)``) follows SAM 2's recipe: one prompt plan per
batch (GT masks, or a click / box on 1-2 conditioning frames and corrective clicks sampled
from the error region on the corrected frames), every prediction step of every frame
recorded under ``multistep_pred_multimasks_high_res`` / ``multistep_pred_ious`` /
``multistep_object_score_logits`` and handed to the criterion (``MultiStepMultiMasksAndIous``)
with the ``[T, N, H, W]`` targets. Frames are processed in temporal order, so a frame never
sees the memory of a later one.

Evaluation (``forward(list of whole-video clip dicts)``) prompts every object on the first
frame where it is visible (``MODEL.SAM2.TEST.PROMPT``) and propagates with
``segtrain.modeling.sam2.VideoPredictor``; outputs are ``VideoEvaluator``'s input.
"""
import itertools
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.config import configurable
from segtrain.data.video.datapoint import BatchedVideoDatapoint, collate_video_clips
from segtrain.utils.errors import ConfigError, DatasetError

from segtrain.modeling.meta_arch.build import META_ARCH_REGISTRY
from segtrain.modeling.meta_arch.pixel_normalizer import PixelNormalizer

from .common import MLP, NO_OBJ_SCORE, sine_pos_1d
from .image_encoder import FpnNeck
from .mask_decoder import MaskDecoder, TwoWayTransformer
from .memory_attention import MemoryAttention, select_memory_frames, select_obj_ptr_frames
from .memory_encoder import MemoryEncoder
from .predictor import VideoPredictor
from .prompt_encoder import PromptEncoder
from .prompt_sampling import PromptPlan, concat_points, get_next_point, sample_box_points, sample_prompt_plan
from segtrain.modeling.backbone import build_backbone
from segtrain.modeling.criterion import build_criterion

__all__ = ["VideoTracker", "MULTISTEP_KEYS"]

logger = logging.getLogger(__name__)

_MASKS = "multistep_pred_multimasks_high_res"
_IOUS = "multistep_pred_ious"
_OBJ = "multistep_object_score_logits"
MULTISTEP_KEYS = (_MASKS, _IOUS, _OBJ)
_TEST_PROMPTS = ("mask", "box", "point")


@META_ARCH_REGISTRY.register()
class VideoTracker(PixelNormalizer, nn.Module):
    """SAM 2-style tracker (module docstring). Submodule names follow SAM 2
    (``image_encoder``, ``sam_prompt_encoder``, ``sam_mask_decoder``, ``memory_encoder``,
    ``memory_attention``, ``obj_ptr_proj``), so ``MODEL.FROZEN_MODULES`` reads the same."""

    output_keys = frozenset(MULTISTEP_KEYS + ("pred_masks",))

    @configurable
    def __init__(
        self,
        *,
        backbone: nn.Module,
        in_features: Sequence[str],
        d_model: int,
        mem_dim: int,
        image_size: int,
        criterion: Optional[nn.Module],
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
        iter_use_prev_mask_pred: bool = True,
        prob_to_use_pt_input_for_train: float = 0.5,
        prob_to_use_box_input_for_train: float = 0.5,
        num_init_cond_frames_for_train: int = 2,
        rand_init_cond_frames_for_train: bool = True,
        num_frames_to_correct_for_train: int = 2,
        rand_frames_to_correct_for_train: bool = True,
        num_correction_pt_per_frame: int = 7,
        prob_to_sample_from_gt_for_train: float = 0.1,
        add_all_frames_to_correct_as_cond: bool = True,
        box_noise: float = 0.1,
        box_noise_bound: int = 20,
        test_prompt: str = "mask",
        test_extra_prompts: Sequence[str] = (),
        memory_locality_bias: bool = False,
        prev_mask_as_prompt_for_tracking: bool = False,
    ):
        """
        backbone: returns {name: map} with the three ``in_features`` (strides s, 2s, 4s);
        d_model: width of embeddings and tokens; mem_dim: width of memories (divides d_model);
        image_size: square input size (INPUT.VIDEO.IMAGE_SIZE); criterion: called as
        ``criterion(outputs_per_frame, targets [T, N, H, W])`` for multistep criteria, or
        ``criterion({"pred_masks": [B, T, N, H, W]}, {"masks", "valid"})`` for a criterion
        requiring ``pred_masks`` (``VideoSimpleCriterion``); None: inference only.
        test_prompt: how inference prompts each object ("mask", "box" or "point");
        test_extra_prompts: more prompt kinds, each also predicted at inference (under
        ``pred_masks_by_prompt``) and scored by the evaluator as ``video_<kind>``.
        The other arguments are SAM 2's options of the same names (MODEL.SAM2 in the config).
        """
        super().__init__()
        if test_prompt not in _TEST_PROMPTS:
            raise ConfigError(f"MODEL.SAM2.TEST.PROMPT must be one of {', '.join(_TEST_PROMPTS)}; got {test_prompt!r}")
        bad = [k for k in test_extra_prompts if k not in _TEST_PROMPTS]
        if bad:
            raise ConfigError(
                f"MODEL.SAM2.TEST.EXTRA_PROMPTS must hold prompt kinds among {', '.join(_TEST_PROMPTS)}; got {bad[0]!r}"
            )
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
                f"INPUT.VIDEO.IMAGE_SIZE ({image_size}) must be a multiple of the embedding stride ({embed_stride}, >= 4)"
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
            num_multimask_outputs=num_multimask_outputs, iou_head_depth=iou_head_depth,
            iou_head_hidden_dim=iou_head_hidden_dim, use_high_res_features=use_high_res_features,
            iou_prediction_use_sigmoid=iou_prediction_use_sigmoid, pred_obj_scores=pred_obj_scores,
            pred_obj_scores_mlp=pred_obj_scores_mlp,
        )
        self.memory_attention = MemoryAttention(d_model, mem_dim, memory_attention_layers, memory_attention_heads,
                                                memory_attention_ff, locality_bias=memory_locality_bias)
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

        self.criterion = criterion
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
        self.iter_use_prev_mask_pred = iter_use_prev_mask_pred
        self.prob_to_use_pt_input_for_train = prob_to_use_pt_input_for_train
        self.prob_to_use_box_input_for_train = prob_to_use_box_input_for_train
        self.num_init_cond_frames_for_train = num_init_cond_frames_for_train
        self.rand_init_cond_frames_for_train = rand_init_cond_frames_for_train
        self.num_frames_to_correct_for_train = num_frames_to_correct_for_train
        self.rand_frames_to_correct_for_train = rand_frames_to_correct_for_train
        self.num_correction_pt_per_frame = num_correction_pt_per_frame
        self.prob_to_sample_from_gt_for_train = prob_to_sample_from_gt_for_train
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.box_noise = box_noise
        self.box_noise_bound = box_noise_bound
        self.test_prompt = test_prompt
        # the primary kind is predicted once, under pred_masks
        self.test_extra_prompts = tuple(dict.fromkeys(k for k in test_extra_prompts if k != test_prompt))
        self.prev_mask_as_prompt_for_tracking = prev_mask_as_prompt_for_tracking

    @classmethod
    def from_config(cls, cfg) -> Dict[str, Any]:
        s = cfg.MODEL.SAM2
        t = s.TRAIN
        return {
            "backbone": build_backbone(cfg),
            "in_features": s.IN_FEATURES,
            "d_model": s.D_MODEL,
            "mem_dim": s.MEM_DIM,
            "image_size": cfg.INPUT.VIDEO.IMAGE_SIZE,
            "criterion": build_criterion(cfg),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "num_maskmem": s.NUM_MASKMEM,
            "use_obj_ptrs": s.USE_OBJ_PTRS,
            "max_obj_ptrs": s.MAX_OBJ_PTRS,
            "memory_attention_layers": s.MEMORY_ATTENTION.NUM_LAYERS,
            "memory_attention_heads": s.MEMORY_ATTENTION.NUM_HEADS,
            "memory_attention_ff": s.MEMORY_ATTENTION.DIM_FEEDFORWARD,
            "num_fuser_layers": s.MEMORY_ENCODER.NUM_FUSER_LAYERS,
            "mask_in_chans": s.PROMPT_ENCODER.MASK_IN_CHANS,
            "decoder_depth": s.MASK_DECODER.DEPTH,
            "decoder_heads": s.MASK_DECODER.NUM_HEADS,
            "decoder_mlp_dim": s.MASK_DECODER.MLP_DIM,
            "num_multimask_outputs": s.MASK_DECODER.NUM_MULTIMASK_OUTPUTS,
            "iou_head_depth": s.MASK_DECODER.IOU_HEAD_DEPTH,
            "iou_head_hidden_dim": s.MASK_DECODER.IOU_HEAD_HIDDEN_DIM,
            "use_high_res_features": s.MASK_DECODER.USE_HIGH_RES_FEATURES,
            "iou_prediction_use_sigmoid": s.MASK_DECODER.IOU_PREDICTION_USE_SIGMOID,
            "pred_obj_scores": s.MASK_DECODER.PRED_OBJ_SCORES,
            "pred_obj_scores_mlp": s.MASK_DECODER.PRED_OBJ_SCORES_MLP,
            "sigmoid_scale_for_mem_enc": s.SIGMOID_SCALE_FOR_MEM_ENC,
            "sigmoid_bias_for_mem_enc": s.SIGMOID_BIAS_FOR_MEM_ENC,
            "multimask_output_in_sam": s.MULTIMASK_OUTPUT,
            "multimask_min_pt_num": s.MULTIMASK_MIN_PT_NUM,
            "multimask_max_pt_num": s.MULTIMASK_MAX_PT_NUM,
            "multimask_output_for_tracking": s.MULTIMASK_OUTPUT_FOR_TRACKING,
            "use_mask_input_as_output_without_sam": s.USE_MASK_INPUT_AS_OUTPUT,
            "iter_use_prev_mask_pred": s.ITER_USE_PREV_MASK_PRED,
            "prob_to_use_pt_input_for_train": t.PROB_TO_USE_PT_INPUT,
            "prob_to_use_box_input_for_train": t.PROB_TO_USE_BOX_INPUT,
            "num_init_cond_frames_for_train": t.NUM_INIT_COND_FRAMES,
            "rand_init_cond_frames_for_train": t.RAND_INIT_COND_FRAMES,
            "num_frames_to_correct_for_train": t.NUM_FRAMES_TO_CORRECT,
            "rand_frames_to_correct_for_train": t.RAND_FRAMES_TO_CORRECT,
            "num_correction_pt_per_frame": t.NUM_CORRECTION_POINTS,
            "prob_to_sample_from_gt_for_train": t.PROB_TO_SAMPLE_FROM_GT,
            "add_all_frames_to_correct_as_cond": t.ADD_ALL_FRAMES_TO_CORRECT_AS_COND,
            "box_noise": t.BOX_NOISE,
            "box_noise_bound": t.BOX_NOISE_BOUND,
            "test_prompt": s.TEST.PROMPT,
            "test_extra_prompts": tuple(s.TEST.EXTRA_PROMPTS),
            "memory_locality_bias": s.MEMORY_ATTENTION.LOCALITY_BIAS,
            "prev_mask_as_prompt_for_tracking": s.PREV_MASK_AS_PROMPT_FOR_TRACKING,
        }

    # ------------------------------------------------------------------ building blocks
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
        return (self.multimask_output_in_sam and (is_init_cond_frame or self.multimask_output_for_tracking)
                and self.multimask_min_pt_num <= num_pts <= self.multimask_max_pt_num)

    def forward_sam_heads(self, features: Tensor, high_res: Optional[List[Tensor]],
                          points: Optional[Tuple[Tensor, Tensor]], mask_inputs: Optional[Tensor],
                          multimask_output: bool) -> Dict[str, Tensor]:
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
                mask_inputs = F.interpolate(mask_inputs.float(), size=size, mode="bilinear", align_corners=False,
                                            antialias=True)
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
        high_multi = F.interpolate(low_multi, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False)
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
        return {"low_res_multimasks": low_multi, "high_res_multimasks": high_multi, "ious": ious,
                "low_res_masks": low, "high_res_masks": high, "obj_ptr": obj_ptr, "object_score_logits": obj_logits}

    def use_mask_as_output(self, features: Tensor, high_res: Optional[List[Tensor]], mask: Tensor) -> Dict[str, Tensor]:
        """A mask prompt [N, 1, H, W] in {0, 1} taken as the prediction itself (logits +-10,
        IoU 1, object score +-10); the decoder runs on it only for the object pointer."""
        mask = mask.float()
        high = mask * 20.0 - 10.0
        low = F.interpolate(high, size=self.sam_prompt_encoder.mask_input_size, mode="bilinear",
                            align_corners=False, antialias=True)
        ious = mask.new_ones(mask.shape[0], 1)
        is_obj = mask.flatten(1).any(dim=1, keepdim=True)
        lam = is_obj.to(mask.dtype)
        if self.use_obj_ptrs:
            obj_ptr = self.forward_sam_heads(features, high_res, None, self.mask_downsample(mask), False)["obj_ptr"]
        else:
            obj_ptr = features.new_zeros(mask.shape[0], self.d_model)
        if self.pred_obj_scores:
            obj_ptr = lam * obj_ptr + (1 - lam) * self.no_obj_ptr
        return {"low_res_multimasks": low, "high_res_multimasks": high, "ious": ious, "low_res_masks": low,
                "high_res_masks": high, "obj_ptr": obj_ptr, "object_score_logits": 20.0 * lam - 10.0}

    def condition_on_memory(self, frame_idx: int, vision_features: Tensor, vision_pos: Tensor,
                            memory_bank: Mapping[int, Mapping[str, Tensor]], cond_frames: Sequence[int]) -> Tensor:
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

    def encode_memory(self, vision_features: Tensor, high_res_masks: Tensor, object_score_logits: Tensor,
                      is_mask_from_pts: bool) -> Tuple[Tensor, Tensor]:
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

    def track_step(self, frame_idx: int, frame: Mapping[str, Any], memory_bank: Mapping[int, Mapping[str, Tensor]],
                   cond_frames: Sequence[int], *, is_init_cond_frame: bool,
                   points: Optional[Tuple[Tensor, Tensor]] = None, mask_inputs: Optional[Tensor] = None):
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

    def memory_entry(self, frame: Mapping[str, Any], out: Mapping[str, Tensor],
                     is_mask_from_pts: bool) -> Dict[str, Tensor]:
        """The memory-bank entry of a processed frame."""
        feats, pos = self.encode_memory(frame["vision_features"], out["high_res_masks"], out["object_score_logits"],
                                        is_mask_from_pts)
        entry = {"maskmem_features": feats, "maskmem_pos_enc": pos, "obj_ptr": out["obj_ptr"],
                 "low_res_masks": out["low_res_masks"]}
        return entry

    # ------------------------------------------------------------------ training
    def sample_prompt_plan(self, num_frames: int) -> PromptPlan:
        return sample_prompt_plan(
            num_frames,
            prob_to_use_pt_input=self.prob_to_use_pt_input_for_train,
            prob_to_use_box_input=self.prob_to_use_box_input_for_train,
            num_init_cond_frames=self.num_init_cond_frames_for_train,
            rand_init_cond_frames=self.rand_init_cond_frames_for_train,
            num_frames_to_correct=self.num_frames_to_correct_for_train,
            rand_frames_to_correct=self.rand_frames_to_correct_for_train,
        )

    def forward_tracking(self, batch: BatchedVideoDatapoint,
                         plan: Optional[PromptPlan] = None) -> List[Dict[str, List[Tensor]]]:
        """SAM 2's training forward on a batch (padding objects dropped): a list over T
        frames of ``{multistep_pred_multimasks_high_res: [N, M, H, W] per step,
        multistep_pred_ious: [N, M], multistep_object_score_logits: [N, 1]}``.
        ``plan``: the prompts (default: drawn with ``sample_prompt_plan``)."""
        num_frames, num_videos = batch.num_frames, batch.num_videos
        keep = batch.obj_valid
        obj_video = batch.obj_batch_idx[keep].to(self.device)
        gt = batch.masks[:, keep].to(self.device).bool()  # [T, N, H, W]
        if gt.shape[-2:] != (self.image_size, self.image_size):
            raise DatasetError(f"VideoTracker: masks are {tuple(gt.shape[-2:])}, the model input is {self.image_size}")
        plan = plan or self.sample_prompt_plan(num_frames)
        feats = self.encode_images(batch.flat_img_batch)
        memory_bank: Dict[int, Dict[str, Tensor]] = {}
        cond_frames: List[int] = []
        outputs = []
        for t in range(num_frames):
            idx = t * num_videos + obj_video  # each object's image in the flat [T * B] batch
            frame = {"vision_features": feats["vision_features"][idx], "vision_pos": feats["vision_pos"],
                     "high_res": None if feats["high_res"] is None else [f[idx] for f in feats["high_res"]]}
            is_init = t in plan.init_cond_frames
            points, mask_inputs = None, None
            if is_init and plan.use_pt_input:
                if plan.use_box_input:
                    points = sample_box_points(gt[t], self.box_noise, self.box_noise_bound)
                else:
                    points = get_next_point(gt[t], None, "uniform")
            elif is_init:
                mask_inputs = gt[t].unsqueeze(1).float()
            pix, out = self.track_step(t, frame, memory_bank, cond_frames, is_init_cond_frame=is_init,
                                       points=points, mask_inputs=mask_inputs)
            steps = [out]
            if t in plan.frames_to_correct:
                for _ in range(self.num_correction_pt_per_frame):
                    from_gt = float(torch.rand(())) < self.prob_to_sample_from_gt_for_train
                    pred = None if from_gt else out["high_res_masks"][:, 0] > 0
                    new_pts = get_next_point(gt[t], pred, "uniform" if from_gt else "center")
                    points = concat_points(points, *new_pts)
                    prev = out["low_res_masks"] if self.iter_use_prev_mask_pred else None
                    out = self.forward_sam_heads(pix, frame["high_res"], points, prev,
                                                 self._use_multimask(is_init, points))
                    steps.append(out)
            if is_init or (t in plan.frames_to_correct and self.add_all_frames_to_correct_as_cond):
                cond_frames.append(t)
            memory_bank[t] = self.memory_entry(frame, out, is_mask_from_pts=points is not None)
            outputs.append({
                _MASKS: [o["high_res_multimasks"] for o in steps],
                _IOUS: [o["ious"] for o in steps],
                _OBJ: [o["object_score_logits"] for o in steps],
            })
        return outputs

    def _uses_multistep_outputs(self) -> bool:
        keys = tuple(getattr(self.criterion, "required_output_keys", ()) or ())
        return "pred_masks" not in keys

    def _padded_final_masks(self, outputs: List[Dict[str, List[Tensor]]], batch: BatchedVideoDatapoint):
        """Final-step best mask per frame as ``[B, T, Nmax, H, W]`` logits, targets and a
        ``[B, T, Nmax]`` valid mask (objects of each video, padded), for criteria that take
        one mask per object and frame."""
        keep = batch.obj_valid
        obj_video = batch.obj_batch_idx[keep].to(self.device)
        gt = batch.masks[:, keep].to(self.device).float()
        final = []
        for o in outputs:
            masks, ious = o[_MASKS][-1], o[_IOUS][-1]
            best = torch.argmax(ious, dim=-1)
            final.append(masks[torch.arange(masks.shape[0], device=masks.device), best])
        pred = torch.stack(final, dim=0)  # [T, N, H, W]
        num_videos, num_frames = batch.num_videos, batch.num_frames
        counts = torch.bincount(obj_video, minlength=num_videos)
        n_max = int(counts.max()) if counts.numel() else 0
        h, w = pred.shape[-2:]
        out = pred.new_zeros(num_videos, num_frames, n_max, h, w)
        tgt = gt.new_zeros(num_videos, num_frames, n_max, h, w)
        valid = torch.zeros(num_videos, num_frames, n_max, dtype=torch.bool, device=pred.device)
        slot = torch.zeros_like(obj_video)
        for b in range(num_videos):
            sel = (obj_video == b).nonzero().flatten()
            slot[sel] = torch.arange(sel.numel(), device=sel.device)
        out[obj_video, :, slot] = pred.transpose(0, 1)
        tgt[obj_video, :, slot] = gt.transpose(0, 1)
        valid[obj_video, :, slot] = True
        return {"pred_masks": out}, {"masks": tgt, "valid": valid}

    def losses(self, batch: BatchedVideoDatapoint, plan: Optional[PromptPlan] = None) -> Dict[str, Tensor]:
        """The criterion's loss dict (with ``core_loss``) on a batch."""
        if self.criterion is None:
            raise ConfigError("VideoTracker was built without a criterion (MODEL.CRITERION.NAME); it cannot train")
        outputs = self.forward_tracking(batch, plan)
        if self._uses_multistep_outputs():
            return self.criterion(outputs, batch.masks[:, batch.obj_valid].to(self.device).float())
        preds, targets = self._padded_final_masks(outputs, batch)
        return self.criterion(preds, targets)

    # ------------------------------------------------------------------ entry point
    def forward(self, batched_inputs):
        """A ``BatchedVideoDatapoint`` gives the loss dict (whatever the mode: a validation
        loss is computed the same way). A list of clip dicts (video mapper outputs) gives the
        loss dict in training mode and, in eval mode, one dict per clip with ``pred_masks``
        bool [T, N, height, width] and ``obj_ids`` [N] (``VideoEvaluator`` input)."""
        if isinstance(batched_inputs, BatchedVideoDatapoint):
            return self.losses(batched_inputs)
        if self.training:
            return self.losses(collate_video_clips(batched_inputs))
        return [self.inference_clip(clip) for clip in batched_inputs]

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def inference_clip(self, clip: Mapping[str, Any]) -> Dict[str, Any]:
        """Semi-supervised VOS on one whole-video clip: each object prompted (``test_prompt``)
        on the first frame its GT is visible in, then propagated forward. Returns
        ``pred_masks`` bool [T, N, height, width] and ``obj_ids`` [N]; with
        ``test_extra_prompts``, also ``pred_masks_by_prompt`` {kind: bool [T, N, height, width]}."""
        for key in ("images", "masks"):
            if key not in clip:
                raise DatasetError(f"video id {clip.get('video_id')}: VideoTracker inference needs {key!r} in the "
                                   f"input (the video test loader's clip dicts; the GT gives the first-frame prompt)")
        obj_ids = clip.get("obj_ids", torch.arange(clip["masks"].shape[1]))
        obj_ids = obj_ids.tolist() if torch.is_tensor(obj_ids) else list(obj_ids)
        kinds = [self.test_prompt, *self.test_extra_prompts]  # the extra kinds exclude the primary one
        preds = self._predict_clip(clip, obj_ids, kinds)
        out: Dict[str, Any] = {"pred_masks": preds[self.test_prompt], "obj_ids": obj_ids}
        if self.test_extra_prompts:
            out["pred_masks_by_prompt"] = {k: preds[k] for k in self.test_extra_prompts}
        return out

    def _predict_clip(self, clip: Mapping[str, Any], obj_ids: List[Any], kinds: List[str]) -> Dict[str, Tensor]:
        """{kind: bool [T, N, height, width]}: for each prompt kind, each object prompted that
        way from its GT on its first visible frame, then propagated. The kinds run frame by
        frame side by side and share each frame's image features."""
        images, gt = clip["images"], clip["masks"].bool()
        shape = (images.shape[0], len(obj_ids), int(clip.get("height", self.image_size)),
                 int(clip.get("width", self.image_size)))
        index = {oid: n for n, oid in enumerate(obj_ids)}
        features: Dict[int, Dict[str, Any]] = {}
        preds = {kind: torch.zeros(shape, dtype=torch.bool) for kind in kinds}
        runs = []
        for kind in kinds:
            predictor = VideoPredictor(self)
            state = predictor.init_state(images, cached_features=features)
            for n, oid in enumerate(obj_ids):
                visible = gt[:, n].flatten(1).any(dim=1).nonzero().flatten()
                if visible.numel() > 0:
                    predictor.add_prompt_from_mask(state, int(visible[0]), oid, gt[int(visible[0]), n], kind)
            runs.append(predictor.propagate_in_video(state))
        was_training = self.training
        self.eval()  # before the runs start: each one restores the mode it found when it ends
        try:
            for steps in itertools.zip_longest(*runs):
                for kind, step in zip(kinds, steps):
                    if step is None or not step[1]:
                        continue
                    t, ids, logits = step
                    up = F.interpolate(logits, size=shape[2:], mode="bilinear", align_corners=False)
                    preds[kind][t, [index[i] for i in ids]] = (up[:, 0] > 0).cpu()
        finally:
            self.train(was_training)
        return preds
