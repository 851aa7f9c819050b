from .build import CORE_LOSS_KEY, CRITERION_REGISTRY, build_criterion  # noqa
