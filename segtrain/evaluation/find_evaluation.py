"""``FindEvaluator``: concept-detector evaluation over finds (image + concept prompt), with
the numbers SAM 3 reports.

* ``bbox`` / ``segm``: COCO AP as SAM 3 scores Roboflow 100-VL and ODinW (the official
  ``PredictionDumper`` + ``CocoEvaluatorOfflineWithPredFileEvaluators``): every detection of
  every find counts, so a detection of a concept absent from the image is a false positive.
  Scores and box coordinates are rounded to 5 decimals and each image keeps its
  ``max_dets_per_image`` (``TEST.DETECTIONS_PER_IMAGE``, 100) best detections over all its finds,
  as the dumper writes them.
* ``bbox_positive`` / ``segm_positive``: the same over the positive finds only, i.e. the
  detections of concepts absent from the image dropped (the official ``positive_split``).
* ``cgF1_bbox`` / ``cgF1_segm``: the SA-Co metrics of ``saco_metrics.py`` (cgF1, IL_MCC,
  positive micro F1, ...; the official ``CGF1Eval``), one pair per exhaustive find (a find
  whose ``find_is_exhaustive`` is False is left out, as SA-Co leaves out pairs that are not
  instance-exhaustive), its detections scored >= 0.5.
* ``presence``: over ALL finds, the presence probability thresholded at 0.5 against
  "the concept is in the image": accuracy, precision, recall, F1, and the accuracy of
  always answering the majority class (the chance level to beat).

Box-only ground truth (annotations without ``segmentation``, or with ``[]``): with no mask
in the json, ``segm``, ``segm_positive`` and ``cgF1_segm`` are skipped (a warning says so).
In a json that mixes both, they are computed on the images whose every annotation has a mask
(a box-only instance cannot be matched by a mask); the box metrics on all.
"""

import itertools
import json
import logging
import os
from collections import OrderedDict, defaultdict
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch

from segtrain.utils import comm
from segtrain.utils.errors import DatasetError

from .build import EVALUATOR_REGISTRY
from .coco_evaluation import COCOEvaluator, evaluate_predictions_on_coco
from .saco_metrics import SACO_SCORE_THRESHOLD, SacoAccumulator, pair_ious

__all__ = ["FindEvaluator", "presence_metrics"]

logger = logging.getLogger(__name__)

# the official dumper rounds scores and box coordinates to this many decimals
_DUMP_DECIMALS = 5

PRESENCE_THRESHOLD = 0.5


def presence_metrics(
    scores: Sequence[float], present: Sequence[bool], threshold: float = PRESENCE_THRESHOLD
) -> Dict[str, float]:
    """Binary metrics of presence predictions, in percent (0-100) except ``num_finds``.

    scores: presence probability per find; present: whether the concept is in the image.
    Returns ``accuracy``, ``precision``, ``recall``, ``F1`` (NaN when undefined),
    ``chance_accuracy`` (majority-class rate), ``positive_rate`` and ``num_finds``.
    """
    s = torch.as_tensor(list(scores), dtype=torch.float64)
    y = torch.as_tensor(list(present), dtype=torch.bool)
    n = int(y.numel())
    if n == 0:
        nan = float("nan")
        return {
            "accuracy": nan,
            "precision": nan,
            "recall": nan,
            "F1": nan,
            "chance_accuracy": nan,
            "positive_rate": nan,
            "num_finds": 0.0,
        }
    pred = s > threshold
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    pos = int(y.sum())

    def pct(a: int, b: int) -> float:
        return 100.0 * a / b if b else float("nan")

    return {
        "accuracy": pct(int((pred == y).sum()), n),
        "precision": pct(tp, tp + fp),
        "recall": pct(tp, tp + fn),
        "F1": pct(2 * tp, 2 * tp + fp + fn),
        "chance_accuracy": pct(max(pos, n - pos), n),
        "positive_rate": pct(pos, n),
        "num_finds": float(n),
    }


# one find as recorded by ``process``: image id, contiguous concept, presence probability,
# whether the concept is in the image, whether its annotation is exhaustive
_Find = Tuple[int, int, float, bool, bool]


def _as_dumped(results: List[Dict[str, Any]], max_per_image: int) -> List[Dict[str, Any]]:
    """Copies of ``results`` rounded as the official dumper writes them, keeping each image's
    ``max_per_image`` highest-scored detections over all its finds."""
    by_image: Dict[int, List[Dict[str, Any]]] = defaultdict(list)
    for r in results:
        r = dict(r, score=round(r["score"], _DUMP_DECIMALS))
        if "bbox" in r:
            r["bbox"] = [round(v, _DUMP_DECIMALS) for v in r["bbox"]]
        by_image[r["image_id"]].append(r)
    kept = []
    for rs in by_image.values():
        kept.extend(sorted(rs, key=lambda r: -r["score"])[:max_per_image] if max_per_image > 0 else rs)
    return kept


