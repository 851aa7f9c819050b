"""SA-Co metrics of SAM 3 (cgF1, IL_MCC, positive micro F1, ...) over image-concept pairs, with
the definitions of the official ``sam3/eval/cgf1_eval.py`` (``CGF1Eval``):

* A pair is one image and one concept prompt (one find). Its detections are those scored
  ``>= 0.5``; its ground truth the non-crowd instances (a crowd instance is left out, so a
  detection on it is a false positive).
* Image level: a pair with ground truth and detections is IL_TP, ground truth and none IL_FN,
  no ground truth and detections IL_FP, neither IL_TN. IL_precision, IL_recall, IL_F1,
  IL_FPR and IL_MCC come from these counts with ``+ 1e-6`` in every denominator (0, not NaN,
  when one is empty).
* Instance level, at each IoU threshold t of 0.5:0.05:0.95: detections and ground truth are
  matched one-to-one by maximum total IoU (Hungarian), once per pair; TP(t) = matched pairs
  with IoU >= t, FP = detections - TP, FN = ground truth - TP, summed over pairs. ``precision``,
  ``recall`` and ``F1`` use every pair; ``positive_micro_precision`` counts only the false
  positives of pairs with ground truth and detections, and ``positive_micro_F1`` (pmF1)
  combines it with ``recall``; ``positive_macro_F1`` averages the per-pair F1 over those pairs.
  These denominators get ``+ 1e-4``.
* ``cgF1 = positive_micro_F1 x IL_MCC``. A metric without ``@t`` is the mean over the ten
  thresholds, ``@0.5`` / ``@0.75`` at one.

``saco_summary`` reports percentages (x100) except ``IL_MCC`` (in [-1, 1], as the SAM 3 paper
prints it) and the counts; a metric with nothing to average is NaN (the official summary
prints -1 there).
"""

from collections import OrderedDict
from typing import Any, Dict, Sequence

import numpy as np
import pycocotools.mask as mask_util
from scipy.optimize import linear_sum_assignment

__all__ = ["SACO_IOU_THRESHOLDS", "SACO_SCORE_THRESHOLD", "SacoAccumulator", "pair_ious"]

# pycocotools' COCOeval thresholds, which CGF1Eval inherits
SACO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
SACO_SCORE_THRESHOLD = 0.5
_EPS_INSTANCE = 1e-4
_EPS_IMAGE = 1e-6


def pair_ious(detections: Sequence[Any], ground_truth: Sequence[Any]) -> np.ndarray:
    """IoU [D, G] of detection and ground-truth regions, as pycocotools computes it: XYWH boxes
    (lists of 4 floats) or RLE dicts, both sides the same kind."""
    if len(detections) == 0 or len(ground_truth) == 0:
        return np.zeros((len(detections), len(ground_truth)), dtype=np.float64)
    ious = mask_util.iou(list(detections), list(ground_truth), [0] * len(ground_truth))
    return np.asarray(ious, dtype=np.float64).reshape(len(detections), len(ground_truth))


