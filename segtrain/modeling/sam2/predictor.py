"""``VideoPredictor``: prompt objects on a frame of a video, then propagate them forward.

    predictor = VideoPredictor(model)                     # a VideoTracker
    state = predictor.init_state(frames)                  # uint8 [T, 3, S, S] at the model's size
    predictor.add_new_points(state, frame_idx=0, obj_id=1, points=[[x, y]], labels=[1])
    predictor.add_new_box(state, frame_idx=3, obj_id=2, box=[x0, y0, x1, y1])
    predictor.add_new_mask(state, frame_idx=0, obj_id=3, mask=bool_mask)
    for frame_idx, obj_ids, mask_logits in predictor.propagate_in_video(state):
        ...                                               # mask_logits: [len(obj_ids), 1, S, S]

Each object has one prompt (a later call for the same object replaces it). An object is
tracked from its prompted frame on; frames before it are not reported for it. Objects
prompted on the same frame are tracked together (one batch); each object's memory bank is
its own, and only holds frames before the current one.
"""

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .common import NO_OBJ_SCORE
from .prompt_sampling import mask_to_box_inclusive, sample_one_point_from_error_center

__all__ = ["VideoPredictor"]


class VideoPredictor:
    """Inference wrapper around a ``VideoTracker`` (eval mode, no gradients)."""

    def __init__(self, model):
        self.model = model

    def init_state(self, images: Tensor, cached_features: Optional[Dict[int, Dict[str, Any]]] = None) -> Dict[str, Any]:
        """images: uint8 [T, 3, S, S] (S = the model's ``image_size``). Frames are encoded
        lazily during propagation; ``cached_features`` {frame: features} keeps the last
        encoded frame. States of the same frames and model that share one such dict and are
        propagated in step (``zip`` of their ``propagate_in_video``) encode each frame once."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"VideoPredictor.init_state: images must be [T, 3, H, W], got {tuple(images.shape)}")
        return {
            "images": images,
            "num_frames": int(images.shape[0]),
            "prompts": {},
            "cached_features": {} if cached_features is None else cached_features,
        }

    # ------------------------------------------------------------------ prompts
    def _check_frame(self, state: Dict[str, Any], frame_idx: int) -> int:
        if not 0 <= int(frame_idx) < state["num_frames"]:
            raise ValueError(f"frame_idx {frame_idx} is outside the video (0..{state['num_frames'] - 1})")
        return int(frame_idx)

    def add_new_points(
        self, state: Dict[str, Any], frame_idx: int, obj_id: Any, points: Sequence, labels: Sequence
    ) -> None:
        """Clicks (x, y) in input pixels with labels 1 (positive) / 0 (negative); a box is
        two points labelled 2 and 3."""
        coords = torch.as_tensor(points, dtype=torch.float32).reshape(1, -1, 2)
        labs = torch.as_tensor(labels, dtype=torch.int64).reshape(1, -1)
        if coords.shape[1] != labs.shape[1]:
            raise ValueError(f"{coords.shape[1]} points but {labs.shape[1]} labels")
        state["prompts"][obj_id] = {
            "frame": self._check_frame(state, frame_idx),
            "points": (coords, labs),
            "mask": None,
        }

    def add_new_box(self, state: Dict[str, Any], frame_idx: int, obj_id: Any, box: Sequence[float]) -> None:
        """A box (x0, y0, x1, y1) in input pixels."""
        b = torch.as_tensor(box, dtype=torch.float32).reshape(2, 2)
        self.add_new_points(state, frame_idx, obj_id, b, [2, 3])

    def add_new_mask(self, state: Dict[str, Any], frame_idx: int, obj_id: Any, mask: Tensor) -> None:
        """A bool mask [S, S] at the model's input size."""
        m = torch.as_tensor(mask).bool()
        size = self.model.image_size
        if tuple(m.shape) != (size, size):
            raise ValueError(f"mask prompt is {tuple(m.shape)}, the model input is {size}x{size}")
        state["prompts"][obj_id] = {"frame": self._check_frame(state, frame_idx), "points": None, "mask": m}

    def add_prompt_from_mask(self, state: Dict[str, Any], frame_idx: int, obj_id: Any, gt: Tensor, kind: str) -> None:
        """Prompt an object from its GT mask [S, S]: the mask itself (``"mask"``), its tight
        box (``"box"``) or one positive click at the point deepest inside it (``"point"``)."""
        gt = torch.as_tensor(gt).bool()
        if kind == "mask":
            self.add_new_mask(state, frame_idx, obj_id, gt)
        elif kind == "box":
            self.add_new_box(state, frame_idx, obj_id, mask_to_box_inclusive(gt[None])[0].tolist())
        elif kind == "point":
            coords, labels = sample_one_point_from_error_center(gt[None], torch.zeros_like(gt[None]))
            self.add_new_points(state, frame_idx, obj_id, coords[0], labels[0])
        else:
            raise ValueError(f"unknown prompt kind {kind!r}; valid: mask, box, point")

    # ------------------------------------------------------------------ propagation
    def _frame_features(self, state: Dict[str, Any], frame_idx: int) -> Dict[str, Any]:
        cache = state["cached_features"]
        if frame_idx not in cache:
            cache.clear()  # one frame at a time: a long video's features never pile up
            cache[frame_idx] = self.model.encode_images(state["images"][frame_idx : frame_idx + 1])
        return cache[frame_idx]

    @staticmethod
    def _select(feats: Dict[str, Any], n: int) -> Dict[str, Any]:
        rep = lambda x: x.expand(n, *x.shape[1:])  # noqa: E731  (one image, n objects)
        return {
            "vision_features": rep(feats["vision_features"]),
            "vision_pos": feats["vision_pos"],
            "high_res": None if feats["high_res"] is None else [rep(f) for f in feats["high_res"]],
        }

    def _stack_prompts(self, prompts: List[Dict[str, Any]]) -> Tuple[Optional[Tuple[Tensor, Tensor]], Optional[Tensor]]:
        device = self.model.device
        if prompts[0]["mask"] is not None:
            return None, torch.stack([p["mask"] for p in prompts]).unsqueeze(1).float().to(device)
        n_pts = max(p["points"][0].shape[1] for p in prompts)
        coords = torch.zeros(len(prompts), n_pts, 2)
        labels = torch.full((len(prompts), n_pts), -1, dtype=torch.int64)  # pad with "not a point"
        for i, p in enumerate(prompts):
            c, lab = p["points"]
            coords[i, : c.shape[1]] = c[0]
            labels[i, : lab.shape[1]] = lab[0]
        return (coords.to(device), labels.to(device)), None

    @torch.no_grad()
    def propagate_in_video(self, state: Dict[str, Any]) -> Iterator[Tuple[int, List[Any], Tensor]]:
        """Yield ``(frame_idx, obj_ids, mask_logits [len(obj_ids), 1, S, S])`` for every frame
        from the first prompted one, with the objects already prompted by then."""
        model = self.model
        was_training = model.training
        model.eval()
        try:
            yield from self._propagate(state)
        finally:
            model.train(was_training)

    def _propagate(self, state: Dict[str, Any]) -> Iterator[Tuple[int, List[Any], Tensor]]:
        model = self.model
        prompts = state["prompts"]
        if not prompts:
            return
        # objects prompted on the same frame with the same kind of prompt form one batch
        groups: Dict[Tuple[int, bool], List[Any]] = {}
        for oid, p in prompts.items():
            groups.setdefault((p["frame"], p["mask"] is not None), []).append(oid)
        tracks = []
        for (start, _), ids in sorted(groups.items(), key=lambda kv: kv[0][0]):
            points, mask = self._stack_prompts([prompts[i] for i in ids])
            tracks.append({"start": start, "ids": ids, "points": points, "mask": mask, "bank": {}, "cond": [start]})
        keep = max(model.num_maskmem, model.max_obj_ptrs if model.use_obj_ptrs else 1)
        first = min(t["start"] for t in tracks)
        for t in range(first, state["num_frames"]):
            feats = self._frame_features(state, t)
            ids_t, logits_t = [], []
            for tr in tracks:
                if t < tr["start"]:
                    continue
                frame = self._select(feats, len(tr["ids"]))
                is_init = t == tr["start"]
                _, out = model.track_step(
                    t,
                    frame,
                    tr["bank"],
                    tr["cond"],
                    is_init_cond_frame=is_init,
                    points=tr["points"] if is_init else None,
                    mask_inputs=tr["mask"] if is_init else None,
                )
                tr["bank"][t] = model.memory_entry(frame, out, is_mask_from_pts=is_init and tr["points"] is not None)
                old = t - keep  # memories too old for both the recent-frame and pointer windows
                if old in tr["bank"] and old not in tr["cond"]:
                    del tr["bank"][old]
                ids_t += tr["ids"]
                logits_t.append(out["high_res_masks"])
            if ids_t:
                yield t, ids_t, torch.cat(logits_t, dim=0)

    def propagate(self, state: Dict[str, Any]) -> Tuple[List[Any], Tensor]:
        """All of ``propagate_in_video`` at once: (obj_ids [N] in prompt order, mask logits
        [T, N, S, S]; frames before an object's prompt hold ``NO_OBJ_SCORE``)."""
        obj_ids = list(state["prompts"])
        size = self.model.image_size
        out = torch.full((state["num_frames"], len(obj_ids), size, size), NO_OBJ_SCORE)
        index = {oid: n for n, oid in enumerate(obj_ids)}
        for t, ids, logits in self.propagate_in_video(state):
            out[t, [index[i] for i in ids]] = logits[:, 0].float().cpu()
        return obj_ids, out
