"""CRITERION registry, ``CORE_LOSS_KEY`` and ``build_criterion``."""
from segtrain.utils.registry import Registry

__all__ = ["CRITERION_REGISTRY", "CORE_LOSS_KEY", "build_criterion"]

# The one definition of the key every criterion returns its weighted total under.
CORE_LOSS_KEY = "core_loss"

CRITERION_REGISTRY = Registry("CRITERION")
CRITERION_REGISTRY.__doc__ = """Criteria, registered by class name; each has from_config(cfg)."""


def build_criterion(cfg):
    """The criterion named by ``cfg.MODEL.CRITERION.NAME``, built through its from_config."""
    return CRITERION_REGISTRY.get(cfg.MODEL.CRITERION.NAME)(cfg)