class SacoAccumulator:
    """Adds up image-concept pairs (``add_pair``) and gives the SA-Co metrics (``summary``)."""

    def __init__(self, iou_thresholds: np.ndarray = SACO_IOU_THRESHOLDS):
        self.iou_thresholds = np.asarray(iou_thresholds, dtype=np.float64)
        t = len(self.iou_thresholds)
        self.tp = np.zeros(t, dtype=np.int64)
        self.fp = np.zeros(t, dtype=np.int64)
        self.fn = np.zeros(t, dtype=np.int64)
        self.positive_fp = np.zeros(t, dtype=np.int64)
        self.local_f1_sum = np.zeros(t, dtype=np.float64)
        self.num_local_f1 = 0
        self.il = {"TP": 0, "FP": 0, "TN": 0, "FN": 0}
        self.num_pairs = 0

    def add_pair(self, ious: np.ndarray) -> None:
        """One pair: ``ious`` [D, G] between its kept detections (score >= 0.5) and its
        non-crowd ground truth (either side may be empty)."""
        ious = np.asarray(ious, dtype=np.float64)
        num_dt, num_gt = ious.shape
        self.num_pairs += 1
        if num_gt == 0 and num_dt == 0:
            self.il["TN"] += 1
            return
        if num_dt == 0:  # missed: its ground truth are false negatives, its F1 is 0
            self.il["FN"] += 1
            self.fn += num_gt
            return
        if num_gt == 0:  # detections on an absent concept: false positives, outside pmF1
            self.il["FP"] += 1
            self.fp += num_dt
            return
        self.il["TP"] += 1
        rows, cols = linear_sum_assignment(-ious)
        matched = ious[rows, cols]
        tp = (matched[None, :] >= self.iou_thresholds[:, None]).sum(axis=1).astype(np.int64)
        fp, fn = num_dt - tp, num_gt - tp
        self.tp += tp
        self.fp += fp
        self.fn += fn
        self.positive_fp += fp
        precision = tp / (tp + fp + _EPS_INSTANCE)
        recall = tp / (tp + fn + _EPS_INSTANCE)
        self.local_f1_sum += 2 * precision * recall / (precision + recall + _EPS_INSTANCE)
        self.num_local_f1 += 1

    def curves(self) -> Dict[str, Any]:
        """Per-threshold arrays [T] (fractions) and the image-level scalars, as ``CGF1Eval.accumulate``."""
        tp, fp, fn = self.tp, self.fp, self.fn
        precision = tp / (tp + fp + _EPS_INSTANCE)
        pm_precision = tp / (tp + self.positive_fp + _EPS_INSTANCE)
        recall = tp / (tp + fn + _EPS_INSTANCE)
        il_tp, il_fp, il_tn, il_fn = (self.il[k] for k in ("TP", "FP", "TN", "FN"))
        il_recall = il_tp / (il_tp + il_fn + _EPS_IMAGE)
        il_precision = il_tp / (il_tp + il_fp + _EPS_IMAGE)
        denom = float(il_tp + il_fp) * float(il_tp + il_fn) * float(il_tn + il_fp) * float(il_tn + il_fn)
        il_mcc = float(il_tp * il_tn - il_fp * il_fn) / (denom**0.5 + _EPS_IMAGE)
        pm_f1 = 2 * pm_precision * recall / (pm_precision + recall + _EPS_INSTANCE)
        with np.errstate(invalid="ignore", divide="ignore"):
            macro = self.local_f1_sum / self.num_local_f1 if self.num_local_f1 else np.full_like(recall, np.nan)
        return {
            "precision": precision,
            "recall": recall,
            "F1": 2 * precision * recall / (precision + recall + _EPS_INSTANCE),
            "positive_micro_precision": pm_precision,
            "positive_micro_F1": pm_f1,
            "positive_macro_F1": macro,
            "cgF1": pm_f1 * il_mcc,
            "IL_precision": il_precision,
            "IL_recall": il_recall,
            "IL_F1": 2 * il_precision * il_recall / (il_precision + il_recall + _EPS_IMAGE),
            "IL_FPR": il_fp / (il_fp + il_tn + _EPS_IMAGE),
            "IL_MCC": il_mcc,
        }

    def summary(self) -> "OrderedDict[str, float]":
        """The metrics (module docstring): ``cgF1``, ``cgF1@0.5``, ``cgF1@0.75``, the same for
        ``positive_micro_F1``, ``positive_micro_precision``, ``positive_macro_F1``,
        ``precision``, ``recall``, ``F1``; ``IL_MCC``, ``IL_F1``, ``IL_precision``,
        ``IL_recall``, ``IL_FPR``; ``num_pairs`` and ``IL_TP`` / ``IL_FP`` / ``IL_TN`` / ``IL_FN``."""
        out: "OrderedDict[str, float]" = OrderedDict()
        if self.num_pairs == 0:
            c = {}
        else:
            c = self.curves()
        per_threshold = (
            "cgF1",
            "positive_micro_F1",
            "positive_micro_precision",
            "positive_macro_F1",
            "precision",
            "recall",
            "F1",
        )
        for name in per_threshold:
            for suffix, t in (("", None), ("@0.5", 0.5), ("@0.75", 0.75)):
                out[name + suffix] = 100.0 * self._at(c.get(name), t)
        for name in ("IL_MCC", "IL_F1", "IL_precision", "IL_recall", "IL_FPR"):
            v = float(c[name]) if c else float("nan")
            out[name] = v if name == "IL_MCC" else 100.0 * v
        out["num_pairs"] = float(self.num_pairs)
        for k in ("TP", "FP", "TN", "FN"):
            out[f"IL_{k}"] = float(self.il[k])
        return out

    def _at(self, values: Any, threshold: Any) -> float:
        """Mean of ``values`` [T] over all thresholds (None) or at one, over the entries the
        official summary keeps (> -1, not NaN); NaN when none."""
        if values is None:
            return float("nan")
        v = np.asarray(values, dtype=np.float64)
        if threshold is not None:
            v = v[np.where(np.isclose(self.iou_thresholds, threshold))[0]]
        v = v[~np.isnan(v) & (v > -1)]
        return float(v.mean()) if v.size else float("nan")
