"""Semantic segmentation metrics (mIoU, fwIoU, mACC, pACC, per-class IoU / accuracy)."""

import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from tabulate import tabulate

from segtrain.config import configurable
from segtrain.data.catalog import MetadataCatalog
from segtrain.data.detection_utils import read_label_map, read_panoptic_ids
from segtrain.structures.masks import segmentation_to_bitmask
from segtrain.utils.errors import DatasetError

from .build import EVALUATOR_REGISTRY
from .evaluator import DatasetDictIndex, DatasetEvaluator, read_metadata, sum_over_processes

__all__ = ["SemSegEvaluator", "semantic_gt_from_annotations", "semantic_gt_from_panoptic", "sem_seg_metrics"]

logger = logging.getLogger(__name__)


@EVALUATOR_REGISTRY.register()
class SemSegEvaluator(DatasetEvaluator):
    """Per-pixel metrics of ``outputs[i]["sem_seg"]`` ([K, H, W] scores, argmax taken; a [H, W]
    label map is also accepted) against the dataset's ground truth, through a confusion matrix.

    Ground truth per image, looked up by ``image_id`` (else ``file_name``) in the dataset dicts:
    - ``sem_seg_file_name``: a label PNG (one channel, values in [0, K) or ``ignore_label``);
    - ``pan_seg_file_name`` + ``segments_info`` (COCO panoptic): each non-crowd segment's
      pixels take its class, void and crowd pixels are ``ignore_label``;
    - otherwise, for instance datasets, a label map painted from the instance annotations:
      pixels of one instance take its class; background, crowd regions and pixels claimed by
      instances of different classes are ``ignore_label``. Things-only models predict no
      background class, so background cannot be scored; ambiguous overlaps are not scored
      rather than guessed from annotation order.
    Classes: ``stuff_classes`` of the metadata, else ``thing_classes``; ``ignore_label`` from the
    metadata (default 255).

    ``evaluate()`` -> ``{"sem_seg": {"mIoU", "fwIoU", "mACC", "pACC", "IoU-<class>",
    "ACC-<class>"}}`` in percent; classes absent from the GT are NaN and left out of the means.
    """

    #: the key of each model output dict that this evaluator scores
    output_key = "sem_seg"

    @configurable
    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        num_classes: Optional[int] = None,
        ignore_label: Optional[int] = None,
    ):
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._given_num_classes = num_classes
        self._given_ignore_label = ignore_label
        self._gt_index: Optional[DatasetDictIndex] = None
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None) -> Dict[str, Any]:
        return {"dataset_name": dataset_name, "distributed": True, "output_dir": output_dir}

    def _dataset_dict(self, inp: Dict[str, Any]) -> Dict[str, Any]:
        if self._gt_index is None:  # loaded on first use: building the evaluator stays cheap
            self._gt_index = DatasetDictIndex(self._dataset_name, "SemSegEvaluator")
        return self._gt_index.lookup(inp)

    def _load_gt(self, d: Dict[str, Any]) -> np.ndarray:
        if d.get("sem_seg_file_name"):
            return read_label_map(d["sem_seg_file_name"])
        if d.get("pan_seg_file_name"):
            return semantic_gt_from_panoptic(d, self._ignore_label)
        return semantic_gt_from_annotations(d, self._ignore_label)

    def reset(self) -> None:
        self._read_categories()
        self._conf_matrix = np.zeros((self._num_classes + 1, self._num_classes + 1), dtype=np.int64)

    def _read_categories(self) -> None:
        """Class names, their number and the ignore label, from the metadata as it is at this reset
        (a dataset that sets its classes when first read is read for them)."""
        if self._given_num_classes is None:
            meta = read_metadata(self._dataset_name, "stuff_classes", "thing_classes")
        else:
            meta = MetadataCatalog.get(self._dataset_name)
        self._class_names = list(getattr(meta, "stuff_classes", None) or getattr(meta, "thing_classes", None) or [])
        num_classes = self._given_num_classes if self._given_num_classes is not None else len(self._class_names)
        if num_classes <= 0:
            raise DatasetError(f"SemSegEvaluator({self._dataset_name}): metadata has no stuff_classes or thing_classes")
        self._num_classes = int(num_classes)
        if len(self._class_names) != self._num_classes:
            self._class_names = [str(i) for i in range(self._num_classes)]
        ignore_label = self._given_ignore_label
        self._ignore_label = int(ignore_label if ignore_label is not None else getattr(meta, "ignore_label", 255))

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """Add each image's (prediction, GT) pixel pairs to the confusion matrix."""
        k = self._num_classes
        for inp, out in zip(inputs, outputs):
            if "sem_seg" not in out:
                raise DatasetError(
                    f"SemSegEvaluator({self._dataset_name}): the model's outputs have no 'sem_seg' "
                    f"(only {sorted(out)}); Mask2Former: set MODEL.MASK_FORMER.TEST.SEMANTIC_ON True"
                )
            sem = out["sem_seg"]
            sem = sem.detach().cpu() if isinstance(sem, torch.Tensor) else torch.as_tensor(sem)
            pred = sem.argmax(dim=0) if sem.dim() == 3 else sem
            pred = pred.numpy().astype(np.int64)
            gt = self._load_gt(self._dataset_dict(inp))
            if gt.shape != pred.shape:
                raise DatasetError(
                    f"SemSegEvaluator({self._dataset_name}): image {inp.get('image_id')!r}: prediction is "
                    f"{pred.shape[0]}x{pred.shape[1]} but the ground truth is {gt.shape[0]}x{gt.shape[1]}"
                )
            gt = gt.copy()
            gt[gt == self._ignore_label] = k
            bad = (gt < 0) | (gt > k)
            if bad.any():
                raise DatasetError(
                    f"SemSegEvaluator({self._dataset_name}): image {inp.get('image_id')!r}: GT label "
                    f"{int(gt[bad][0])} is outside [0, {k}) and is not ignore_label {self._ignore_label}"
                )
            if pred.min() < 0 or pred.max() >= k:
                raise DatasetError(
                    f"SemSegEvaluator({self._dataset_name}): predicted label {int(pred.max())} is outside [0, {k})"
                )
            # rows: prediction, columns: ground truth (last column = ignored pixels)
            self._conf_matrix += np.bincount(
                (k + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=(k + 1) ** 2
            ).reshape(k + 1, k + 1)

    def evaluate(self) -> "OrderedDict[str, Dict[str, float]]":
        """Sum the confusion matrices of all processes and derive the metrics (main process)."""
        conf = sum_over_processes(self._conf_matrix, self._distributed)
        if conf is None:
            return OrderedDict()
        res = sem_seg_metrics(conf, self._class_names)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            with open(os.path.join(self._output_dir, "sem_seg_evaluation.json"), "w") as f:
                json.dump(res, f)
        rows = [[n, _fmt(res[f"IoU-{n}"]), _fmt(res[f"ACC-{n}"])] for n in self._class_names]
        logger.info(
            f"Semantic segmentation on {self._dataset_name}: mIoU {_fmt(res['mIoU'])}, fwIoU {_fmt(res['fwIoU'])}, "
            f"mACC {_fmt(res['mACC'])}, pACC {_fmt(res['pACC'])}\n"
            + tabulate(rows, headers=["class", "IoU", "ACC"], tablefmt="pipe", numalign="left")
        )
        return OrderedDict(sem_seg=res)


def _fmt(v: float) -> str:
    return "nan" if np.isnan(v) else f"{v:.3f}"


def sem_seg_metrics(conf: np.ndarray, class_names: Sequence[str]) -> Dict[str, float]:
    """Metrics in percent from a confusion matrix ``conf`` [K+1, K+1] (rows prediction,
    columns GT, last row/column the ignored label). Classes without GT pixels are NaN and do
    not enter mIoU / mACC / fwIoU; all NaN when the GT has no labelled pixel."""
    k = conf.shape[0] - 1
    conf = conf[:k, :k].astype(np.float64)  # predictions on ignored pixels are not scored
    tp = np.diag(conf)
    pos_gt = conf.sum(axis=0)
    pos_pred = conf.sum(axis=1)
    valid = pos_gt > 0
    acc = np.full(k, np.nan)
    iou = np.full(k, np.nan)
    acc[valid] = tp[valid] / pos_gt[valid]
    union = pos_gt + pos_pred - tp
    iou[valid] = tp[valid] / union[valid]
    total = pos_gt.sum()
    res: Dict[str, float] = {}
    if total > 0:
        weights = pos_gt / total
        res["mIoU"] = 100 * float(np.mean(iou[valid]))
        res["fwIoU"] = 100 * float(np.sum(iou[valid] * weights[valid]))
        res["mACC"] = 100 * float(np.mean(acc[valid]))
        res["pACC"] = 100 * float(tp.sum() / total)
    else:
        logger.warning("SemSegEvaluator: the ground truth has no labelled pixel; metrics are NaN")
        res.update(mIoU=float("nan"), fwIoU=float("nan"), mACC=float("nan"), pACC=float("nan"))
    for i, name in enumerate(class_names):
        res[f"IoU-{name}"] = 100 * float(iou[i])
    for i, name in enumerate(class_names):
        res[f"ACC-{name}"] = 100 * float(acc[i])
    return res


def semantic_gt_from_annotations(d: Dict[str, Any], ignore_label: int = 255) -> np.ndarray:
    """A [height, width] int64 label map from a dataset dict's instance annotations: a pixel
    covered by instances of a single class gets that class; background, crowd regions and
    pixels covered by instances of different classes get ``ignore_label``."""
    h, w = int(d["height"]), int(d["width"])
    label = np.full((h, w), -1, dtype=np.int64)
    conflict = np.zeros((h, w), dtype=bool)
    crowd = np.zeros((h, w), dtype=bool)
    for ann in d.get("annotations", []):
        seg = ann.get("segmentation")
        if not seg:
            continue
        m = segmentation_to_bitmask(seg, h, w)
        if ann.get("iscrowd", 0):
            crowd |= m
            continue
        cls = int(ann["category_id"])
        conflict |= m & (label >= 0) & (label != cls)
        label[m & (label < 0)] = cls
    label[(label < 0) | conflict | crowd] = ignore_label
    return label


def semantic_gt_from_panoptic(d: Dict[str, Any], ignore_label: int = 255) -> np.ndarray:
    """A [H, W] int64 label map from a dataset dict's COCO panoptic PNG and ``segments_info``:
    the pixels of each non-crowd segment get its ``category_id``; void and crowd get
    ``ignore_label``."""
    ids = read_panoptic_ids(d["pan_seg_file_name"])
    label = np.full(ids.shape, ignore_label, dtype=np.int64)
    for s in d.get("segments_info", []):
        if not s.get("iscrowd", 0):
            label[ids == int(s["id"])] = int(s["category_id"])
    return label
