"""Atomic checkpoints, exact resume, strict weight loading from ``.pth`` and Detectron2 ``.pkl``."""

from .checkpointer import (
    Checkpointer,
    PeriodicCheckpointer,
    atomic_write_bytes,
    load_model_weights,
    load_state_strictly,
    read_checkpoint_file,
    unwrap_model,
    weights_prefixes,
)
from .weights_match import WeightsMatch, match_weights

__all__ = [
    "Checkpointer",
    "PeriodicCheckpointer",
    "WeightsMatch",
    "atomic_write_bytes",
    "load_model_weights",
    "load_state_strictly",
    "match_weights",
    "read_checkpoint_file",
    "unwrap_model",
    "weights_prefixes",
]
