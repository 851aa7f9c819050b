"""Hooks every run has: plain-function callbacks, the iteration timer, the LR schedule, the event writers."""

import datetime
import logging
import time
import warnings
from typing import List, Optional

import torch

from segtrain.utils.events import EventWriter

from ..train_loop import HookBase

__all__ = ["CallbackHook", "IterationTimer", "LRScheduler", "PeriodicWriter"]

logger = logging.getLogger(__name__)


class CallbackHook(HookBase):
    """A hook from plain functions ``f(trainer)`` (for tests and one-off additions)."""

    def __init__(self, *, before_train=None, after_train=None, before_step=None, after_step=None):
        self._fns = dict(
            before_train=before_train, after_train=after_train, before_step=before_step, after_step=after_step
        )

    def _call(self, name: str) -> None:
        if self._fns[name] is not None:
            self._fns[name](self.trainer)

    def before_train(self):
        self._call("before_train")

    def after_train(self):
        self._call("after_train")

    def before_step(self):
        self._call("before_step")

    def after_step(self):
        self._call("after_step")


class IterationTimer(HookBase):
    """Puts each iteration's wall time as ``time``; logs the total at the end. The first
    ``warmup_iter`` iterations are left out of the reported per-iteration average."""

    def __init__(self, warmup_iter: int = 3):
        self._warmup_iter = warmup_iter
        self._step_start = 0.0
        self._train_start = 0.0
        self._timed = 0.0
        self._timed_iters = 0

    def before_train(self):
        self._train_start = time.perf_counter()

    def before_step(self):
        self._step_start = time.perf_counter()

    def after_step(self):
        seconds = time.perf_counter() - self._step_start
        self.trainer.storage.put_scalar("time", seconds)
        if self.trainer.iter - self.trainer.start_iter >= self._warmup_iter:
            self._timed += seconds
            self._timed_iters += 1

    def after_train(self):
        total = time.perf_counter() - self._train_start
        msg = f"Total training time: {datetime.timedelta(seconds=int(total))}"
        if self._timed_iters:
            msg += f" ({self._timed / self._timed_iters:.4f} s / it over {self._timed_iters} iterations)"
        logger.info(msg)


class LRScheduler(HookBase):
    """Puts the learning rate used by each iteration as ``lr``, then steps the scheduler.
    The logged group is the one with the largest LR (the head when a backbone multiplier < 1)."""

    def __init__(self, optimizer: Optional[torch.optim.Optimizer] = None, scheduler=None):
        self._optimizer = optimizer
        self._scheduler = scheduler

    def before_train(self):
        self._optimizer = self._optimizer or self.trainer.optimizer
        self._scheduler = self._scheduler or self.trainer.scheduler
        groups = self._optimizer.param_groups
        self._group = max(range(len(groups)), key=lambda i: (groups[i]["lr"], len(groups[i]["params"])))

    def after_step(self):
        self.trainer.storage.put_scalar("lr", self._optimizer.param_groups[self._group]["lr"], smoothing_hint=False)
        with warnings.catch_warnings():
            # with gradient accumulation (or a skipped AMP step) the optimizer legitimately
            # does not step every iteration
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
            self._scheduler.step()


class PeriodicWriter(HookBase):
    """Calls every writer's ``write()`` every ``period`` iterations and at the end, then closes them."""

    def __init__(self, writers: List[EventWriter], period: int = 20):
        self._writers = writers
        self._period = max(int(period), 1)

    def after_step(self):
        it = self.trainer.iter
        if (it + 1) % self._period == 0 or it == self.trainer.max_iter - 1:
            for w in self._writers:
                w.write()

    def after_train(self):
        for w in self._writers:
            # the last iterations (and the final evaluation) may not be written yet
            w.write()
            w.close()
