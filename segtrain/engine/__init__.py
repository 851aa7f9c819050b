"""Training loop, hooks, default trainer / setup and multi-process launch."""

from .cli import default_argument_parser, default_setup, default_writers, run_cli, setup_cfg
from .defaults import DefaultTrainer, create_ddp_model
from .hooks import (
    BestCheckpointer,
    EarlyStopping,
    EvalHook,
    FailureCheckpointer,
    IterationTimer,
    LRScheduler,
    PeriodicCheckpointer,
    PeriodicWriter,
    SignalCheckpointer,
    TrainingReport,
    ValidationLoss,
    VisualizationHook,
)
from .launch import launch
from .train_loop import AMPTrainer, HookBase, SimpleTrainer, TrainerBase

__all__ = [
    "HookBase",
    "TrainerBase",
    "SimpleTrainer",
    "AMPTrainer",
    "DefaultTrainer",
    "default_argument_parser",
    "setup_cfg",
    "default_setup",
    "default_writers",
    "create_ddp_model",
    "run_cli",
    "launch",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "FailureCheckpointer",
    "SignalCheckpointer",
    "EvalHook",
    "BestCheckpointer",
    "EarlyStopping",
    "PeriodicWriter",
    "ValidationLoss",
    "VisualizationHook",
    "TrainingReport",
]
