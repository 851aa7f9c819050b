"""Semi-supervised video object segmentation metrics, DAVIS-style: J (region IoU), F (boundary
F-measure) and J&F, per object and overall, plus the "copy the first-frame mask" baseline.

Conventions follow the DAVIS 2017 evaluation (and the SA-V evaluator built on it):
- J per frame is the IoU of the predicted and GT masks; a frame where both are empty scores 1.
- F per frame is the F-measure of the boundary pixels (``seg2bmap``), a boundary pixel counting
  as matched when the other boundary lies within ``ceil(bound_th * image diagonal)`` pixels
  (a disk dilation; ``bound_th=0.008``). Both boundaries empty -> 1; one empty -> 0.
- Void pixels of the ground truth (label 255 of a DAVIS-style PNG) are left out of J and F.
- Overlapping predicted objects are merged into one label per pixel first, the smallest object
  id on top, as the official SAM 2 VOS inference writes its PNGs; with an ``output_dir`` the
  label maps are written as indexed PNGs, ``video_predictions/<video>/<frame>.png``, which the
  DAVIS toolkit scores the same.
- Only annotated frames are scored (a label-map video may lack PNGs for some frames).
- The first and last of them are left out (the first one holds the prompt), as the
  toolkit does for every video: an object of a video of 1 or 2 frames has no scored frame, and
  its J, F and J&F are NaN.
- Per object: mean over frames ("J"), recall (share of frames above 0.5) and decay (mean of
  the first quarter of the frames minus the last quarter). Overall: the mean over the objects
  that have a scored frame; ``num_objects_unscored`` counts the others. (The toolkit's own
  overall mean, ``np.mean``, is NaN as soon as one object is; the toolkit also indexes the
  decay bins with ``uint8``, which wraps for videos over 256 frames: segtrain does not.)
"""

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tabulate import tabulate

from segtrain.config import configurable
from segtrain.data.catalog import DatasetCatalog
from segtrain.data.video.video_objects import VideoObjects, video_objects
from segtrain.structures.masks import segmentation_to_bitmask
from segtrain.utils import comm
from segtrain.utils.errors import DatasetError

from .build import EVALUATOR_REGISTRY
from .davis_metrics import as_bool_array, db_eval_boundary, db_eval_iou, db_statistics, seg2bmap
from .evaluator import DatasetEvaluator
from .video_label_maps import merge_object_masks, png_labels, write_label_pngs

__all__ = [
    "VideoEvaluator",
    "db_eval_iou",
    "db_eval_boundary",
    "seg2bmap",
    "db_statistics",
    "video_gt_masks",
    "copy_first_frame_prediction",
    "evaluate_copy_first_frame_baseline",
]

logger = logging.getLogger(__name__)

_MaskLike = Union[np.ndarray, torch.Tensor]


def video_gt_masks(
    video: Mapping[str, Any], frame_indices: Optional[Sequence[int]] = None, objects: Optional[VideoObjects] = None
) -> Tuple[List[Any], np.ndarray]:
    """(object ids [N], bool [T, N, H, W]) of a video dict (any of the video readers, read through
    ``video_objects``) at its original size, for ``frame_indices`` (default: every frame).
    Absent frames are empty. ``objects``: the video's reader when the caller has one (its files
    are then read once)."""
    h, w = int(video["height"]), int(video["width"])
    frames = list(range(len(video["file_names"]))) if frame_indices is None else [int(t) for t in frame_indices]
    objects = video_objects(video) if objects is None else objects
    keys = objects.all_objects()
    masks = np.zeros((len(frames), len(keys), h, w), dtype=bool)
    for n, key in enumerate(keys):
        for i, t in enumerate(frames):
            segm = objects.segmentation(t, key)
            if segm is None:
                continue
            if isinstance(segm, np.ndarray):
                masks[i, n] = segm
                continue
            try:
                masks[i, n] = segmentation_to_bitmask(segm, h, w)
            except ValueError as e:
                raise DatasetError(
                    f"video id {video.get('video_id')} object id {objects.object_id(key)} frame {t}: {e}"
                ) from None
    return [objects.object_id(k) for k in keys], masks


def copy_first_frame_prediction(gt_masks: _MaskLike) -> np.ndarray:
    """The trivial tracker: each object's mask on the first frame where it is visible, copied
    unchanged to that frame and every later one (empty before). gt_masks: [T, N, H, W].
    Returns bool [T, N, H, W]."""
    gt = as_bool_array(gt_masks)
    out = np.zeros_like(gt)
    visible = gt.reshape(gt.shape[0], gt.shape[1], -1).any(axis=2)  # [T, N]
    for n in range(gt.shape[1]):
        ts = np.flatnonzero(visible[:, n])
        if ts.size:
            out[ts[0] :, n] = gt[ts[0], n]
    return out


