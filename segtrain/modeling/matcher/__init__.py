"""Matchers (registered in MATCHER_REGISTRY by class name).

One ``reexport_module`` line per family module.
"""
from segtrain.utils.imports import reexport_module

from .build import *  # noqa: F401,F403
from .build import MATCHER_REGISTRY, build_matcher  # noqa: F401

__all__ = ["MATCHER_REGISTRY", "build_matcher"]


reexport_module(globals(), "hungarian")          # HungarianMatcher (Mask2Former)
reexport_module(globals(), "binary_hungarian")   # BinaryHungarianMatcherV2 (SAM 3)
reexport_module(globals(), "one_to_many")        # BinaryOneToManyMatcher (SAM 3)
