"""Panoptic quality (PQ, SQ, RQ over all / thing / stuff categories, per-category PQ).

PQ of a category = sum of the IoUs of its matched segments / (TP + FP/2 + FN/2): a predicted
and a ground-truth segment of the same category match when their IoU is above 0.5 (unique by
construction), with the prediction's void pixels left out of the union. Unmatched predictions
lying mostly (> 50%) on void pixels or on crowd regions of their category are not false
positives. SQ = mean IoU of the matches, RQ = TP / (TP + FP/2 + FN/2); each is averaged over the
categories that have a TP, FP or FN (Kirillov et al., "Panoptic Segmentation", CVPR 2019, as in
the COCO panoptic evaluation).
"""

import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tabulate import tabulate

from segtrain.config import configurable
from segtrain.data.detection_utils import read_panoptic_ids
from segtrain.structures.masks import segmentation_to_bitmask
from segtrain.utils.errors import DatasetError

from .build import EVALUATOR_REGISTRY
from .evaluator import DatasetDictIndex, DatasetEvaluator, read_metadata, sum_over_processes

__all__ = ["PanopticEvaluator", "panoptic_gt_from_annotations", "pq_image_stats", "pq_metrics"]

logger = logging.getLogger(__name__)

# columns of the per-category statistics array [K, 4]
_TP, _FP, _FN, _IOU = range(4)


@EVALUATOR_REGISTRY.register()
class PanopticEvaluator(DatasetEvaluator):
    """PQ of ``outputs[i]["panoptic_seg"]`` = (segment ids int [H, W], 0 = void; segments_info
    list of ``{"id", "category_id"}`` with contiguous category ids) against the dataset's
    ground truth, looked up by ``image_id`` (else ``file_name``) in the dataset dicts:

    - ``pan_seg_file_name`` + ``segments_info``: a COCO panoptic PNG (id = R + 256 G + 256^2 B)
      and its segments ``{"id", "category_id", "iscrowd"}``;
    - otherwise, for instance datasets, one segment per annotation: pixels claimed by two
      non-crowd instances are void, crowd annotations are crowd regions, background is void
      (a things-only model predicts no background, so background cannot be scored).

    Categories: ``stuff_classes`` of the metadata (the panoptic convention: every category),
    else ``thing_classes``; a category is a thing when ``thing_dataset_id_to_contiguous_id``
    maps onto it, or always when the metadata has no ``stuff_classes``.

    ``evaluate()`` -> ``{"panoptic_seg": {"PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st",
    "SQ_st", "RQ_st", "PQ-<class>"}}`` in percent; a group without categories is NaN.
    """

    #: the key of each model output dict that this evaluator scores
    output_key = "panoptic_seg"

    @configurable
    def __init__(self, dataset_name: str, distributed: bool = True, output_dir: Optional[str] = None):
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._gt_index: Optional[DatasetDictIndex] = None
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None) -> Dict[str, Any]:
        return {"dataset_name": dataset_name, "distributed": True, "output_dir": output_dir}

    def reset(self) -> None:
        self._read_categories()
        self._stats = np.zeros((len(self._class_names), 4), dtype=np.float64)

    def _read_categories(self) -> None:
        """Class names and which are things, from the metadata as it is at this reset (a dataset
        that sets them when first read is read for them)."""
        meta = read_metadata(self._dataset_name, "stuff_classes", "thing_classes")
        stuff = getattr(meta, "stuff_classes", None)
        self._class_names = list(stuff or getattr(meta, "thing_classes", None) or [])
        if not self._class_names:
            raise DatasetError(
                f"PanopticEvaluator({self._dataset_name}): metadata has no stuff_classes or thing_classes"
            )
        mapping = getattr(meta, "thing_dataset_id_to_contiguous_id", None)
        thing_ids = set(int(v) for v in mapping.values()) if (stuff and mapping) else set(range(len(self._class_names)))
        self._isthing = np.array([k in thing_ids for k in range(len(self._class_names))])

    def _load_gt(self, inp: Dict[str, Any]) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
        if self._gt_index is None:  # loaded on first use: building the evaluator stays cheap
            self._gt_index = DatasetDictIndex(self._dataset_name, "PanopticEvaluator")
        d = self._gt_index.lookup(inp)
        path = d.get("pan_seg_file_name")
        if not path:
            return panoptic_gt_from_annotations(d)
        return read_panoptic_ids(path), list(d.get("segments_info", []))

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """Add each image's TP / FP / FN counts and matched IoUs to the per-category totals."""
        for inp, out in zip(inputs, outputs):
            if "panoptic_seg" not in out:
                raise DatasetError(
                    f"PanopticEvaluator({self._dataset_name}): the model's outputs have no "
                    f"'panoptic_seg' (only {sorted(out)}); Mask2Former: set "
                    f"MODEL.MASK_FORMER.TEST.PANOPTIC_ON True"
                )
            seg, info = out["panoptic_seg"]
            if info is None:
                raise ValueError("PanopticEvaluator: panoptic_seg needs its segments_info (got None)")
            seg = seg.detach().cpu().numpy() if isinstance(seg, torch.Tensor) else np.asarray(seg)
            gt_seg, gt_info = self._load_gt(inp)
            where = f"PanopticEvaluator({self._dataset_name}): image {inp.get('image_id')!r}"
            if gt_seg.shape != seg.shape:
                raise DatasetError(
                    f"{where}: prediction is {seg.shape[0]}x{seg.shape[1]} but the ground truth is "
                    f"{gt_seg.shape[0]}x{gt_seg.shape[1]}"
                )
            for s in list(info) + list(gt_info):
                if not 0 <= int(s["category_id"]) < len(self._class_names):
                    raise DatasetError(
                        f"{where}: category_id {s['category_id']} is outside [0, {len(self._class_names)})"
                    )
            self._stats += pq_image_stats(gt_seg, gt_info, seg, info, len(self._class_names), where)

    def evaluate(self) -> "OrderedDict[str, Dict[str, float]]":
        """Sum the statistics of all processes and derive PQ / SQ / RQ (main process)."""
        stats = sum_over_processes(self._stats, self._distributed)
        if stats is None:
            return OrderedDict()
        res = pq_metrics(stats, self._isthing, self._class_names)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            with open(os.path.join(self._output_dir, "panoptic_evaluation.json"), "w") as f:
                json.dump(res, f)
        rows = [
            [
                group,
                _fmt(res[f"PQ{sfx}"]),
                _fmt(res[f"SQ{sfx}"]),
                _fmt(res[f"RQ{sfx}"]),
                int(res[f"num_categories{sfx}"]),
            ]
            for group, sfx in (("All", ""), ("Things", "_th"), ("Stuff", "_st"))
        ]
        logger.info(
            f"Panoptic segmentation on {self._dataset_name}:\n"
            + tabulate(rows, headers=["", "PQ", "SQ", "RQ", "#categories"], tablefmt="pipe", numalign="left")
        )
        return OrderedDict(panoptic_seg=res)