@EVALUATOR_REGISTRY.register()
class FindEvaluator(COCOEvaluator):
    """COCO AP with absent-concept detections as false positives, AP over positive finds, the
    SA-Co metrics and presence metrics (module docstring).

    Reads a find model's eval outputs (``Sam3Image``'s): ``"instances"`` (``pred_classes``
    = the find's concept, contiguous id; ``scores`` = presence x query probability) and
    ``"finds"`` (``categories`` [F], ``presence_scores`` [F]); an input's
    ``find_is_exhaustive`` (aligned with its ``find_categories``) marks finds left out of the
    SA-Co metrics. Ground truth is the dataset's COCO json, as for :class:`COCOEvaluator`.
    ``evaluate()`` -> ``{"bbox", "bbox_positive", "cgF1_bbox", "segm", "segm_positive",
    "cgF1_segm", "presence"}``: AP keys as ``COCOEvaluator`` (percentages), ``cgF1_*`` keys of
    ``SacoAccumulator.summary`` (percentages except ``IL_MCC`` and the counts); no ``segm*``
    keys when the ground truth has no masks (module docstring).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # mixed box-only / mask ground truth: the images segm can score (None: all or none)
        self._segm_image_ids: Optional[Set[int]] = None
        if "segm" in self._tasks and self._has_gt_masks:
            with_masks = {
                i for i in self._gt_image_ids if all("segmentation" in a for a in self._coco_gt.imgToAnns.get(i, []))
            }
            if len(with_masks) < len(self._gt_image_ids):
                self._segm_image_ids = with_masks

    def reset(self) -> None:
        super().reset()
        self._finds: List[_Find] = []

    def _present_concepts(self, image_id: int) -> Set[int]:
        """Contiguous ids of the concepts with a non-crowd GT instance in ``image_id``."""
        to_contiguous = {d: c for c, d in self._contiguous_to_dataset_id.items()}
        anns = self._coco_gt.imgToAnns.get(image_id, [])
        return {
            to_contiguous[a["category_id"]]
            for a in anns
            if not a.get("iscrowd", 0) and a["category_id"] in to_contiguous
        }

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs):
            image_id = int(inp["image_id"])
            if image_id not in self._gt_image_ids:
                raise DatasetError(
                    f"FindEvaluator({self._dataset_name}): image_id {image_id} is not an image of {self._gt_source}"
                )
            if "finds" not in out:
                raise DatasetError(
                    f"FindEvaluator({self._dataset_name}): the model output of image {image_id} has no 'finds' "
                    "(categories, presence_scores); evaluate a find model such as Sam3Image"
                )
            present = self._present_concepts(image_id)
            exhaustive = {}
            if inp.get("find_categories") is not None and inp.get("find_is_exhaustive") is not None:
                cats_in = torch.as_tensor(inp["find_categories"]).reshape(-1).tolist()
                flags = torch.as_tensor(inp["find_is_exhaustive"]).reshape(-1).tolist()
                exhaustive = dict(zip(cats_in, flags))
            cats = torch.as_tensor(out["finds"]["categories"]).reshape(-1).tolist()
            probs = torch.as_tensor(out["finds"]["presence_scores"]).reshape(-1).tolist()
            self._finds.extend(
                (image_id, int(c), float(p), int(c) in present, bool(exhaustive.get(int(c), True)))
                for c, p in zip(cats, probs)
            )
        super().process(inputs, outputs)

    def evaluate(self, img_ids: Optional[Sequence[int]] = None) -> "OrderedDict[str, Dict[str, float]]":
        predictions, finds = self._predictions, self._finds
        if self._distributed:
            comm.synchronize()
            gathered_p, gathered_f = comm.gather(predictions, dst=0), comm.gather(finds, dst=0)
            if not comm.is_main_process():
                return OrderedDict()
            predictions = list(itertools.chain(*gathered_p))
            finds = list(itertools.chain(*gathered_f))
        if img_ids is None:
            img_ids = sorted({p["image_id"] for p in predictions})
        wanted = set(img_ids)
        finds = [f for f in finds if f[0] in wanted]
        if not predictions:
            logger.warning(f"FindEvaluator({self._dataset_name}): no images were processed; results are NaN")
        all_results = [r for p in predictions for r in p["instances"]]
        results = _as_dumped(all_results, self._max_dets)
        # a find keeps its own detections for the SA-Co metrics (one pair per dumped image there)
        per_find = _as_dumped(all_results, -1)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            with open(path, "w") as f:
                json.dump(results, f)
            logger.info(f"Saved {len(results)} COCO results (all finds, as dumped) to {path}")
        tasks = [t for t in ("bbox", "segm") if t in self._tasks]
        if "segm" in tasks and not self._has_gt_masks:
            logger.warning(f"FindEvaluator({self._dataset_name}): the ground truth has no segmentation; skipping segm")
            tasks.remove("segm")
        if "segm" in tasks and results and not any("segmentation" in r for r in results):
            logger.warning(f"FindEvaluator({self._dataset_name}): predictions have no pred_masks; skipping segm")
            tasks.remove("segm")

        out: "OrderedDict[str, Dict[str, float]]" = OrderedDict()
        present = {(f[0], self._contiguous_to_dataset_id.get(f[1], f[1])) for f in finds if f[3]}
        positive = [r for r in results if (r["image_id"], r["category_id"]) in present]
        for task in tasks:
            ids = self._scored_images(task, list(img_ids))
            if not predictions:
                nan = {"AP": float("nan")}
                out[task], out[f"{task}_positive"] = dict(nan), dict(nan)
                out[f"cgF1_{task}"] = SacoAccumulator().summary()
                continue
            if not ids:
                continue
            out[task] = self._ap(results, task, ids)
            out[f"{task}_positive"] = self._ap(positive, task, ids, "positive finds only")
            out[f"cgF1_{task}"] = self._saco(per_find, [f for f in finds if f[0] in set(ids)], task)
        presence = presence_metrics([f[2] for f in finds], [f[3] for f in finds])
        logger.info(
            f"Presence on {self._dataset_name} ({int(presence['num_finds'])} finds): "
            f"accuracy {presence['accuracy']:.2f}% "
            f"(majority class {presence['chance_accuracy']:.2f}%), F1 {presence['F1']:.2f}%, "
            f"precision {presence['precision']:.2f}%, recall {presence['recall']:.2f}%"
        )
        out["presence"] = presence
        return out

    def _scored_images(self, task: str, ids: List[int]) -> List[int]:
        """The images ``task`` scores: all, or for segm on a mixed json those with masks only."""
        if task != "segm" or self._segm_image_ids is None:
            return ids
        kept = [i for i in ids if i in self._segm_image_ids]
        if not kept:
            logger.warning(
                f"FindEvaluator({self._dataset_name}): none of the {len(ids)} evaluated images has a mask "
                "for every annotation; skipping segm (bbox and presence are reported)"
            )
        else:
            logger.info(
                f"FindEvaluator({self._dataset_name}): segm AP over the {len(kept)} of {len(ids)} images whose "
                "every annotation has a mask (the others have box-only annotations)"
            )
        return kept

    def _ap(
        self, results: List[Dict[str, Any]], task: str, ids: List[int], what: str = "all finds"
    ) -> Dict[str, float]:
        kept = set(ids)
        coco_eval = evaluate_predictions_on_coco(
            self._coco_gt, [r for r in results if r["image_id"] in kept], task, ids, self._max_dets
        )
        return self._derive_results(coco_eval, f"{task} ({what})")

    def _saco(self, results: List[Dict[str, Any]], finds: List[_Find], task: str) -> Dict[str, float]:
        """SA-Co metrics over the exhaustive ``finds``, ``results`` being the dumped detections."""
        region = "bbox" if task == "bbox" else "segmentation"
        detections: Dict[Tuple[int, int], List[Any]] = defaultdict(list)
        for r in results:
            if r["score"] >= SACO_SCORE_THRESHOLD:
                detections[r["image_id"], r["category_id"]].append(r[region])
        acc = SacoAccumulator()
        for image_id, concept, _, _, exhaustive in finds:
            if not exhaustive:
                continue
            cat = self._contiguous_to_dataset_id.get(concept, concept)
            gt = [
                a["bbox"] if task == "bbox" else self._coco_gt.annToRLE(a)
                for a in self._coco_gt.imgToAnns.get(image_id, [])
                if a["category_id"] == cat and not a.get("iscrowd", 0)
            ]
            acc.add_pair(pair_ious(detections.get((image_id, cat), []), gt))
        metrics = acc.summary()
        logger.info(
            f"SA-Co metrics ({task}) on {self._dataset_name} ({acc.num_pairs} image-concept pairs): "
            f"cgF1 {metrics['cgF1']:.2f}, IL_MCC {metrics['IL_MCC']:.3f}, "
            f"positive micro F1 {metrics['positive_micro_F1']:.2f}, IL_F1 {metrics['IL_F1']:.2f}"
        )
        return metrics
