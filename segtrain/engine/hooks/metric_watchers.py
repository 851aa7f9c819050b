"""Hooks that act on each new value of an evaluation metric: best checkpoint and early stopping."""

import logging
import math
from typing import Optional

from segtrain.checkpoint import Checkpointer
from segtrain.utils.errors import ConfigError

from ..train_loop import HookBase

__all__ = ["BestCheckpointer", "EarlyStopping"]

logger = logging.getLogger(__name__)


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
            # evaluation results are put unsmoothed; smoothed "train/..." losses are not results
            hints = self.trainer.storage.smoothing_hints()
            results = [k for k in latest if "/" in k and not hints.get(k, True)]
            if not self._warned and results:  # an evaluation ran without the metric
                logger.warning(f"metric {self.metric!r} not found in evaluation results ({', '.join(results)})")
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
            logger.info(
                f"{self.metric}={value:.4f} at iteration {iteration}; best stays "
                f"{self.best:.4f} (iteration {self.best_iter})"
            )
            return
        prev = self.best
        self.best, self.best_iter = value, iteration
        self.checkpointer.save(self.file_prefix, tag_last=False, iteration=iteration, best_metric={self.metric: value})
        logger.info(
            f"New best {self.metric}={value:.4f} at iteration {iteration} (previous {prev}); "
            f"saved {self.file_prefix}.pth"
        )


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
            self.trainer.request_stop(
                f"early stopping: {self.metric} did not improve for {self.num_bad} "
                f"evaluations (best {self.best:.4f} at iteration {self.best_iter})"
            )

    def state_dict(self):
        return {**super().state_dict(), "num_bad": self.num_bad}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.num_bad = state["num_bad"]
