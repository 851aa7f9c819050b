"""Evaluation: the ``DatasetEvaluator`` API, ``inference_on_dataset`` and the registered
evaluators (COCO box/mask AP, semantic segmentation)."""
import importlib as _importlib

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


def _reexport(module_name: str) -> None:
    """Register and re-export evaluators written by other parts of the project (panoptic,
    video) when their module exists; the package must import without them."""
    try:
        mod = _importlib.import_module(f"{__name__}.{module_name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{module_name}":
            raise
        return
    for n in getattr(mod, "__all__", []):
        globals()[n] = getattr(mod, n)
        if n not in __all__:
            __all__.append(n)


_reexport("panoptic_evaluation")
_reexport("video_evaluation")
_reexport("find_evaluation")
del _reexport