def evaluate_copy_first_frame_baseline(
    dataset: Union[str, Sequence[Mapping[str, Any]]], **evaluator_kwargs: Any
) -> "OrderedDict[str, Dict[str, float]]":
    """J / F / J&F of ``copy_first_frame_prediction`` on a video dataset (a registered name or
    video dicts): the score a tracker has to beat. Returns ``VideoEvaluator.evaluate()``."""
    if isinstance(dataset, str):
        dataset = DatasetCatalog.get(dataset)
    evaluator = VideoEvaluator(dataset_name=None, distributed=False, **evaluator_kwargs)
    evaluator.reset()
    for video in dataset:
        if "file_names" not in video:
            raise DatasetError("evaluate_copy_first_frame_baseline needs video dicts (with 'file_names')")
        obj_ids, gt = video_gt_masks(video)
        frames = list(range(gt.shape[0]))
        inp = {"video_id": video["video_id"], "frame_indices": frames, "gt_masks": gt, "gt_obj_ids": obj_ids}
        evaluator.process([inp], [{"pred_masks": copy_first_frame_prediction(gt), "obj_ids": obj_ids}])
    return evaluator.evaluate()


# ------------------------------------------------------------------ the evaluator
def _as_list(x: Any) -> List[Any]:
    return x.tolist() if isinstance(x, (torch.Tensor, np.ndarray)) else list(x)


def _predictions_by_object(output: Mapping[str, Any], video_id: Any) -> Dict[Any, np.ndarray]:
    pred = output.get("pred_masks")
    if pred is None:
        raise DatasetError(f"video id {video_id}: the model output has no 'pred_masks'")
    if isinstance(pred, Mapping):
        return {k: as_bool_array(v) for k, v in pred.items()}
    pred = as_bool_array(pred)
    obj_ids = output.get("obj_ids")
    if obj_ids is None:
        raise DatasetError(f"video id {video_id}: 'pred_masks' [T, N, H, W] needs 'obj_ids' [N] naming the objects")
    obj_ids = _as_list(obj_ids)
    if pred.ndim != 4 or pred.shape[1] != len(obj_ids):
        raise DatasetError(
            f"video id {video_id}: 'pred_masks' must be [T, N, H, W] with N = len(obj_ids) = {len(obj_ids)}, "
            f"got {list(pred.shape)}"
        )
    return {k: pred[:, n] for n, k in enumerate(obj_ids)}


@dataclass
class _VideoTruth:
    """The ground truth of one processed video: object ids [N], masks bool [T, N, H, W], the
    video's frame indices [T], void pixels bool [T, H, W] or None, which frames are annotated
    [T], and each frame's file stem [T] (for the written PNGs)."""

    obj_ids: List[Any]
    masks: np.ndarray
    frames: List[int]
    void: Optional[np.ndarray]
    annotated: List[bool]
    names: List[str]


