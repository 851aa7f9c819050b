"""MATCHER registry and builder."""

from segtrain.utils.registry import Registry

__all__ = ["MATCHER_REGISTRY", "build_matcher"]

MATCHER_REGISTRY = Registry("MATCHER")
MATCHER_REGISTRY.__doc__ = """Matchers, registered by class name; each has from_config(cfg)."""


def build_matcher(cfg, name: str = None):
    """The matcher named ``name`` (default ``cfg.MODEL.MATCHER.NAME``), built through its from_config."""
    return MATCHER_REGISTRY.get(name or cfg.MODEL.MATCHER.NAME)(cfg)
