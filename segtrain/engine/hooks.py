"""Training hooks: one small class per side concern (timing, LR, checkpoints, evaluation,
best checkpoint, early stopping, writers, signals, failure checkpoint)."""
import datetime
import logging
import math
import signal
import threading
import time
import warnings
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch

from segtrain.checkpoint import Checkpointer
from segtrain.checkpoint import PeriodicCheckpointer as _PeriodicCheckpointer
from segtrain.utils import comm
from segtrain.utils.errors import ConfigError, NonFiniteLossError
from segtrain.utils.events import EventWriter

from .train_loop import HookBase

__all__ = [
    "CallbackHook",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "EvalHook",
    "BestCheckpointer",
    "EarlyStopping",
    "PeriodicWriter",
    "SignalCheckpointer",
    "FailureCheckpointer",
    "TrainingInterrupted",
]

logger = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after SIGINT / SIGTERM once the interrupted-state checkpoint is written."""


class CallbackHook(HookBase):
    """A hook from plain functions ``f(trainer)`` (for tests and one-off additions)."""

    def __init__(self, *, before_train=None, after_train=None, before_step=None, after_step=None):
        self._fns = dict(before_train=before_train, after_train=after_train, before_step=before_step,
                         after_step=after_step)

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
        raise TrainingInterrupted(f"training interrupted by {name} after iteration {it}; "
                                  f"resume with --resume")

    def after_train(self):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}


class EvalHook(HookBase):
    """Runs ``eval_function() -> nested results dict`` every ``eval_period`` iterations and at
    the end; the results go into the event storage flattened (``"segm/AP"``)."""

    def __init__(self, eval_period: int, eval_function: Callable[[], Mapping], *, eval_after_train: bool = True):
        self._period = eval_period
        self._func = eval_function
        self._eval_after_train = eval_after_train

    def _do_eval(self):
        results = self._func()
        if results:
            flat = {}
            for k, v in _flatten(results).items():
                try:
                    flat[k] = float(v)
                except (TypeError, ValueError):
                    logger.warning(f"evaluation metric {k}={v!r} is not a number; not logged")
            if comm.is_main_process():
                self.trainer.storage.put_scalars(**flat, smoothing_hint=False)
        # every process waits for the evaluation before training goes on
        comm.synchronize()

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if self._period > 0 and next_iter % self._period == 0 and next_iter != self.trainer.max_iter:
            self._do_eval()

    def after_train(self):
        # only when all iterations ran: after an error or early stop there is nothing new to evaluate
        if self._eval_after_train and self.trainer.exception is None and self.trainer.iter >= self.trainer.max_iter:
            self._do_eval()
        del self._func  # the closure holds the trainer and loaders


def _flatten(results: Mapping, prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in results.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


class _MetricWatcher(HookBase):
    """Calls ``_on_new_value(value, iteration)`` once for each new value of ``metric`` that
    the evaluation hook (registered before this one) puts into the storage."""

    def __init__(self, metric: str, mode: str, config_key: str):
        if mode not in ("max", "min"):
            raise ConfigError(f"{config_key}.MODE must be 'max' or 'min', got {mode!r}")
        self.metric = metric
        self.mode = mode
        self.best: Optional[float] = None
        self.best_iter: Optional[int] = None
        self._seen_iter = -1
        self._warned = False

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def _check(self):
        latest = self.trainer.storage.latest()
        if self.metric not in latest:
            if not self._warned and any("/" in k for k in latest):  # an evaluation ran without the metric
                logger.warning(f"metric {self.metric!r} not found in evaluation results "
                               f"({', '.join(k for k in latest if '/' in k)})")
                self._warned = True
            return
        value, it = latest[self.metric]
        if it <= self._seen_iter:
            return
        self._seen_iter = it
        if math.isnan(value):
            logger.warning(f"{self.metric} is NaN at iteration {it}; ignored")
            return
        self._on_new_value(value, it)

    def _on_new_value(self, value: float, iteration: int) -> None:
        raise NotImplementedError

    def after_step(self):
        self._check()

    def after_train(self):
        self._check()

    def state_dict(self):
        return {"best": self.best, "best_iter": self.best_iter, "seen_iter": self._seen_iter}

    def load_state_dict(self, state):
        self.best, self.best_iter, self._seen_iter = state["best"], state["best_iter"], state["seen_iter"]


class BestCheckpointer(_MetricWatcher):
    """Saves ``model_best.pth`` whenever ``metric`` improves (``mode`` "max" or "min")."""

    def __init__(self, checkpointer: Checkpointer, metric: str, mode: str = "max", *, file_prefix: str = "model_best"):
        super().__init__(metric, mode, "TEST.BEST_CHECKPOINT")
        self.checkpointer = checkpointer
        self.file_prefix = file_prefix

    def _on_new_value(self, value, iteration):
        if not self._improved(value):
            logger.info(f"{self.metric}={value:.4f} at iteration {iteration}; best stays "
                        f"{self.best:.4f} (iteration {self.best_iter})")
            return
        prev = self.best
        self.best, self.best_iter = value, iteration
        self.checkpointer.save(self.file_prefix, tag_last=False, iteration=iteration, best_metric={self.metric: value})
        logger.info(f"New best {self.metric}={value:.4f} at iteration {iteration} (previous {prev}); "
                    f"saved {self.file_prefix}.pth")


class EarlyStopping(_MetricWatcher):
    """Stops training when ``metric`` has not improved for ``patience`` evaluations."""

    def __init__(self, metric: str, mode: str = "max", patience: int = 3):
        super().__init__(metric, mode, "TEST.EARLY_STOP")
        if patience < 1:
            raise ConfigError(f"TEST.EARLY_STOP.PATIENCE must be >= 1 to stop early, got {patience}")
        self.patience = patience
        self.num_bad = 0

    def _on_new_value(self, value, iteration):
        if self._improved(value):
            self.best, self.best_iter, self.num_bad = value, iteration, 0
            return
        self.num_bad += 1
        if self.num_bad >= self.patience:
            self.trainer.request_stop(f"early stopping: {self.metric} did not improve for {self.num_bad} "
                                      f"evaluations (best {self.best:.4f} at iteration {self.best_iter})")

    def state_dict(self):
        return {**super().state_dict(), "num_bad": self.num_bad}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.num_bad = state["num_bad"]


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
