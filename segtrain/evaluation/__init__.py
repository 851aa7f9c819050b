"""Evaluation: the ``DatasetEvaluator`` API, ``inference_on_dataset`` and the registered
evaluators (COCO box/mask AP, semantic segmentation)."""

from . import checks as _checks  # noqa: F401  (registers the evaluation keys' start-up checks)
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
from .find_evaluation import FindEvaluator
from .panoptic_evaluation import PanopticEvaluator
from .sem_seg_evaluation import SemSegEvaluator
from .video_evaluation import VideoEvaluator

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
    "PanopticEvaluator",
    "VideoEvaluator",
    "FindEvaluator",
]
