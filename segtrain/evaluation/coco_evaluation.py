"""COCO-style box and mask AP through pycocotools, with per-category tables and a
score-threshold recall that exposes over-suppressed predictions: ``COCOEvaluator``, the COCO
ground truth it loads and ``evaluate_predictions_on_coco``. The conversions to the COCO format
are in ``coco_format.py``."""

import contextlib
import copy
import io
import itertools
import json
import logging
import math
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from tabulate import tabulate

from segtrain.config import configurable
from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
from segtrain.data.datasets.coco import has_segmentation
from segtrain.utils import comm
from segtrain.utils.errors import ConfigError, DatasetError

from .build import EVALUATOR_REGISTRY
from .coco_format import _has, dataset_dicts_to_coco, instances_to_coco_json
from .evaluator import DatasetEvaluator, read_metadata

# instances_to_coco_json and dataset_dicts_to_coco are re-exported from coco_format
__all__ = ["COCOEvaluator", "evaluate_predictions_on_coco", "instances_to_coco_json", "dataset_dicts_to_coco"]

logger = logging.getLogger(__name__)

_AREA_METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
# Detections at or above this score count as "kept" for the recall metric: a model whose
# no-object class over-suppresses has good AP (ranking) but few GT recalled here.
RECALL_SCORE_THRESHOLD = 0.5
RECALL_KEY = "recall@0.5score"


