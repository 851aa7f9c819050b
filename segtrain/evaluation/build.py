"""EVALUATOR registry and builder."""
from segtrain.utils.registry import Registry

__all__ = ["EVALUATOR_REGISTRY"]

EVALUATOR_REGISTRY = Registry("EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = """Evaluators: class(cfg, dataset_name, output_dir) -> DatasetEvaluator, via from_config."""
