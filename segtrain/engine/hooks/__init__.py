"""Training hooks: one small class per side concern (timing, LR, checkpoints, evaluation,
validation loss, prediction images, best checkpoint, early stopping, writers, signals,
failure checkpoint, end-of-run report)."""

import logging

from ..train_loop import HookBase
from .checkpointing import FailureCheckpointer, PeriodicCheckpointer, SignalCheckpointer, TrainingInterrupted
from .common import CallbackHook, IterationTimer, LRScheduler, PeriodicWriter
from .evaluation import EvalHook, ValidationLoss, loss_mode
from .metric_watchers import BestCheckpointer, EarlyStopping
from .reporting import TrainingReport
from .visualization import VisualizationHook, render_predictions

__all__ = [
    "HookBase",
    "CallbackHook",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "EvalHook",
    "ValidationLoss",
    "VisualizationHook",
    "loss_mode",
    "render_predictions",
    "BestCheckpointer",
    "EarlyStopping",
    "PeriodicWriter",
    "SignalCheckpointer",
    "FailureCheckpointer",
    "TrainingInterrupted",
    "TrainingReport",
]

logger = logging.getLogger(__name__)
