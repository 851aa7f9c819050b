"""MATCHER registry and builder."""
from segtrain.utils.registry import Registry

__all__ = ["MATCHER_REGISTRY"]

MATCHER_REGISTRY = Registry("MATCHER")
MATCHER_REGISTRY.__doc__ = """Matchers, registered by class name; each has from_config(cfg)."""
