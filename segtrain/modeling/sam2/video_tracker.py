"""``VideoTracker``: the SAM 2 video object segmentation meta-architecture: ``SAM2Base``'s
per-frame step with SAM 2's training loop over frames (the official
``sam2/training/model/sam2.py``) and its evaluation path.

Training (``forward(BatchedVideoDatapoint)``) follows SAM 2's recipe: one prompt plan per
batch (GT masks, or a click / box on 1-2 conditioning frames and corrective clicks sampled
from the error region on the corrected frames), every prediction step of every frame
recorded under ``multistep_pred_multimasks_high_res`` / ``multistep_pred_ious`` /
``multistep_object_score_logits`` and handed to the criterion (``MultiStepMultiMasksAndIous``)
with the ``[T, N, H, W]`` targets. As the official ``SAM2Train``, the initial conditioning
frames are processed first and every other frame attends to all of them; the other frames are
processed in temporal order, so they never see the memory of a later non-conditioning frame.

Evaluation (``forward(list of whole-video clip dicts)``) prompts every object on the first
frame where it is visible (``MODEL.SAM2.TEST.PROMPT``) and propagates with
``segtrain.modeling.sam2.VideoPredictor``; outputs are ``VideoEvaluator``'s input.
"""

import dataclasses
import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from segtrain.config import configurable
from segtrain.data.video.datapoint import BatchedVideoDatapoint, collate_video_clips
from segtrain.modeling.criterion import CORE_LOSS_KEY, build_criterion
from segtrain.modeling.meta_arch.build import META_ARCH_REGISTRY
from segtrain.utils.env import in_validation_pass
from segtrain.utils.errors import ConfigError, DatasetError

from .build_sam import sam2_base_kwargs
from .clip_inference import predict_clip_from_gt
from .common import NO_OBJ_SCORE  # noqa: F401  (re-exported: the logit of "no object" in the outputs)
from .prompt_sampling import (
    PromptPlan,
    PromptSettings,
    concat_points,
    get_next_point,
    sample_box_points,
    sample_prompt_plan,
)
from .sam2_base import SAM2Base

__all__ = ["VideoTracker", "MULTISTEP_KEYS"]

logger = logging.getLogger(__name__)

_MASKS = "multistep_pred_multimasks_high_res"
_IOUS = "multistep_pred_ious"
_OBJ = "multistep_object_score_logits"
MULTISTEP_KEYS = (_MASKS, _IOUS, _OBJ)
_TEST_PROMPTS = ("mask", "box", "point")


