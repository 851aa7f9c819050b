"""Matchers (registered in MATCHER_REGISTRY by class name).

One line per family module; a module that another engineer is still writing may be
absent, so each import is tolerant of that module (and only that module) missing.
"""
import importlib as _importlib

from .build import *  # noqa: F401,F403
from .build import MATCHER_REGISTRY, build_matcher  # noqa: F401

__all__ = ["MATCHER_REGISTRY", "build_matcher"]


def _reexport(module_name: str) -> None:
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


_reexport("hungarian")          # HungarianMatcher (Mask2Former)
_reexport("binary_hungarian")   # BinaryHungarianMatcherV2 (SAM 3)
_reexport("one_to_many")        # BinaryOneToManyMatcher (SAM 3)
del _reexport