@EVALUATOR_REGISTRY.register()
class COCOEvaluator(DatasetEvaluator):
    """Box ("bbox") and mask ("segm") AP of instance predictions, computed with pycocotools.

    Ground truth is the dataset's COCO json (``MetadataCatalog.get(name).json_file``) or, when
    the metadata has none or the dataset is COCO panoptic (``panoptic_root``), its dataset
    dicts converted to COCO format (a panoptic image's thing segments are its instances),
    written to ``output_dir/<name>_coco_format.json`` when an output folder is given.

    ``evaluate()`` returns ``{"bbox": {...}, "segm": {...}}`` with percentages (0-100):
    AP, AP50, AP75, APs, APm, APl, ``AP-<class>``, and ``recall@0.5score``: the percentage of
    non-crowd GT instances matched (IoU >= 0.5, same class, COCO greedy matching) by a
    prediction with score >= 0.5. Metrics without GT to measure against are NaN.
    ``output_dir`` also receives ``coco_instances_results.json``.
    """

    #: the key of each model output dict that this evaluator scores
    output_key = "instances"

    @configurable
    def __init__(
        self,
        dataset_name: str,
        tasks: Sequence[str] = ("bbox", "segm"),
        distributed: bool = True,
        output_dir: Optional[str] = None,
        *,
        max_dets_per_image: int = 100,
    ):
        for t in tasks:
            if t not in ("bbox", "segm"):
                raise ConfigError(f"COCOEvaluator({dataset_name}): unknown task {t!r}; choose from 'bbox', 'segm'")
        self._dataset_name = dataset_name
        self._tasks = tuple(tasks)
        self._distributed = distributed
        self._output_dir = output_dir
        self._max_dets = int(max_dets_per_image)
        self._metadata = MetadataCatalog.get(dataset_name)

        json_file = getattr(self._metadata, "json_file", None)
        if getattr(self._metadata, "panoptic_root", None):
            json_file = None  # a COCO panoptic JSON: the instances are the PNGs' thing segments
        if json_file and not os.path.isfile(json_file) and dataset_name in DatasetCatalog:
            DatasetCatalog.get(dataset_name)  # generated datasets write their json on first load
        if json_file:
            self._gt_source = json_file
            self._coco_gt = _load_coco_json(json_file)
        else:
            logger.info(f"{dataset_name} has no json_file in its metadata; converting its dataset dicts to COCO")
            coco_dict = dataset_dicts_to_coco(DatasetCatalog.get(dataset_name), self._metadata)
            self._gt_source = f"<{dataset_name} converted to COCO>"
            if output_dir:
                cache = os.path.join(output_dir, f"{dataset_name}_coco_format.json")
                os.makedirs(output_dir, exist_ok=True)
                with open(cache, "w") as f:
                    json.dump(coco_dict, f)
                self._gt_source = cache
            self._coco_gt = _coco_from_dict(coco_dict)
        _fill_missing_gt_fields(self._coco_gt)
        self._has_gt_masks = any("segmentation" in a for a in self._coco_gt.dataset.get("annotations", []))

        self._gt_image_ids = set(self._coco_gt.getImgIds())
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: Optional[str] = None) -> Dict[str, Any]:
        return {
            "dataset_name": dataset_name,
            "tasks": ("bbox", "segm"),
            "distributed": True,
            "output_dir": output_dir,
            "max_dets_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    def reset(self) -> None:
        self._predictions: List[Dict[str, Any]] = []
        # read again at the first use after each reset: the dataset may fill it after this evaluator is built
        self._category_ids: Optional[Dict[int, int]] = None

    @property
    def _contiguous_to_dataset_id(self) -> Dict[int, int]:
        """Contiguous class id -> the dataset's category id, from the metadata's
        ``thing_dataset_id_to_contiguous_id`` as it is when the evaluation runs. A dataset that
        fills it when first read (``register_coco_instances``) is read for it; without any
        mapping the contiguous ids are the ground truth's category ids."""
        if self._category_ids is None:
            key = "thing_dataset_id_to_contiguous_id"
            mapping = getattr(read_metadata(self._dataset_name, key), key, None)
            if mapping:
                self._category_ids = {int(v): int(k) for k, v in mapping.items()}
            else:
                self._category_ids = {int(c): int(c) for c in self._coco_gt.getCatIds()}
        return self._category_ids

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """Convert each output's ``instances`` to COCO result dicts (kept on this process)."""
        for inp, out in zip(inputs, outputs):
            image_id = int(inp["image_id"])
            if image_id not in self._gt_image_ids:
                raise DatasetError(
                    f"COCOEvaluator({self._dataset_name}): image_id {image_id} is not an image of {self._gt_source}"
                )
            pred = {"image_id": image_id, "instances": []}
            if "instances" in out and _has(out["instances"], "pred_masks"):
                info = self._coco_gt.imgs[image_id]
                got = tuple(out["instances"].pred_masks.shape[-2:])
                if "height" in info and got != (info["height"], info["width"]):
                    raise DatasetError(
                        f"COCOEvaluator({self._dataset_name}): image {image_id}: pred_masks are {got[0]}x{got[1]} but "
                        f"the image is {info['height']}x{info['width']} in {self._gt_source}; predictions must be "
                        "at the original (height, width)"
                    )
            if "instances" in out:
                pred["instances"] = instances_to_coco_json(
                    out["instances"], image_id, self._contiguous_to_dataset_id, dataset_name=self._dataset_name
                )
            self._predictions.append(pred)

    def evaluate(self, img_ids: Optional[Sequence[int]] = None) -> "OrderedDict[str, Dict[str, float]]":
        """Gather predictions to the main process and run COCOeval for each task.
        img_ids: evaluate only these images (default: every image processed)."""
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._predictions, dst=0)
            if not comm.is_main_process():
                return OrderedDict()
            predictions = list(itertools.chain(*gathered))
        else:
            predictions = self._predictions

        tasks = list(self._tasks)
        if "segm" in tasks and not self._has_gt_masks:
            logger.warning(f"COCOEvaluator({self._dataset_name}): the ground truth has no segmentation; skipping segm")
            tasks.remove("segm")
        if not predictions:
            logger.warning(f"COCOEvaluator({self._dataset_name}): no images were processed; results are NaN")
            return OrderedDict((t, {k: float("nan") for k in _AREA_METRICS + [RECALL_KEY]}) for t in tasks)

        coco_results = list(itertools.chain(*[p["instances"] for p in predictions]))
        if img_ids is None:
            img_ids = sorted({p["image_id"] for p in predictions})
        if not coco_results:
            logger.warning(
                f"COCOEvaluator({self._dataset_name}): no instance predicted on {len(img_ids)} images; "
                "AP is 0 where GT exists"
            )
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            with open(path, "w") as f:
                json.dump(coco_results, f)
            logger.info(f"Saved {len(coco_results)} COCO results to {path}")

        if "segm" in tasks and coco_results and not any("segmentation" in r for r in coco_results):
            logger.warning(f"COCOEvaluator({self._dataset_name}): predictions have no pred_masks; skipping segm")
            tasks.remove("segm")

        results = OrderedDict()
        for task in sorted(tasks):
            coco_eval = evaluate_predictions_on_coco(self._coco_gt, coco_results, task, img_ids, self._max_dets)
            results[task] = self._derive_results(coco_eval, task)
        return results

    def _class_name(self, dataset_cat_id: int) -> str:
        names = getattr(self._metadata, "thing_classes", None)
        inverse = {d: c for c, d in self._contiguous_to_dataset_id.items()}
        if names and dataset_cat_id in inverse and inverse[dataset_cat_id] < len(names):
            return str(names[inverse[dataset_cat_id]])
        return str(self._coco_gt.cats[dataset_cat_id].get("name", dataset_cat_id))

    def _derive_results(self, coco_eval: COCOeval, task: str) -> Dict[str, float]:
        """Percentages from COCOeval's precision array, plus per-class AP and the recall metric;
        logs a summary and a per-category table."""
        precision = coco_eval.eval["precision"]  # [T IoUs, R recalls, K classes, A areas, M maxDets]
        iou_thrs = coco_eval.params.iouThrs
        t50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
        t75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
        res = OrderedDict()
        res["AP"] = _mean_valid(precision[:, :, :, 0, -1])
        res["AP50"] = _mean_valid(precision[t50, :, :, 0, -1])
        res["AP75"] = _mean_valid(precision[t75, :, :, 0, -1])
        res["APs"] = _mean_valid(precision[:, :, :, 1, -1])
        res["APm"] = _mean_valid(precision[:, :, :, 2, -1])
        res["APl"] = _mean_valid(precision[:, :, :, 3, -1])
        res[RECALL_KEY] = _recall_at_score(coco_eval, RECALL_SCORE_THRESHOLD, t50)

        per_class = []
        for k, cat_id in enumerate(coco_eval.params.catIds):
            name = self._class_name(cat_id)
            ap = _mean_valid(precision[:, :, k, 0, -1])
            per_class.append((name, ap))
            res[f"AP-{name}"] = ap

        if self._max_dets == 100:
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                coco_eval.summarize()
            logger.info(f"COCOeval summary ({task}):\n{buf.getvalue().rstrip()}")
        summary = [[_fmt(res[k]) for k in _AREA_METRICS + [RECALL_KEY]]]
        logger.info(
            f"Evaluation results for {task} on {self._dataset_name}:\n"
            + tabulate(summary, headers=_AREA_METRICS + [RECALL_KEY], tablefmt="pipe", numalign="left")
        )
        if any(math.isnan(ap) for ap in res.values()):
            logger.info("NaN: no ground truth of that kind in the evaluated images")
        n_cols = min(6, 2 * len(per_class))
        flat = list(itertools.chain(*[(n, _fmt(ap)) for n, ap in per_class]))
        rows = [flat[i : i + n_cols] for i in range(0, len(flat), n_cols)]
        logger.info(
            f"Per-category {task} AP:\n"
            + tabulate(rows, headers=["category", "AP"] * (n_cols // 2), tablefmt="pipe", numalign="left")
        )
        return res


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.3f}"


def _mean_valid(p: np.ndarray) -> float:
    """Mean of the entries COCOeval filled (-1 marks 'no GT'), as a percentage; NaN if none."""
    p = p[p > -1]
    return float(np.mean(p) * 100) if p.size else float("nan")


def _recall_at_score(coco_eval: COCOeval, score_thr: float, t_index: int) -> float:
    """Percentage of non-ignored GT matched at IoU threshold ``t_index`` by a detection scored
    >= score_thr. COCO matches detections greedily by descending score, so the matches of the
    detections above the threshold are the ones they would get if they were alone."""
    p = coco_eval.params
    max_det = p.maxDets[-1]
    all_rng = p.areaRng[0]
    recalled = total = 0
    for e in coco_eval.evalImgs:
        if e is None or e["maxDet"] != max_det or list(e["aRng"]) != list(all_rng):
            continue
        score_of = dict(zip(e["dtIds"], e["dtScores"]))
        gt_matches = e["gtMatches"][t_index]
        for g, ignore in enumerate(e["gtIgnore"]):
            if ignore:
                continue
            total += 1
            m = int(gt_matches[g])
            if m > 0 and score_of.get(m, -1.0) >= score_thr:
                recalled += 1
    return 100.0 * recalled / total if total else float("nan")


def evaluate_predictions_on_coco(
    coco_gt: COCO,
    coco_results: List[Dict[str, Any]],
    iou_type: str,
    img_ids: Optional[Sequence[int]] = None,
    max_dets: int = 100,
) -> COCOeval:
    """Run COCOeval (evaluate + accumulate) of ``coco_results`` against ``coco_gt`` for ``iou_type``."""
    coco_results = copy.deepcopy(coco_results)
    if iou_type == "segm":
        # With a "bbox" present, loadRes takes the box area as the instance area, which would
        # change what counts as small / medium / large for mask AP.
        for r in coco_results:
            r.pop("bbox", None)
    else:
        for r in coco_results:
            r.pop("segmentation", None)
    coco_dt = _load_results(coco_gt, coco_results)
    coco_eval = COCOeval(coco_gt, coco_dt, iou_type)
    if max_dets != 100:
        coco_eval.params.maxDets = [1, 10, max_dets]
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval


def _load_results(coco_gt: COCO, results: List[Dict[str, Any]]) -> COCO:
    if not results:  # loadRes indexes results[0]; an empty result set is valid (AP 0)
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": list(coco_gt.dataset["images"]),
            "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
            "annotations": [],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt.createIndex()
        return coco_dt
    with contextlib.redirect_stdout(io.StringIO()):
        return coco_gt.loadRes(results)


def _load_coco_json(json_file: str) -> COCO:
    if not os.path.isfile(json_file):
        raise DatasetError(f"COCO json not found: {json_file!r}")
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{json_file}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise DatasetError(f"{json_file}: not a COCO instances file (needs 'images' and 'annotations')")
    ids = [a.get("id") for a in data["annotations"]]
    if any(not isinstance(i, int) or i <= 0 for i in ids) or len(set(ids)) != len(ids):
        # COCOeval stores the matched GT id in dtMatches and reads 0 as "unmatched": an annotation
        # with id 0 would turn its true positive into a false positive. Renumber this copy.
        logger.info(f"{json_file}: annotation ids are missing, zero or repeated; renumbering them 1..N for evaluation")
        for i, a in enumerate(data["annotations"]):
            a["id"] = i + 1
    return _coco_from_dict(data)


def _coco_from_dict(data: Dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _fill_missing_gt_fields(coco: COCO) -> None:
    """Give every GT annotation the ``iscrowd`` and ``area`` that COCOeval reads (hand-made
    jsons often omit them)."""
    for ann in coco.dataset.get("annotations", []):
        if "segmentation" in ann and not has_segmentation(ann):
            del ann["segmentation"]  # a box-only annotation written as [] / null (annToRLE fails on it)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            if "segmentation" in ann:
                ann["area"] = float(mask_util.area(coco.annToRLE(ann)))
            else:
                ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
        if "bbox" not in ann and "segmentation" in ann:
            ann["bbox"] = [float(x) for x in mask_util.toBbox(coco.annToRLE(ann))]
