"""Hook inputs given either as the object itself or as a function that builds it on first use."""

import logging
from typing import Any

__all__ = ["build_if_factory"]

logger = logging.getLogger(__name__)


def build_if_factory(obj: Any) -> Any:
    """``obj()`` when ``obj`` is a factory (a callable that is not itself the data), else ``obj``."""
    if callable(obj) and not isinstance(obj, (list, tuple)) and not hasattr(obj, "__iter__"):
        return obj()
    return obj
