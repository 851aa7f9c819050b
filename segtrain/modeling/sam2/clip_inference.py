"""Semi-supervised VOS inference on one whole-video clip, prompted from its ground truth: each
object is prompted on the first frame where it is visible (by its mask, its box or one click)
and propagated with :class:`~segtrain.modeling.sam2.predictor.VideoPredictor`, the evaluation
protocol of ``VideoTracker`` (``MODEL.SAM2.TEST.PROMPT``)."""

import itertools
from typing import Any, Dict, List, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .predictor import VideoPredictor
from .prompt_sampling import mask_to_box_inclusive, sample_one_point_from_error_center

__all__ = ["predict_clip_from_gt"]


def predict_clip_from_gt(
    model: nn.Module, clip: Mapping[str, Any], obj_ids: List[Any], kinds: List[str]
) -> Dict[str, Tensor]:
    """{kind: bool [T, N, height, width]}: for each prompt kind (``"mask"``, ``"box"``,
    ``"point"``), each object of ``clip`` (``images`` [T, 3, S, S], ``masks`` [T, N, S, S])
    prompted that way from its GT on its first visible frame, then propagated by ``model`` (a
    ``SAM2Base``; the object counts as absent before that frame). The kinds run frame by frame
    side by side and share each frame's image features. The model is in eval mode meanwhile."""
    images, gt = clip["images"], clip["masks"].bool()
    shape = (
        images.shape[0],
        len(obj_ids),
        int(clip.get("height", model.image_size)),
        int(clip.get("width", model.image_size)),
    )
    index = {oid: n for n, oid in enumerate(obj_ids)}
    frames = images.permute(0, 2, 3, 1).to(torch.uint8).cpu().numpy()
    features: Dict[int, Any] = {}
    preds = {kind: torch.zeros(shape, dtype=torch.bool) for kind in kinds}
    first = {}
    for n, oid in enumerate(obj_ids):
        visible = gt[:, n].flatten(1).any(dim=1).nonzero().flatten()
        if visible.numel() > 0:
            first[oid] = int(visible[0])
    if not first:
        return preds
    was_training = model.training
    model.eval()
    try:
        runs = []
        for kind in kinds:
            predictor = VideoPredictor(model)
            state = predictor.init_state(frames, cached_features=features)
            for oid, t in first.items():
                _add_prompt_from_gt(predictor, state, t, oid, gt[t, index[oid]], kind)
            runs.append(predictor.propagate_in_video(state))
        for steps in itertools.zip_longest(*runs):
            for kind, step in zip(kinds, steps):
                t, ids, logits = step
                up = F.interpolate(logits, size=shape[2:], mode="bilinear", align_corners=False)
                for i, oid in enumerate(ids):
                    if t >= first[oid]:
                        preds[kind][t, index[oid]] = (up[i, 0] > 0).cpu()
    finally:
        model.train(was_training)
    return preds


def _add_prompt_from_gt(predictor: VideoPredictor, state, frame_idx: int, obj_id: Any, gt: Tensor, kind: str):
    """Prompt an object from its GT mask [S, S]: the mask itself (``"mask"``), its tight box
    (``"box"``) or one positive click at the point deepest inside it (``"point"``)."""
    if kind == "mask":
        predictor.add_new_mask(state, frame_idx, obj_id, gt)
    elif kind == "box":
        predictor.add_new_points_or_box(state, frame_idx, obj_id, box=mask_to_box_inclusive(gt[None])[0].tolist())
    else:
        coords, labels = sample_one_point_from_error_center(gt[None], torch.zeros_like(gt[None]))
        predictor.add_new_points_or_box(state, frame_idx, obj_id, points=coords[0], labels=labels[0])
