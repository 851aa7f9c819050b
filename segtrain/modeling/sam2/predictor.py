"""``VideoPredictor``: the official ``SAM2VideoPredictor`` calls and semantics on a SAM 2 model.

    predictor = build_video_predictor(cfg)                # or VideoPredictor(model)
    state = predictor.init_state(frames)                  # uint8 [T, H, W, 3] or a JPEG folder
    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[x, y]], labels=[1])
    predictor.add_new_mask(state, frame_idx=3, obj_id=2, mask=bool_mask)
    for frame_idx, obj_ids, mask_logits in predictor.propagate_in_video(state):
        ...                                               # mask_logits: [len(obj_ids), 1, H, W]

Each object is tracked on its own (batch 1) with its own memory; prompts on a frame already
tracked are corrections (the frame becomes a conditioning frame). Frames are encoded lazily,
one at a time. Memory features are kept in bfloat16, as the official predictor does.
"""

from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .common import NO_OBJ_SCORE
from .video_frames import fill_holes_in_mask_scores, load_video_frames
from .video_predictor_state import PredictorStateMixin

__all__ = ["VideoPredictor"]


class VideoPredictor(PredictorStateMixin):
    """Inference with a ``SAM2Base`` (eval mode, no gradients). fill_hole_area: holes of at
    most this many pixels in the low-res masks are filled (0: off); non_overlap_masks: each
    pixel kept for its best object in the outputs; clear_non_cond_mem_around_input: drop the
    tracked memories around a corrected frame; add_all_frames_to_correct_as_cond: corrected
    frames become conditioning frames."""

    def __init__(
        self,
        model,
        fill_hole_area: int = 0,
        non_overlap_masks: bool = False,
        clear_non_cond_mem_around_input: bool = False,
        add_all_frames_to_correct_as_cond: bool = False,
    ):
        self.model = model
        self.fill_hole_area = fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @torch.inference_mode()
    def init_state(
        self,
        frames,
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        cached_features: Optional[Dict[int, Any]] = None,
    ) -> Dict[str, Any]:
        """frames: uint8 RGB [T, H, W, 3] or a folder of JPEG frames. Encodes frame 0.
        offload_video_to_cpu: keep the frames on the CPU (else on the model's device);
        offload_state_to_cpu: keep the memories and masks on the CPU. cached_features: a
        {frame: features} dict to share with other states of the same video and model
        propagated in step (each frame is then encoded once for all)."""
        images, height, width = load_video_frames(frames, self.image_size)
        device = self.model.device
        if not offload_video_to_cpu:
            images = images.to(device)
        state: Dict[str, Any] = {
            "images": images,
            "num_frames": len(images),
            "video_height": height,
            "video_width": width,
            "device": device,
            "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": {} if cached_features is None else cached_features,
            "constants": {},
            "obj_id_to_idx": OrderedDict(),
            "obj_idx_to_id": OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
        }
        self._get_image_feature(state, frame_idx=0, batch_size=1)
        return state

    # ------------------------------------------------------------------ frames and features
    def _get_image_feature(self, state: Dict[str, Any], frame_idx: int, batch_size: int):
        """(image, backbone_out, vision_feats, vision_pos_embeds, feat_sizes) for batch_size objects."""
        image, backbone_out = state["cached_features"].get(frame_idx, (None, None))
        if backbone_out is None:
            image = state["images"][frame_idx].to(state["device"]).float().unsqueeze(0)
            backbone_out = self.model.forward_image(image)
            # one frame at a time (cleared in place: states that share the dict share the frame)
            state["cached_features"].clear()
            state["cached_features"][frame_idx] = (image, backbone_out)
        expanded = {
            "backbone_fpn": [f.expand(batch_size, -1, -1, -1) for f in backbone_out["backbone_fpn"]],
            "vision_pos_enc": [p.expand(batch_size, -1, -1, -1) for p in backbone_out["vision_pos_enc"]],
        }
        return (image.expand(batch_size, -1, -1, -1),) + self.model._prepare_backbone_features(expanded)

    def _get_orig_video_res_output(self, state: Dict[str, Any], any_res_masks: Tensor) -> Tuple[Tensor, Tensor]:
        """(the masks, the masks resized to the video [N, 1, H, W] (non-overlapping if asked))."""
        h, w = state["video_height"], state["video_width"]
        any_res_masks = any_res_masks.to(state["device"])
        if any_res_masks.shape[-2:] == (h, w):
            video_res_masks = any_res_masks
        else:
            video_res_masks = F.interpolate(any_res_masks, size=(h, w), mode="bilinear", align_corners=False)
        if self.non_overlap_masks:
            video_res_masks = self.model._apply_non_overlapping_constraints(video_res_masks)
        return any_res_masks, video_res_masks

    # ------------------------------------------------------------------ one frame of one object
    def _run_single_frame_inference(
        self,
        state: Dict[str, Any],
        output_dict: Dict[str, Dict[int, Any]],
        frame_idx: int,
        batch_size: int,
        is_init_cond_frame: bool,
        point_inputs: Optional[Dict[str, Tensor]],
        mask_inputs: Optional[Tensor],
        reverse: bool,
        run_mem_encoder: bool,
        prev_sam_mask_logits: Optional[Tensor] = None,
    ) -> Tuple[Dict[str, Any], Tensor]:
        """(the compact frame output kept in the state, its low-res mask logits [B, 1, h, w])."""
        _, _, feats, pos, sizes = self._get_image_feature(state, frame_idx, batch_size)
        if point_inputs is not None and mask_inputs is not None:
            raise ValueError("a frame takes points or a mask as its prompt, not both")
        out = self.model.track_step(
            frame_idx=frame_idx,
            is_init_cond_frame=is_init_cond_frame,
            current_vision_feats=feats,
            current_vision_pos_embeds=pos,
            feat_sizes=sizes,
            point_inputs=point_inputs,
            mask_inputs=mask_inputs,
            output_dict=output_dict,
            num_frames=state["num_frames"],
            track_in_reverse=reverse,
            run_mem_encoder=run_mem_encoder,
            prev_sam_mask_logits=prev_sam_mask_logits,
        )
        maskmem_features = out["maskmem_features"]
        if maskmem_features is not None:
            maskmem_features = maskmem_features.to(torch.bfloat16).to(state["storage_device"])
        pred_masks = out["pred_masks"]
        if self.fill_hole_area > 0:
            pred_masks = fill_holes_in_mask_scores(pred_masks, self.fill_hole_area)
        compact = {
            "maskmem_features": maskmem_features,
            "maskmem_pos_enc": self._get_maskmem_pos_enc(state, out),
            "pred_masks": pred_masks.to(state["storage_device"]),
            "obj_ptr": out["obj_ptr"],
            "object_score_logits": out["object_score_logits"],
        }
        return compact, pred_masks

    def _run_memory_encoder(self, state, frame_idx, batch_size, high_res_masks, object_score_logits, is_mask_from_pts):
        _, _, feats, _, sizes = self._get_image_feature(state, frame_idx, batch_size)
        maskmem_features, maskmem_pos_enc = self.model._encode_new_memory(
            feats, sizes, high_res_masks, object_score_logits, is_mask_from_pts
        )
        maskmem_features = maskmem_features.to(torch.bfloat16).to(state["storage_device"])
        return maskmem_features, self._get_maskmem_pos_enc(state, {"maskmem_pos_enc": maskmem_pos_enc})

    @staticmethod
    def _get_maskmem_pos_enc(state: Dict[str, Any], current_out: Dict[str, Any]) -> Optional[List[Tensor]]:
        """The memory position encoding is the same for every frame and object: kept once."""
        out_pos = current_out["maskmem_pos_enc"]
        if out_pos is None:
            return None
        constants = state["constants"]
        if "maskmem_pos_enc" not in constants:
            constants["maskmem_pos_enc"] = [x[0:1].clone() for x in out_pos]
        batch_size = out_pos[0].size(0)
        return [x.expand(batch_size, -1, -1, -1) for x in constants["maskmem_pos_enc"]]

    # ------------------------------------------------------------------ propagation
    @torch.inference_mode()
    def propagate_in_video_preflight(self, state: Dict[str, Any]) -> None:
        """Move the prompted frames' outputs into the tracking memory (running the memory
        encoder on them) before tracking."""
        batch_size = self._get_obj_num(state)
        if batch_size == 0:
            raise RuntimeError("No input points or masks are provided for any object; please add inputs first.")
        for obj_idx in range(batch_size):
            obj_output_dict = state["output_dict_per_obj"][obj_idx]
            obj_temp_output_dict = state["temp_output_dict_per_obj"][obj_idx]
            for storage_key in ("non_cond_frame_outputs", "cond_frame_outputs"):
                for frame_idx, out in obj_temp_output_dict[storage_key].items():
                    if out["maskmem_features"] is None:
                        high_res_masks = F.interpolate(
                            out["pred_masks"].to(state["device"]),
                            size=(self.image_size, self.image_size),
                            mode="bilinear",
                            align_corners=False,
                        )
                        out["maskmem_features"], out["maskmem_pos_enc"] = self._run_memory_encoder(
                            state, frame_idx, 1, high_res_masks, out["object_score_logits"], True
                        )
                    obj_output_dict[storage_key][frame_idx] = out
                    if self.clear_non_cond_mem_around_input:
                        self._clear_obj_non_cond_mem_around_input(state, frame_idx, obj_idx)
                obj_temp_output_dict[storage_key].clear()
            if not obj_output_dict["cond_frame_outputs"]:
                obj_id = state["obj_idx_to_id"][obj_idx]
                raise RuntimeError(
                    f"No input points or masks are provided for object id {obj_id}; please add inputs first."
                )
            for frame_idx in obj_output_dict["cond_frame_outputs"]:
                obj_output_dict["non_cond_frame_outputs"].pop(frame_idx, None)

    @torch.inference_mode()
    def propagate_in_video(
        self,
        state: Dict[str, Any],
        start_frame_idx: Optional[int] = None,
        max_frame_num_to_track: Optional[int] = None,
        reverse: bool = False,
    ) -> Iterator[Tuple[int, List[Any], Tensor]]:
        """Yield ``(frame_idx, obj_ids, mask_logits [N, 1, H, W])`` for each frame from
        ``start_frame_idx`` (default: the first prompted frame) over ``max_frame_num_to_track``
        more frames, forward or in reverse."""
        self.propagate_in_video_preflight(state)
        obj_ids = state["obj_ids"]
        num_frames = state["num_frames"]
        batch_size = self._get_obj_num(state)
        if start_frame_idx is None:
            start_frame_idx = min(t for o in state["output_dict_per_obj"].values() for t in o["cond_frame_outputs"])
        if max_frame_num_to_track is None:
            max_frame_num_to_track = num_frames
        if reverse:
            end_frame_idx = max(start_frame_idx - max_frame_num_to_track, 0)
            order = range(start_frame_idx, end_frame_idx - 1, -1) if start_frame_idx > 0 else []
        else:
            end_frame_idx = min(start_frame_idx + max_frame_num_to_track, num_frames - 1)
            order = range(start_frame_idx, end_frame_idx + 1)
        for frame_idx in order:
            pred_masks_per_obj: List[Tensor] = []
            for obj_idx in range(batch_size):
                obj_output_dict = state["output_dict_per_obj"][obj_idx]
                if frame_idx in obj_output_dict["cond_frame_outputs"]:
                    pred_masks = obj_output_dict["cond_frame_outputs"][frame_idx]["pred_masks"].to(state["device"])
                    if self.clear_non_cond_mem_around_input:
                        self._clear_obj_non_cond_mem_around_input(state, frame_idx, obj_idx)
                else:
                    out, pred_masks = self._run_single_frame_inference(
                        state, obj_output_dict, frame_idx, 1, False, None, None, reverse, True
                    )
                    obj_output_dict["non_cond_frame_outputs"][frame_idx] = out
                state["frames_tracked_per_obj"][obj_idx][frame_idx] = {"reverse": reverse}
                pred_masks_per_obj.append(pred_masks)
            all_pred_masks = torch.cat(pred_masks_per_obj, dim=0)
            _, video_res_masks = self._get_orig_video_res_output(state, all_pred_masks)
            yield frame_idx, obj_ids, video_res_masks

    def _consolidate_temp_output_across_obj(self, state, frame_idx: int, is_cond: bool) -> Tensor:
        """Every object's current mask logits on a frame at the video's resolution [N, 1, H, W]
        (``NO_OBJ_SCORE`` for objects without an output there)."""
        batch_size = self._get_obj_num(state)
        storage_key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
        h, w = state["video_height"], state["video_width"]
        masks = torch.full((batch_size, 1, h, w), NO_OBJ_SCORE, dtype=torch.float32, device=state["storage_device"])
        for obj_idx in range(batch_size):
            out = state["temp_output_dict_per_obj"][obj_idx][storage_key].get(frame_idx)
            obj_output_dict = state["output_dict_per_obj"][obj_idx]
            if out is None:
                out = obj_output_dict["cond_frame_outputs"].get(frame_idx)
            if out is None:
                out = obj_output_dict["non_cond_frame_outputs"].get(frame_idx)
            if out is None:
                continue
            obj_mask = out["pred_masks"]
            if obj_mask.shape[-2:] != masks.shape[-2:]:
                obj_mask = F.interpolate(obj_mask, size=masks.shape[-2:], mode="bilinear", align_corners=False)
            masks[obj_idx : obj_idx + 1] = obj_mask
        return masks