def _fmt(v: float) -> str:
    return "nan" if np.isnan(v) else f"{v:.3f}"


def pq_image_stats(
    gt_seg: np.ndarray,
    gt_info: Sequence[Dict[str, Any]],
    pred_seg: np.ndarray,
    pred_info: Sequence[Dict[str, Any]],
    num_classes: int,
    where: str = "",
) -> np.ndarray:
    """One image's per-category ``[num_classes, 4]`` (TP, FP, FN, sum of matched IoUs).
    ``gt_seg`` / ``pred_seg``: int [H, W] segment ids, 0 = void; ``*_info``: the segments
    (``id``, ``category_id``; ``iscrowd`` and optionally ``area``, None or absent when unknown,
    for the GT).

    The counts are those of panopticapi's ``pq_compute_single_core``: a GT segment's area is
    its ``area`` entry when it has one (else its pixels), every unmatched non-crowd GT segment
    of ``gt_info`` is a false negative (also one left with no pixel in the map), and only the
    last crowd segment of a category in ``gt_info`` excuses predictions lying on it. One
    difference: a predicted segment with no pixel is skipped (panopticapi raises an error)."""
    gt_seg = np.asarray(gt_seg, dtype=np.int64)
    pred_seg = np.asarray(pred_seg, dtype=np.int64)
    gt = {int(s["id"]): s for s in gt_info}
    pred = {int(s["id"]): s for s in pred_info}
    for name, seg, segs in (("prediction", pred_seg, pred), ("ground truth", gt_seg, gt)):
        unknown = set(np.unique(seg).tolist()) - set(segs) - {0}
        if unknown:
            raise DatasetError(
                f"{where}: the {name} map has segment ids {sorted(unknown)[:5]} that are not in its segments_info"
            )
    offset = int(pred_seg.max()) + 1
    pair_ids, pair_counts = np.unique(gt_seg * offset + pred_seg, return_counts=True)
    inter = {(int(k) // offset, int(k) % offset): int(c) for k, c in zip(pair_ids, pair_counts)}
    gt_area: Dict[int, int] = {}
    pred_area: Dict[int, int] = {}
    for (g, p), c in inter.items():
        gt_area[g] = gt_area.get(g, 0) + c
        pred_area[p] = pred_area.get(p, 0) + c

    def area_of_gt(g: int) -> float:  # panopticapi takes the GT area from segments_info
        area = gt[g].get("area")
        return float(area) if area is not None else gt_area.get(g, 0)

    stats = np.zeros((num_classes, 4), dtype=np.float64)
    matched_gt, matched_pred = set(), set()
    for (g, p), c in inter.items():
        if g == 0 or p == 0 or gt[g].get("iscrowd", 0):
            continue
        cat = int(gt[g]["category_id"])
        if cat != int(pred[p]["category_id"]):
            continue
        union = pred_area[p] + area_of_gt(g) - c - inter.get((0, p), 0)
        iou = c / union
        if iou > 0.5:
            stats[cat, _TP] += 1
            stats[cat, _IOU] += iou
            matched_gt.add(g)
            matched_pred.add(p)
    crowd_of_cat: Dict[int, int] = {}  # as panopticapi: the last crowd segment of each category
    for g, s in gt.items():
        if s.get("iscrowd", 0):
            crowd_of_cat[int(s["category_id"])] = g
        elif g not in matched_gt:
            stats[int(s["category_id"]), _FN] += 1
    for p, s in pred.items():
        if p in matched_pred or pred_area.get(p, 0) == 0:  # a segment with no pixel is no prediction
            continue
        cat = int(s["category_id"])
        ignored = inter.get((0, p), 0) + (inter.get((crowd_of_cat[cat], p), 0) if cat in crowd_of_cat else 0)
        if ignored / pred_area[p] > 0.5:
            continue
        stats[cat, _FP] += 1
    return stats


def pq_metrics(stats: np.ndarray, isthing: np.ndarray, class_names: Sequence[str]) -> Dict[str, float]:
    """PQ / SQ / RQ in percent for all, thing (``_th``) and stuff (``_st``) categories from
    per-category ``stats`` [K, 4] (TP, FP, FN, IoU sum), with ``num_categories*`` (those with
    a TP, FP or FN) and ``PQ-<class>`` (NaN for a category never seen)."""
    tp, fp, fn, iou = stats[:, _TP], stats[:, _FP], stats[:, _FN], stats[:, _IOU]
    denom = tp + 0.5 * fp + 0.5 * fn
    seen = denom > 0
    pq = np.full(len(tp), np.nan)
    sq = np.full(len(tp), np.nan)
    rq = np.full(len(tp), np.nan)
    pq[seen] = iou[seen] / denom[seen]
    rq[seen] = tp[seen] / denom[seen]
    sq[seen] = np.where(tp[seen] > 0, iou[seen] / np.maximum(tp[seen], 1), 0.0)
    res: Dict[str, float] = {}
    for sfx, group in (("", np.ones_like(seen)), ("_th", isthing), ("_st", ~isthing)):
        sel = seen & group
        n = int(sel.sum())
        for name, values in (("PQ", pq), ("SQ", sq), ("RQ", rq)):
            res[f"{name}{sfx}"] = 100 * float(values[sel].mean()) if n else float("nan")
        res[f"num_categories{sfx}"] = float(n)
    for k, name in enumerate(class_names):
        res[f"PQ-{name}"] = 100 * float(pq[k])
    return res


def panoptic_gt_from_annotations(d: Dict[str, Any]) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """A panoptic ground truth (segment ids int64 [height, width], 0 = void; segments_info)
    from a dataset dict's instance annotations: annotation ``i`` is segment ``i + 1``; pixels of
    two non-crowd instances are void; crowd annotations are crowd segments under the instances."""
    h, w = int(d["height"]), int(d["width"])
    seg = np.zeros((h, w), dtype=np.int64)
    owners = np.zeros((h, w), dtype=np.int64)  # non-crowd instances covering each pixel
    info: List[Dict[str, Any]] = []
    anns = [a for a in d.get("annotations", []) if a.get("segmentation")]
    masks = [segmentation_to_bitmask(a["segmentation"], h, w) for a in anns]
    order = sorted(range(len(anns)), key=lambda i: not anns[i].get("iscrowd", 0))  # crowd first: under the rest
    for i in order:
        ann, m = anns[i], masks[i]
        crowd = bool(ann.get("iscrowd", 0))
        if not crowd:
            owners += m
        seg[m] = i + 1
        info.append({"id": i + 1, "category_id": int(ann["category_id"]), "iscrowd": int(crowd)})
    seg[owners > 1] = 0
    return seg, info
