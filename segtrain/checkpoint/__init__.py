"""Atomic checkpoints, exact resume, weight loading from ``.pth`` and Detectron2 ``.pkl``."""

from .checkpointer import Checkpointer, PeriodicCheckpointer, atomic_write_bytes, unwrap_model

__all__ = ["Checkpointer", "PeriodicCheckpointer", "atomic_write_bytes", "unwrap_model"]
