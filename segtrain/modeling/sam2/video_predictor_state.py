"""The prompt side of ``VideoPredictor`` (the official ``SAM2VideoPredictor`` calls): objects
and their ids, points / boxes / masks on frames, clearing prompts, removing objects."""

from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PredictorStateMixin"]


def _concat_points(old: Optional[Dict[str, Tensor]], points: Tensor, labels: Tensor) -> Dict[str, Tensor]:
    if old is None:
        return {"point_coords": points, "point_labels": labels}
    return {
        "point_coords": torch.cat([old["point_coords"], points], dim=1),
        "point_labels": torch.cat([old["point_labels"], labels], dim=1),
    }


class PredictorStateMixin:
    """Prompt handling of ``VideoPredictor`` (module docstring)."""

    def _obj_id_to_idx(self, state: Dict[str, Any], obj_id: Any) -> int:
        obj_idx = state["obj_id_to_idx"].get(obj_id)
        if obj_idx is not None:
            return obj_idx
        obj_idx = len(state["obj_id_to_idx"])
        state["obj_id_to_idx"][obj_id] = obj_idx
        state["obj_idx_to_id"][obj_idx] = obj_id
        state["obj_ids"] = list(state["obj_id_to_idx"])
        state["point_inputs_per_obj"][obj_idx] = {}
        state["mask_inputs_per_obj"][obj_idx] = {}
        state["output_dict_per_obj"][obj_idx] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        state["temp_output_dict_per_obj"][obj_idx] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        state["frames_tracked_per_obj"][obj_idx] = {}
        return obj_idx

    @staticmethod
    def _get_obj_num(state: Dict[str, Any]) -> int:
        return len(state["obj_idx_to_id"])

    def _check_frame(self, state: Dict[str, Any], frame_idx: int) -> None:
        if not 0 <= frame_idx < state["num_frames"]:
            raise ValueError(f"frame_idx {frame_idx} is outside the video (0..{state['num_frames'] - 1})")

    def _prompt_frame(self, state, frame_idx, obj_idx, point_inputs, mask_inputs, prev_logits):
        """Run the object's prompted frame and return every object's logits there."""
        obj_frames_tracked = state["frames_tracked_per_obj"][obj_idx]
        is_init_cond_frame = frame_idx not in obj_frames_tracked
        reverse = False if is_init_cond_frame else obj_frames_tracked[frame_idx]["reverse"]
        obj_output_dict = state["output_dict_per_obj"][obj_idx]
        obj_temp_output_dict = state["temp_output_dict_per_obj"][obj_idx]
        is_cond = is_init_cond_frame or self.add_all_frames_to_correct_as_cond
        storage_key = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
        if prev_logits:
            prev_out = obj_temp_output_dict[storage_key].get(frame_idx)
            if prev_out is None:
                prev_out = obj_output_dict["cond_frame_outputs"].get(frame_idx)
            if prev_out is None:
                prev_out = obj_output_dict["non_cond_frame_outputs"].get(frame_idx)
            prev_logits = None
            if prev_out is not None and prev_out["pred_masks"] is not None:
                prev_logits = torch.clamp(prev_out["pred_masks"].to(state["device"]), -32.0, 32.0)
        else:
            prev_logits = None
        current_out, _ = self._run_single_frame_inference(
            state,
            obj_output_dict,
            frame_idx,
            1,
            is_init_cond_frame,
            point_inputs,
            mask_inputs,
            reverse,
            False,
            prev_sam_mask_logits=prev_logits,
        )
        obj_temp_output_dict[storage_key][frame_idx] = current_out
        masks = self._consolidate_temp_output_across_obj(state, frame_idx, is_cond)
        return frame_idx, state["obj_ids"], self._get_orig_video_res_output(state, masks)[1]

    @torch.inference_mode()
    def add_new_points_or_box(
        self,
        inference_state: Dict[str, Any],
        frame_idx: int,
        obj_id: Any,
        points=None,
        labels=None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box=None,
    ) -> Tuple[int, List[Any], Tensor]:
        """Clicks (x, y) with labels 1 / 0 and / or a box (x0, y0, x1, y1), in video pixels
        (already divided by the video's width / height with ``normalize_coords=False``).
        ``clear_old_points=False`` adds the clicks to the frame's earlier ones; a prompt on a
        frame the object was tracked on is a correction (fed the frame's current logits).
        Returns (frame_idx, obj_ids, mask logits [N, 1, H, W] of every object on the frame)."""
        state = inference_state
        self._check_frame(state, frame_idx)
        if (points is not None) != (labels is not None):
            raise ValueError("points and labels must be provided together")
        if points is None and box is None:
            raise ValueError("at least one of points or box must be provided as input")
        points = torch.zeros(0, 2) if points is None else torch.as_tensor(points, dtype=torch.float32)
        labels = torch.zeros(0, dtype=torch.int32) if labels is None else torch.as_tensor(labels, dtype=torch.int32)
        if points.dim() == 2:
            points = points.unsqueeze(0)
        if labels.dim() == 1:
            labels = labels.unsqueeze(0)
        if points.shape[:2] != labels.shape[:2]:
            raise ValueError(f"{points.shape[1]} points but {labels.shape[1]} labels")
        if box is not None:
            if not clear_old_points:
                raise ValueError(
                    "cannot add box without clearing old points, since box prompt must be provided before any "
                    "point prompt (please use clear_old_points=True instead)"
                )
            box = torch.as_tensor(box, dtype=torch.float32).reshape(1, 2, 2)
            points = torch.cat([box, points], dim=1)
            labels = torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), labels], dim=1)
        obj_idx = self._obj_id_to_idx(state, obj_id)  # a new object only once its prompt is valid
        if normalize_coords:
            points = points / torch.tensor([state["video_width"], state["video_height"]], dtype=torch.float32)
        points = (points * self.image_size).to(state["device"])
        labels = labels.to(state["device"])
        point_inputs_per_frame = state["point_inputs_per_obj"][obj_idx]
        old = None if clear_old_points else point_inputs_per_frame.get(frame_idx)
        point_inputs = _concat_points(old, points, labels)
        point_inputs_per_frame[frame_idx] = point_inputs
        state["mask_inputs_per_obj"][obj_idx].pop(frame_idx, None)
        return self._prompt_frame(state, frame_idx, obj_idx, point_inputs, None, prev_logits=True)

    def add_new_points(self, *args, **kwargs):
        """The official deprecated name of ``add_new_points_or_box``."""
        return self.add_new_points_or_box(*args, **kwargs)

    @torch.inference_mode()
    def add_new_mask(
        self, inference_state: Dict[str, Any], frame_idx: int, obj_id: Any, mask
    ) -> Tuple[int, List[Any], Tensor]:
        """A binary mask [H, W] (any size: resized to the model's input) as the object's prompt."""
        state = inference_state
        self._check_frame(state, frame_idx)
        mask = torch.as_tensor(mask)
        if mask.dim() != 2:
            raise ValueError(f"add_new_mask: the mask must be [H, W], got {list(mask.shape)}")
        obj_idx = self._obj_id_to_idx(state, obj_id)
        mask_inputs = mask.bool()[None, None].float().to(state["device"])
        if mask.shape != (self.image_size, self.image_size):
            mask_inputs = F.interpolate(
                mask_inputs,
                size=(self.image_size, self.image_size),
                align_corners=False,
                mode="bilinear",
                antialias=True,
            )
            mask_inputs = (mask_inputs >= 0.5).float()
        state["mask_inputs_per_obj"][obj_idx][frame_idx] = mask_inputs
        state["point_inputs_per_obj"][obj_idx].pop(frame_idx, None)
        return self._prompt_frame(state, frame_idx, obj_idx, None, mask_inputs, prev_logits=False)

    @torch.inference_mode()
    def clear_all_prompts_in_frame(self, inference_state, frame_idx: int, obj_id: Any, need_output: bool = True):
        """Remove an object's prompts on a frame (its output there becomes a tracked one)."""
        state = inference_state
        obj_idx = self._obj_id_to_idx(state, obj_id)
        state["point_inputs_per_obj"][obj_idx].pop(frame_idx, None)
        state["mask_inputs_per_obj"][obj_idx].pop(frame_idx, None)
        temp = state["temp_output_dict_per_obj"]
        temp[obj_idx]["cond_frame_outputs"].pop(frame_idx, None)
        temp[obj_idx]["non_cond_frame_outputs"].pop(frame_idx, None)
        obj_output_dict = state["output_dict_per_obj"][obj_idx]
        out = obj_output_dict["cond_frame_outputs"].pop(frame_idx, None)
        if out is not None:
            obj_output_dict["non_cond_frame_outputs"][frame_idx] = out
            state["frames_tracked_per_obj"][obj_idx].pop(frame_idx, None)
        if not need_output:
            return None
        is_cond = any(frame_idx in t["cond_frame_outputs"] for t in temp.values())
        masks = self._consolidate_temp_output_across_obj(state, frame_idx, is_cond)
        return frame_idx, state["obj_ids"], self._get_orig_video_res_output(state, masks)[1]

    @torch.inference_mode()
    def reset_state(self, inference_state) -> None:
        """Remove every object, prompt and tracking result."""
        state = inference_state
        self._reset_tracking_results(state)
        for key in ("obj_id_to_idx", "obj_idx_to_id", "point_inputs_per_obj", "mask_inputs_per_obj"):
            state[key].clear()
        for key in ("output_dict_per_obj", "temp_output_dict_per_obj", "frames_tracked_per_obj"):
            state[key].clear()
        state["obj_ids"].clear()

    @staticmethod
    def _reset_tracking_results(state) -> None:
        for key in ("point_inputs_per_obj", "mask_inputs_per_obj", "frames_tracked_per_obj"):
            for v in state[key].values():
                v.clear()
        for key in ("output_dict_per_obj", "temp_output_dict_per_obj"):
            for v in state[key].values():
                v["cond_frame_outputs"].clear()
                v["non_cond_frame_outputs"].clear()

    @torch.inference_mode()
    def remove_object(self, inference_state, obj_id: Any, strict: bool = False, need_output: bool = True):
        """Remove an object; returns (obj_ids, [(frame_idx, mask logits)] of its prompted frames)."""
        state = inference_state
        old_idx = state["obj_id_to_idx"].get(obj_id)
        updated_frames = []
        if old_idx is None:
            if not strict:
                return state["obj_ids"], updated_frames
            raise RuntimeError(f"Cannot remove object id {obj_id}: it does not exist (ids: {state['obj_ids']})")
        if len(state["obj_id_to_idx"]) == 1:
            self.reset_state(state)
            return state["obj_ids"], updated_frames
        input_frames = set(state["point_inputs_per_obj"][old_idx]) | set(state["mask_inputs_per_obj"][old_idx])
        for frame_idx in input_frames:
            self.clear_all_prompts_in_frame(state, frame_idx, obj_id, need_output=False)
        old_ids = state["obj_ids"]
        remain = [i for i in range(len(old_ids)) if i != old_idx]
        new_ids = [old_ids[i] for i in remain]
        old_to_new = {old: new for new, old in enumerate(remain)}
        state["obj_id_to_idx"] = OrderedDict((oid, i) for i, oid in enumerate(new_ids))
        state["obj_idx_to_id"] = OrderedDict(enumerate(new_ids))
        state["obj_ids"] = new_ids
        for key in (
            "point_inputs_per_obj",
            "mask_inputs_per_obj",
            "output_dict_per_obj",
            "temp_output_dict_per_obj",
            "frames_tracked_per_obj",
        ):
            container = state[key]
            items = [(old_to_new[k], container.pop(k)) for k in range(len(old_ids)) if k in old_to_new]
            container.pop(old_idx, None)
            container.update(items)
        if need_output:
            temp = state["temp_output_dict_per_obj"]
            for frame_idx in input_frames:
                is_cond = any(frame_idx in t["cond_frame_outputs"] for t in temp.values())
                masks = self._consolidate_temp_output_across_obj(state, frame_idx, is_cond)
                updated_frames.append((frame_idx, self._get_orig_video_res_output(state, masks)[1]))
        return state["obj_ids"], updated_frames

    def _clear_obj_non_cond_mem_around_input(self, state, frame_idx: int, obj_idx: int) -> None:
        """Drop an object's tracked memories within num_maskmem frames of a prompted frame."""
        r = self.model.memory_temporal_stride_for_eval
        non_cond = state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"]
        for t in range(frame_idx - r * self.model.num_maskmem, frame_idx + r * self.model.num_maskmem + 1):
            non_cond.pop(t, None)
