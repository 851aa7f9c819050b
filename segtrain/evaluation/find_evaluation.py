"""``FindEvaluator``: concept-detector evaluation over finds (image + concept prompt).

* ``bbox`` / ``segm``: COCO-style AP over the POSITIVE finds, i.e. the (image, concept)
  pairs whose concept has a non-crowd instance in the image; detections of negative finds
  are left out (their cost is what the presence metrics measure).
* ``presence``: over ALL finds, the presence probability thresholded at 0.5 against
  "the concept is in the image": accuracy, precision, recall, F1, and the accuracy of
  always answering the majority class (the chance level to beat).

Box-only ground truth (annotations without ``segmentation``, or with ``[]``): with no mask
in the json, ``segm`` is skipped (a warning says so) and ``bbox`` / ``presence`` are
reported. In a json that mixes both, ``segm`` is computed on the images whose every
annotation has a mask (a box-only instance cannot be matched by a mask); ``bbox`` on all.
"""

import itertools
import logging
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch

from segtrain.utils import comm
from segtrain.utils.errors import DatasetError

from .build import EVALUATOR_REGISTRY
from .coco_evaluation import COCOEvaluator, evaluate_predictions_on_coco

__all__ = ["FindEvaluator", "presence_metrics"]

logger = logging.getLogger(__name__)

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


@EVALUATOR_REGISTRY.register()
class FindEvaluator(COCOEvaluator):
    """AP over positive finds and presence metrics over all finds (module docstring).

    Reads the model's eval outputs of ``ConceptDetector``: ``"instances"`` (``pred_classes``
    = the find's concept, contiguous id) and ``"finds"`` (``categories`` [F], ``presence_scores``
    [F]). Ground truth is the dataset's COCO json, as for :class:`COCOEvaluator`.
    ``evaluate()`` -> ``{"bbox": {...}, "segm": {...}, "presence": {...}}`` (percentages);
    no ``"segm"`` when the ground truth has no masks (module docstring).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._presence: List[Tuple[float, bool]] = []
        # mixed box-only / mask ground truth: the images segm AP can score (None: all or none)
        self._segm_image_ids: Optional[Set[int]] = None
        if "segm" in self._tasks and self._has_gt_masks:
            with_masks = {
                i for i in self._gt_image_ids if all("segmentation" in a for a in self._coco_gt.imgToAnns.get(i, []))
            }
            if len(with_masks) < len(self._gt_image_ids):
                self._segm_image_ids = with_masks

    def reset(self) -> None:
        super().reset()
        self._presence: List[Tuple[float, bool]] = []

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
        kept_outputs = []
        for inp, out in zip(inputs, outputs):
            image_id = int(inp["image_id"])
            if image_id not in self._gt_image_ids:
                raise DatasetError(
                    f"FindEvaluator({self._dataset_name}): image_id {image_id} is not an image of {self._gt_source}"
                )
            if "finds" not in out:
                raise DatasetError(
                    f"FindEvaluator({self._dataset_name}): the model output of image {image_id} has no 'finds' "
                    "(categories, presence_scores); evaluate a concept detector (ConceptDetector)"
                )
            present = self._present_concepts(image_id)
            cats = torch.as_tensor(out["finds"]["categories"]).reshape(-1).tolist()
            probs = torch.as_tensor(out["finds"]["presence_scores"]).reshape(-1).tolist()
            self._presence.extend((float(p), int(c) in present) for c, p in zip(cats, probs))
            kept = dict(out)
            if "instances" in out:
                inst = out["instances"]
                keep = torch.tensor([int(c) in present for c in inst.pred_classes.tolist()], dtype=torch.bool)
                kept["instances"] = inst[keep.to(inst.pred_classes.device)]
            kept_outputs.append(kept)
        super().process(inputs, kept_outputs)

    def evaluate(self, img_ids: Optional[Sequence[int]] = None) -> "OrderedDict[str, Dict[str, float]]":
        presence = self._presence
        mixed = self._segm_image_ids is not None
        predictions = self._predictions
        if self._distributed:
            gathered = comm.gather(presence, dst=0)
            presence = list(itertools.chain(*gathered)) if comm.is_main_process() else []
            if mixed:
                gathered = comm.gather(predictions, dst=0)
                predictions = list(itertools.chain(*gathered)) if comm.is_main_process() else []
        if mixed:  # bbox (all images) here, segm (images with masks only) below
            tasks, self._tasks = self._tasks, tuple(t for t in self._tasks if t != "segm")
            try:
                results = super().evaluate(img_ids)
            finally:
                self._tasks = tasks
        else:
            results = super().evaluate(img_ids)
        if self._distributed and not comm.is_main_process():
            return OrderedDict()
        if mixed:
            segm = self._evaluate_segm_on_mask_images(predictions, img_ids)
            if segm is not None:
                results["segm"] = segm
        metrics = presence_metrics([p for p, _ in presence], [y for _, y in presence])
        logger.info(
            f"Presence on {self._dataset_name} ({int(metrics['num_finds'])} finds): "
            f"accuracy {metrics['accuracy']:.2f}% "
            f"(majority class {metrics['chance_accuracy']:.2f}%), F1 {metrics['F1']:.2f}%, "
            f"precision {metrics['precision']:.2f}%, recall {metrics['recall']:.2f}%"
        )
        results["presence"] = metrics
        return results

    def _evaluate_segm_on_mask_images(
        self, predictions: List[Dict[str, Any]], img_ids: Optional[Sequence[int]]
    ) -> Optional[Dict[str, float]]:
        """segm AP over the evaluated images whose every GT annotation has a mask (mixed json)."""
        ids = sorted({p["image_id"] for p in predictions}) if img_ids is None else list(img_ids)
        kept = [i for i in ids if i in self._segm_image_ids]
        if not kept:
            logger.warning(
                f"FindEvaluator({self._dataset_name}): none of the {len(ids)} evaluated images has a mask "
                "for every annotation; skipping segm (bbox and presence are reported)"
            )
            return None
        kept_set = set(kept)
        coco_results = [r for p in predictions if p["image_id"] in kept_set for r in p["instances"]]
        if coco_results and not any("segmentation" in r for r in coco_results):
            logger.warning(f"FindEvaluator({self._dataset_name}): predictions have no pred_masks; skipping segm")
            return None
        logger.info(
            f"FindEvaluator({self._dataset_name}): segm AP over the {len(kept)} of {len(ids)} images whose "
            "every annotation has a mask (the others have box-only annotations)"
        )
        coco_eval = evaluate_predictions_on_coco(self._coco_gt, coco_results, "segm", kept, self._max_dets)
        return self._derive_results(coco_eval, "segm")
