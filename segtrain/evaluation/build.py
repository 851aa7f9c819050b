"""EVALUATOR registry and builder."""

import logging
import os
from typing import Dict, List, Optional

from segtrain.data.catalog import MetadataCatalog
from segtrain.data.datasets.builtin import register_datasets_from_cfg
from segtrain.utils.errors import ConfigError, UnknownNameError
from segtrain.utils.registry import Registry, format_suggestions

from .evaluator import DatasetEvaluators

__all__ = ["EVALUATOR_REGISTRY", "EVALUATOR_TYPE_TO_NAME", "build_evaluator", "evaluator_names"]

logger = logging.getLogger(__name__)

EVALUATOR_REGISTRY = Registry("EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = """Evaluators: class(cfg, dataset_name, output_dir) -> DatasetEvaluator,
via from_config."""

# Metadata ``evaluator_type`` -> EVALUATOR registry name. Modules that add an evaluator for a
# new dataset type add an entry here; a type that is itself a registered name also works.
EVALUATOR_TYPE_TO_NAME: Dict[str, str] = {
    "coco": "COCOEvaluator",
    "sem_seg": "SemSegEvaluator",
    "panoptic_seg": "PanopticEvaluator",
    "video": "VideoEvaluator",
}


def evaluator_names(cfg) -> List[str]:
    """The names in ``cfg.TEST.EVALUATOR`` (a tuple of names, or one name as a string)."""
    value = cfg.TEST.EVALUATOR
    if isinstance(value, str):
        return [value] if value else []
    return [v for v in value if v]


def build_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None):
    """The evaluator(s) for ``dataset_name``: those named in ``cfg.TEST.EVALUATOR`` (several run
    together as ``DatasetEvaluators``), else the one that the dataset metadata's
    ``evaluator_type`` maps to. ``output_dir`` defaults to ``cfg.OUTPUT_DIR/inference``."""
    # the built-in shapes datasets take their sizes (hence json_file) from the config
    register_datasets_from_cfg(cfg)
    if output_dir is None:
        output_dir = os.path.join(cfg.OUTPUT_DIR, "inference")
    names = evaluator_names(cfg)
    if not names:
        etype = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
        if not etype:
            raise ConfigError(
                f"dataset {dataset_name!r} has no evaluator_type in its metadata; set TEST.EVALUATOR to one of: "
                f"{', '.join(EVALUATOR_REGISTRY.names())}"
            )
        name = EVALUATOR_TYPE_TO_NAME.get(etype, etype)
        if name not in EVALUATOR_REGISTRY:
            known = sorted(set(EVALUATOR_TYPE_TO_NAME) | set(EVALUATOR_REGISTRY.names()))
            raise UnknownNameError(
                f"dataset {dataset_name!r} has evaluator_type {etype!r}, which names no evaluator."
                f"{format_suggestions(etype, known)} Known types: {', '.join(sorted(EVALUATOR_TYPE_TO_NAME))}; "
                f"registered evaluators: {', '.join(EVALUATOR_REGISTRY.names())}; or set TEST.EVALUATOR"
            )
        names = [name]
    evaluators = []
    for name in names:
        try:
            cls = EVALUATOR_REGISTRY.get(name)
        except UnknownNameError as e:
            raise UnknownNameError(f"TEST.EVALUATOR: {e}") from None
        evaluators.append(cls(cfg, dataset_name, output_dir=output_dir))
    logger.info(f"Evaluator for {dataset_name}: {', '.join(names)}")
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
