from .build import EVALUATOR_REGISTRY  # noqa
