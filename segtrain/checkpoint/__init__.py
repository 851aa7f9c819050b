"""Atomic checkpoints, exact resume, strict weight loading from ``.pth`` and Detectron2 ``.pkl``."""

from .checkpointer import Checkpointer, PeriodicCheckpointer, atomic_write_bytes, unwrap_model
from .weights_match import WeightsMatch, match_weights

__all__ = [
    "Checkpointer",
    "PeriodicCheckpointer",
    "WeightsMatch",
    "atomic_write_bytes",
    "match_weights",
    "unwrap_model",
]