@EVALUATOR_REGISTRY.register()
class VideoEvaluator(DatasetEvaluator):
    """DAVIS-style J, F and J&F of predicted object tracks (module docstring for conventions).

    ``process(inputs, outputs)``, one entry per video:
    - ``inputs[i]``: ``video_id`` and ``frame_indices`` [T] (the frames predicted; the test
      loader's clip dicts have both). The GT comes from the dataset (looked up by video id, at
      the original size) unless the input holds ``gt_masks`` bool [T, N, H, W] with
      ``gt_obj_ids`` [N] (and optionally ``gt_void`` bool [T, H, W]).
    - ``outputs[i]``: ``pred_masks`` at the original size, either bool [T, N, H, W] with
      ``obj_ids`` [N] (annotation ids of the objects, as the test loader's ``obj_ids``), or a
      dict ``{obj_id: bool [T, H, W]}``. A GT object without a prediction counts as predicted
      empty; predictions for unknown ids are ignored (with a warning).

      ``merge_overlaps=False`` scores each object's masks as predicted (no merging, no PNGs).
      An output may also hold ``pred_masks_by_prompt`` {kind: bool [T, N, H, W]} (the same
      objects prompted another way, ``MODEL.SAM2.TEST.EXTRA_PROMPTS``), scored on its own.

    ``evaluate()`` -> ``{"video": {"J&F", "J", "F", "J_recall", "F_recall", "J_decay",
    "F_decay", "num_objects", "num_objects_unscored", "num_videos"}}``, plus ``"video_<kind>"`` with the same keys for
    each extra prompt kind; metrics in percent. Per-object values are logged as a table and
    written to ``output_dir/video_metrics.json`` (extra kinds under ``"by_prompt"``).
    """

    @configurable
    def __init__(
        self,
        dataset_name: Optional[str],
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        bound_th: float = 0.008,
        skip_first_last: bool = True,
        merge_overlaps: bool = True,
        write_pngs: bool = True,
    ):
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._bound_th = float(bound_th)
        self._skip_first_last = bool(skip_first_last)
        self._merge_overlaps = bool(merge_overlaps)
        self._write_pngs = bool(write_pngs)
        self._gt_index: Optional[Dict[Any, Mapping[str, Any]]] = None
        self._records: List[Dict[str, Any]] = []

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None) -> Dict[str, Any]:
        return {"dataset_name": dataset_name, "distributed": True, "output_dir": output_dir}

    def reset(self) -> None:
        self._records = []

    def _video(self, video_id: Any) -> Mapping[str, Any]:
        if self._gt_index is None:  # loaded on first use: building the evaluator stays cheap
            if self._dataset_name is None:
                raise DatasetError(
                    f"video id {video_id}: VideoEvaluator has no dataset_name, so inputs must carry 'gt_masks'"
                )
            self._gt_index = {d.get("video_id"): d for d in DatasetCatalog.get(self._dataset_name)}
        if video_id not in self._gt_index:
            raise DatasetError(f"video id {video_id!r} is not in dataset {self._dataset_name!r}")
        return self._gt_index[video_id]

    def _ground_truth(self, inp: Mapping[str, Any]) -> "_VideoTruth":
        vid = inp.get("video_id")
        frames = inp.get("frame_indices")
        if "gt_masks" in inp:
            gt = as_bool_array(inp["gt_masks"])
            ids = inp.get("gt_obj_ids")
            ids = list(range(gt.shape[1])) if ids is None else _as_list(ids)
            frames = [int(t) for t in (range(gt.shape[0]) if frames is None else _as_list(frames))]
            void = None if inp.get("gt_void") is None else as_bool_array(inp["gt_void"])
            return _VideoTruth(ids, gt, frames, void, [True] * len(frames), [f"{t:05d}" for t in frames])
        video = self._video(vid)
        frames = [int(t) for t in (range(len(video["file_names"])) if frames is None else _as_list(frames))]
        objects = video_objects(video)
        ids, gt = video_gt_masks(video, frames, objects)
        voids = [objects.void(t) for t in frames]
        void = None
        if any(v is not None for v in voids):
            void = np.stack([np.zeros(gt.shape[2:], bool) if v is None else v for v in voids])
        annotated = set(objects.annotated_frames())
        names = [os.path.splitext(os.path.basename(video["file_names"][t]))[0] for t in frames]
        return _VideoTruth(ids, gt, frames, void, [t in annotated for t in frames], names)

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs):
            vid = inp.get("video_id")
            truth = self._ground_truth(inp)
            self._score(vid, truth, _predictions_by_object(out, vid), prompt=None)
            for kind, masks in (out.get("pred_masks_by_prompt") or {}).items():
                preds = _predictions_by_object({"pred_masks": masks, "obj_ids": out.get("obj_ids")}, vid)
                self._score(vid, truth, preds, prompt=str(kind))

    def _score(self, vid: Any, truth: "_VideoTruth", preds: Mapping[Any, np.ndarray], prompt: Optional[str]) -> None:
        obj_ids, gt = truth.obj_ids, truth.masks
        unknown = [k for k in preds if k not in set(obj_ids)]
        if unknown:
            logger.warning("video id %s: predictions for unknown object id(s) %s are ignored", vid, unknown[:10])
        preds = {oid: preds[oid] for oid in obj_ids if oid in preds}
        for oid, p in preds.items():
            if p.shape != gt[:, 0].shape:
                raise DatasetError(
                    f"video id {vid} object id {oid}: predicted masks are {list(p.shape)} (TxHxW), "
                    f"GT is {list(gt[:, 0].shape)} at the original size"
                )
        if self._merge_overlaps and preds:  # one label per pixel, as the official VOS inference writes
            labels = merge_object_masks(preds, obj_ids)
            preds = {oid: labels == n + 1 for n, oid in enumerate(obj_ids) if oid in preds}
            if prompt is None and self._output_dir and self._write_pngs:
                folder = os.path.join(self._output_dir, "video_predictions", str(vid))
                write_label_pngs(folder, truth.names, labels, png_labels(obj_ids))
        # only annotated frames are scored; DAVIS leaves out the first and the last of them
        scored = [i for i, a in enumerate(truth.annotated) if a]
        keep = scored[1:-1] if self._skip_first_last else scored
        void = None if truth.void is None else truth.void[keep]
        for n, oid in enumerate(obj_ids):
            g = gt[keep, n]
            p = preds.get(oid)
            if p is None:
                logger.debug("video id %s: no prediction for object id %s; scored as empty", vid, oid)
                p = np.zeros_like(gt[:, n])
            p = p[keep]
            self._records.append(
                {
                    "video_id": vid,
                    "obj_id": oid,
                    "prompt": prompt,
                    "frames": [truth.frames[i] for i in keep],
                    "J": db_eval_iou(g, p, void).tolist(),
                    "F": db_eval_boundary(g, p, self._bound_th, void).tolist(),
                }
            )

    def evaluate(self) -> "Optional[OrderedDict[str, Dict[str, float]]]":
        records = self._records
        if self._distributed and comm.get_world_size() > 1:
            comm.synchronize()
            gathered = comm.gather(records, dst=0)
            if not comm.is_main_process():
                return OrderedDict()
            records = [r for part in gathered for r in part]
        if not records:
            logger.warning("VideoEvaluator: no object was processed; nothing to evaluate")
            return OrderedDict()

        # the model's own prompt is "video"; extra prompt kinds are "video_<kind>"
        groups: "OrderedDict[str, List[Dict[str, Any]]]" = OrderedDict()
        for r in records:
            groups.setdefault("video" if r.get("prompt") is None else f"video_{r['prompt']}", []).append(r)
        results: "OrderedDict[str, Dict[str, float]]" = OrderedDict()
        dumped: Dict[str, Any] = {}
        for name, group in groups.items():
            res, rows = self._summarize(group, name)
            results[name] = dict(res)
            dumped[name] = {"overall": res, "per_object": rows}
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            payload = dict(dumped["video"])  # process() scores the model's own prompt for every video
            extra = {k: v for k, v in dumped.items() if k != "video"}
            if extra:
                payload["by_prompt"] = extra
            with open(os.path.join(self._output_dir, "video_metrics.json"), "w") as f:
                json.dump(payload, f, default=str)
        return results

    @staticmethod
    def _summarize(records: List[Dict[str, Any]], name: str) -> Tuple["OrderedDict[str, float]", List[Dict[str, Any]]]:
        """Overall metrics (percent) and per-object rows of one group of records; the overall
        table is logged, and the per-object one for the model's own prompt kind."""
        rows = []
        for r in records:
            jm, jr, jd = db_statistics(np.asarray(r["J"]))
            fm, fr, fd = db_statistics(np.asarray(r["F"]))
            rows.append(
                {
                    "video_id": r["video_id"],
                    "obj_id": r["obj_id"],
                    "J": jm,
                    "J_recall": jr,
                    "J_decay": jd,
                    "F": fm,
                    "F_recall": fr,
                    "F_decay": fd,
                    "J&F": (jm + fm) / 2,
                }
            )

        def mean(key: str) -> float:
            return float(np.nanmean([row[key] for row in rows])) * 100

        res = OrderedDict()
        res["J&F"] = (mean("J") + mean("F")) / 2
        for key in ("J", "F", "J_recall", "F_recall", "J_decay", "F_decay"):
            res[key] = mean(key)
        res["num_objects"] = len(rows)
        res["num_objects_unscored"] = sum(1 for r in records if not r["J"])
        res["num_videos"] = len({row["video_id"] for row in rows})

        what = "" if name == "video" else f", {name[len('video_') :]} prompts"
        if name == "video":  # the extra prompt kinds' per-object rows are in video_metrics.json only
            table = [[row["video_id"], row["obj_id"], 100 * row["J&F"], 100 * row["J"], 100 * row["F"]] for row in rows]
            logger.info(
                "Per-object video segmentation results (%%):\n%s",
                tabulate(table, headers=["video", "object", "J&F", "J", "F"], tablefmt="pipe", floatfmt=".1f"),
            )
        logger.info(
            "Video segmentation results (%%%s):\n%s",
            what,
            tabulate([[res[k] for k in res]], headers=list(res), tablefmt="pipe", floatfmt=".2f"),
        )
        return res, rows
