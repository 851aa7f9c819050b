"""Checkpoint hooks: periodic and final, the state before a non-finite loss, and on SIGINT / SIGTERM."""

import logging
import signal
import threading
from typing import Any, Dict, Optional, Sequence

import torch

from segtrain.checkpoint import Checkpointer
from segtrain.checkpoint import PeriodicCheckpointer as _PeriodicCheckpointer
from segtrain.utils.errors import NonFiniteLossError

from ..train_loop import HookBase

__all__ = ["PeriodicCheckpointer", "FailureCheckpointer", "SignalCheckpointer", "TrainingInterrupted"]

logger = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after SIGINT / SIGTERM once the interrupted-state checkpoint is written."""


class PeriodicCheckpointer(HookBase):
    """Checkpoints every ``period`` iterations (keeping ``max_to_keep``) and writes
    ``model_final`` when training ends without an error."""

    def __init__(self, checkpointer: Checkpointer, period: int, *, max_to_keep: int = 0):
        self.checkpointer = checkpointer
        self._periodic = _PeriodicCheckpointer(checkpointer, period, max_to_keep=max_to_keep)

    def after_step(self):
        self._periodic.step(self.trainer.iter)

    def after_train(self):
        if self.trainer.exception is None:
            self.checkpointer.save("model_final", iteration=self.trainer.iter - 1)


class FailureCheckpointer(HookBase):
    """On ``NonFiniteLossError`` writes ``model_last_good.pth``: the state before the failing
    iteration's update (the update never happened), for inspection. Not a resume point."""

    def __init__(self, checkpointer: Checkpointer):
        self.checkpointer = checkpointer

    def after_train(self):
        if not isinstance(self.trainer.exception, NonFiniteLossError):
            return
        finite = all(torch.isfinite(p).all() for p in self.checkpointer.model.parameters())
        path = self.checkpointer.save("model_last_good", tag_last=False, iteration=self.trainer.iter)
        if path:
            note = "" if finite else " (warning: some parameters are already non-finite)"
            logger.error(f"Wrote the state before the non-finite loss to {path}{note}")


class SignalCheckpointer(HookBase):
    """SIGINT / SIGTERM: finish the current iteration, write a resumable checkpoint, then
    raise ``TrainingInterrupted``. A second signal interrupts at once. Main thread only."""

    def __init__(self, checkpointer: Checkpointer, signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM)):
        self.checkpointer = checkpointer
        self._signals = tuple(signals)
        self._old: Dict[int, Any] = {}
        self._received: Optional[int] = None

    def _handler(self, signum, frame):
        if self._received is not None:
            raise TrainingInterrupted(f"second signal {signal.Signals(signum).name}")
        self._received = signum
        logger.warning(f"Received {signal.Signals(signum).name}: checkpointing after this iteration")

    def before_train(self):
        self._received = None
        if threading.current_thread() is not threading.main_thread():
            return
        for s in self._signals:
            self._old[s] = signal.signal(s, self._handler)

    def after_step(self):
        if self._received is None:
            return
        name = signal.Signals(self._received).name
        it = self.trainer.iter
        self.checkpointer.save(f"model_{it:07d}", iteration=it)
        raise TrainingInterrupted(f"training interrupted by {name} after iteration {it}; resume with --resume")

    def after_train(self):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}
