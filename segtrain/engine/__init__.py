"""Training loop, hooks, default trainer / setup and multi-process launch."""
from .defaults import (
    DefaultTrainer,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    default_writers,
    run_cli,
    setup_cfg,
)
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
]
