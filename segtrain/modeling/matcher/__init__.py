"""Matchers of the shared loss library (registered in ``MATCHER_REGISTRY`` by class name)."""

from .binary_hungarian import INVALID_COST, BinaryHungarianMatcherV2, empty_match, padded_target_boxes
from .build import MATCHER_REGISTRY, build_matcher
from .hungarian import HungarianMatcher, PackedInstanceTargets, pack_instance_targets
from .one_to_many import BinaryOneToManyMatcher

__all__ = [
    "MATCHER_REGISTRY",
    "build_matcher",
    "HungarianMatcher",
    "PackedInstanceTargets",
    "pack_instance_targets",
    "BinaryHungarianMatcherV2",
    "padded_target_boxes",
    "empty_match",
    "INVALID_COST",
    "BinaryOneToManyMatcher",
]