@META_ARCH_REGISTRY.register()
class VideoTracker(SAM2Base):
    """SAM 2 tracker with its training recipe and evaluation (module docstring); the model
    itself, its submodules and the per-frame step are ``SAM2Base``'s."""

    output_keys = frozenset(MULTISTEP_KEYS + ("pred_masks",))

    @configurable
    def __init__(
        self,
        *,
        criterion: Optional[nn.Module],
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
        eval_prompts: Optional[PromptSettings] = None,
        pt_sampling_for_eval: str = "center",
        test_prompt: str = "mask",
        test_extra_prompts: Sequence[str] = (),
        **model_kwargs: Any,
    ):
        """
        criterion: called as ``criterion(outputs_per_frame, targets [T, N, H, W])`` for
        multistep criteria, or ``criterion({"pred_masks": [B, T, N, H, W]}, {"masks", "valid"})``
        for a criterion requiring ``pred_masks`` (``VideoSimpleCriterion``); None: inference only.
        test_prompt: how inference prompts each object ("mask", "box" or "point");
        test_extra_prompts: more prompt kinds, each also predicted at inference (under
        ``pred_masks_by_prompt``) and scored by the evaluator as ``video_<kind>``.
        The training options are SAM 2's of the same names (MODEL.SAM2.TRAIN in the config);
        eval_prompts: the ``*_for_eval`` ones (MODEL.SAM2.FOR_EVAL), used in eval mode and in a
        validation-loss pass (``segtrain.utils.env.validation_pass``); default: the GT mask on
        the first frame, no correction; pt_sampling_for_eval: "center" or "uniform" clicks then
        (training clicks are always uniform over the error region, as officially);
        model_kwargs: the arguments of ``SAM2Base`` (backbone, sizes, SAM 2's model options).
        """
        if pt_sampling_for_eval not in ("center", "uniform"):
            raise ConfigError(
                f"MODEL.SAM2.FOR_EVAL.PT_SAMPLING must be 'center' or 'uniform'; got {pt_sampling_for_eval!r}"
            )
        if test_prompt not in _TEST_PROMPTS:
            raise ConfigError(f"MODEL.SAM2.TEST.PROMPT must be one of {', '.join(_TEST_PROMPTS)}; got {test_prompt!r}")
        bad = [k for k in test_extra_prompts if k not in _TEST_PROMPTS]
        if bad:
            raise ConfigError(
                f"MODEL.SAM2.TEST.EXTRA_PROMPTS must hold prompt kinds among {', '.join(_TEST_PROMPTS)}; got {bad[0]!r}"
            )
        super().__init__(**model_kwargs)
        self.criterion = criterion
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
        self.eval_prompts = eval_prompts or PromptSettings(0.0, 0.0, 1, False, 1, False)
        self.pt_sampling_for_eval = pt_sampling_for_eval
        self.test_prompt = test_prompt
        # the primary kind is predicted once, under pred_masks
        self.test_extra_prompts = tuple(dict.fromkeys(k for k in test_extra_prompts if k != test_prompt))

    @classmethod
    def from_config(cls, cfg) -> Dict[str, Any]:
        s = cfg.MODEL.SAM2
        t, e = s.TRAIN, s.FOR_EVAL
        if cfg.INPUT.VIDEO.IMAGE_SIZE != s.IMAGE_SIZE:
            raise ConfigError(
                f"INPUT.VIDEO.IMAGE_SIZE ({cfg.INPUT.VIDEO.IMAGE_SIZE}) must equal MODEL.SAM2.IMAGE_SIZE "
                f"({s.IMAGE_SIZE}): the video loaders resize frames to the model's input size"
            )
        return {
            **sam2_base_kwargs(cfg),
            "criterion": build_criterion(cfg),
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
            "eval_prompts": PromptSettings(
                e.PROB_TO_USE_PT_INPUT,
                e.PROB_TO_USE_BOX_INPUT,
                e.NUM_INIT_COND_FRAMES,
                e.RAND_INIT_COND_FRAMES,
                e.NUM_FRAMES_TO_CORRECT,
                e.RAND_FRAMES_TO_CORRECT,
            ),
            "pt_sampling_for_eval": e.PT_SAMPLING,
            "test_prompt": s.TEST.PROMPT,
            "test_extra_prompts": tuple(s.TEST.EXTRA_PROMPTS),
        }

    # ------------------------------------------------------------------ training
    def _training_prompts(self) -> bool:
        """Whether this forward draws the training prompts (else the ``*_for_eval`` ones): in
        training mode, except in a validation-loss pass, as the official ``self.training``."""
        return self.training and not in_validation_pass()

    def sample_prompt_plan(self, num_frames: int) -> PromptPlan:
        if self._training_prompts():
            settings = PromptSettings(
                self.prob_to_use_pt_input_for_train,
                self.prob_to_use_box_input_for_train,
                self.num_init_cond_frames_for_train,
                self.rand_init_cond_frames_for_train,
                self.num_frames_to_correct_for_train,
                self.rand_frames_to_correct_for_train,
            )
        else:
            settings = self.eval_prompts
        return sample_prompt_plan(num_frames, **dataclasses.asdict(settings))

    def _click_method(self) -> str:
        return "uniform" if self._training_prompts() else self.pt_sampling_for_eval

    def forward_tracking(
        self, batch: BatchedVideoDatapoint, plan: Optional[PromptPlan] = None
    ) -> List[Dict[str, List[Tensor]]]:
        """SAM 2's training forward on a batch (padding objects dropped): a list over T
        frames of ``{multistep_pred_multimasks_high_res: [N, M, H, W] per step,
        multistep_pred_ious: [N, M], multistep_object_score_logits: [N, 1]}``.
        ``plan``: the prompts (default: drawn with ``sample_prompt_plan``). As the official
        ``SAM2Train``, the initial conditioning frames are processed first (so every other
        frame attends to all of them), then the other frames in temporal order."""
        num_frames, num_videos = batch.num_frames, batch.num_videos
        keep = batch.obj_valid
        obj_video = batch.obj_batch_idx[keep].to(self.device)
        gt = batch.masks[:, keep].to(self.device).bool()  # [T, N, H, W]
        if gt.shape[-2:] != (self.image_size, self.image_size):
            raise DatasetError(f"VideoTracker: masks are {tuple(gt.shape[-2:])}, the model input is {self.image_size}")
        plan = plan or self.sample_prompt_plan(num_frames)
        _, vision_feats, vision_pos, feat_sizes = self._prepare_backbone_features(
            self.forward_image(self.normalize_frames(batch.flat_img_batch))
        )
        init_cond = list(plan.init_cond_frames)
        order = init_cond + [t for t in range(num_frames) if t not in init_cond]
        output_dict: Dict[str, Dict[int, Dict[str, Any]]] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        for t in order:
            idx = t * num_videos + obj_video  # each object's image in the flat [T * B] batch
            feats = [x[:, idx] for x in vision_feats]
            pos = [x[:, idx] for x in vision_pos]
            is_init = t in init_cond
            point_inputs, mask_inputs = None, None
            if is_init and plan.use_pt_input:
                if t in plan.box_frames:
                    points = sample_box_points(gt[t], self.box_noise, self.box_noise_bound)
                else:
                    points = get_next_point(gt[t], None, self._click_method())
                point_inputs = {"point_coords": points[0], "point_labels": points[1]}
            elif is_init:
                mask_inputs = gt[t].unsqueeze(1).float()
            out = self._track_frame(
                t, is_init, feats, pos, feat_sizes, point_inputs, mask_inputs, gt[t], plan, output_dict, num_frames
            )
            as_cond = is_init or (self.add_all_frames_to_correct_as_cond and t in plan.frames_to_correct)
            output_dict["cond_frame_outputs" if as_cond else "non_cond_frame_outputs"][t] = out
        frames = {**output_dict["cond_frame_outputs"], **output_dict["non_cond_frame_outputs"]}
        return [{k: frames[t][k] for k in MULTISTEP_KEYS} for t in range(num_frames)]

    def _track_frame(
        self, t, is_init, feats, pos, feat_sizes, point_inputs, mask_inputs, gt, plan, output_dict, num_frames
    ):
        """The official ``SAM2Train.track_step``: one frame, then the corrective clicks on the
        frames to correct (each step fed the previous step's low-res mask logits), then the
        memory of the final prediction."""
        current_out, sam_outputs, high_res_features, pix_feat = self._track_step(
            t, is_init, feats, pos, feat_sizes, point_inputs, mask_inputs, output_dict, num_frames, False, None
        )
        steps = [sam_outputs]
        if t in plan.frames_to_correct:
            for _ in range(self.num_correction_pt_per_frame):
                from_gt = (
                    self._training_prompts()
                    and self.prob_to_sample_from_gt_for_train > 0
                    and float(torch.rand(())) < self.prob_to_sample_from_gt_for_train
                )
                high_res_masks = steps[-1][4]
                pred = None if from_gt else high_res_masks[:, 0] > 0
                new_pts = get_next_point(gt, pred, self._click_method())
                pts = None if point_inputs is None else (point_inputs["point_coords"], point_inputs["point_labels"])
                pts = concat_points(pts, *new_pts)
                point_inputs = {"point_coords": pts[0], "point_labels": pts[1]}
                prev = steps[-1][3] if self.iter_use_prev_mask_pred else None
                steps.append(
                    self._forward_sam_heads(
                        pix_feat, point_inputs, prev, high_res_features, self._use_multimask(is_init, point_inputs)
                    )
                )
        _, _, _, low_res_masks, high_res_masks, obj_ptr, object_score_logits = steps[-1]
        current_out.update(
            {
                "pred_masks": low_res_masks,
                "pred_masks_high_res": high_res_masks,
                "obj_ptr": obj_ptr,
                _MASKS: [o[1] for o in steps],
                _IOUS: [o[2] for o in steps],
                _OBJ: [o[6] for o in steps],
            }
        )
        self._encode_memory_in_output(
            feats, feat_sizes, point_inputs, True, high_res_masks, object_score_logits, current_out
        )
        return current_out

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
            losses = self.criterion(outputs, batch.masks[:, batch.obj_valid].to(self.device).float())
        else:
            losses = self.criterion(*self._padded_final_masks(outputs, batch))
        core = losses.get(CORE_LOSS_KEY)
        if torch.is_grad_enabled() and core is not None and not core.requires_grad:
            # every frame was a mask-prompted conditioning frame (the prompt is the output):
            # nothing to learn, but the step must still back-propagate (zero gradients)
            anchor = sum(p.sum() for p in self.parameters() if p.requires_grad)
            losses[CORE_LOSS_KEY] = core + 0.0 * anchor
        return losses

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
                raise DatasetError(
                    f"video id {clip.get('video_id')}: VideoTracker inference needs {key!r} in the "
                    f"input (the video test loader's clip dicts; the GT gives the first-frame prompt)"
                )
        obj_ids = clip.get("obj_ids", torch.arange(clip["masks"].shape[1]))
        obj_ids = obj_ids.tolist() if torch.is_tensor(obj_ids) else list(obj_ids)
        kinds = [self.test_prompt, *self.test_extra_prompts]  # the extra kinds exclude the primary one
        preds = predict_clip_from_gt(self, clip, obj_ids, kinds)
        out: Dict[str, Any] = {"pred_masks": preds[self.test_prompt], "obj_ids": obj_ids}
        if self.test_extra_prompts:
            out["pred_masks_by_prompt"] = {k: preds[k] for k in self.test_extra_prompts}
        return out
