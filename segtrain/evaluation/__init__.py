"""Evaluation: the ``DatasetEvaluator`` API, ``inference_on_dataset`` and the registered
evaluators (COCO box/mask AP, semantic segmentation)."""
from segtrain.utils.imports import reexport_module

from .build import EVALUATOR_REGISTRY, EVALUATOR_TYPE_TO_NAME, build_evaluator
from .coco_evaluation import COCOEvaluator
from .evaluator import (
    DatasetEvaluator,
    DatasetEvaluators,
    flatten_results_dict,
    inference_context,
    inference_on_dataset,
    print_csv_format,
    verify_results,
)
from .sem_seg_evaluation import SemSegEvaluator

__all__ = [
    "EVALUATOR_REGISTRY",
    "EVALUATOR_TYPE_TO_NAME",
    "build_evaluator",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_on_dataset",
    "inference_context",
    "print_csv_format",
    "flatten_results_dict",
    "verify_results",
    "COCOEvaluator",
    "SemSegEvaluator",
]


reexport_module(globals(), "panoptic_evaluation")
reexport_module(globals(), "video_evaluation")
reexport_module(globals(), "find_evaluation")
