"""Warmup + decay learning-rate schedules, stepped once per iteration.

Each is a ``torch.optim.lr_scheduler.LRScheduler`` whose rate is a closed form of the
iteration (``last_epoch``): ``lr(it) = base_lr * warmup(it) * decay(it)``, so ``state_dict``
round trips exactly and every param group keeps its own ``initial_lr`` (backbone multiplier).
"""

import logging
import math
from bisect import bisect_right
from typing import List, Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from segtrain.utils.errors import ConfigError
from segtrain.utils.registry import format_suggestions

__all__ = [
    "WarmupLRBase",
    "WarmupMultiStepLR",
    "WarmupCosineLR",
    "WarmupStepLR",
    "WarmupPolyLR",
    "InverseSquareRootLR",
    "LR_SCHEDULERS",
    "build_lr_scheduler",
    "describe_schedule",
]

logger = logging.getLogger(__name__)


def warmup_factor_at_iter(method: str, it: int, warmup_iters: int, warmup_factor: float) -> float:
    """Multiplier of the warmup phase: 1 once ``it >= warmup_iters``.
    "constant": ``warmup_factor``; "linear": ``warmup_factor`` at 0 rising linearly to 1."""
    if it >= warmup_iters:
        return 1.0
    if method == "constant":
        return warmup_factor
    if method == "linear":
        alpha = it / warmup_iters
        return warmup_factor * (1 - alpha) + alpha
    raise ConfigError(f"SOLVER.WARMUP_METHOD: unknown warmup method {method!r}; valid: constant, linear")


class WarmupLRBase(LRScheduler):
    """Base class: subclasses give ``_decay(it)``, the multiplier after warmup."""

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        warmup_factor: float = 0.001,
        warmup_iters: int = 0,
        warmup_method: str = "linear",
        last_epoch: int = -1,
    ):
        warmup_factor_at_iter(warmup_method, 0, 1, warmup_factor)  # validate the method early
        self.warmup_factor = warmup_factor
        self.warmup_iters = warmup_iters
        self.warmup_method = warmup_method
        super().__init__(optimizer, last_epoch)

    def _decay(self, it: int) -> float:
        raise NotImplementedError

    def _factor(self, it: int) -> float:
        return warmup_factor_at_iter(self.warmup_method, it, self.warmup_iters, self.warmup_factor) * self._decay(it)

    def get_lr(self) -> List[float]:
        f = self._factor(self.last_epoch)
        return [base_lr * f for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> List[float]:
        return self.get_lr()


class WarmupMultiStepLR(WarmupLRBase):
    """Multiply by ``gamma`` at each of ``milestones`` (iterations)."""

    def __init__(self, optimizer: Optimizer, milestones: Sequence[int], gamma: float = 0.1, **kwargs):
        if list(milestones) != sorted(milestones):
            raise ConfigError(f"SOLVER.STEPS must be increasing, got {list(milestones)}")
        self.milestones = list(milestones)
        self.gamma = gamma
        super().__init__(optimizer, **kwargs)

    def _decay(self, it: int) -> float:
        return self.gamma ** bisect_right(self.milestones, it)


class WarmupStepLR(WarmupLRBase):
    """Multiply by ``gamma`` every ``step_size`` iterations."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, **kwargs):
        if step_size <= 0:
            raise ConfigError(f"SOLVER.STEP_SIZE must be > 0, got {step_size}")
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, **kwargs)

    def _decay(self, it: int) -> float:
        return self.gamma ** (it // self.step_size)


class WarmupCosineLR(WarmupLRBase):
    """Half-cosine from 1 at iteration 0 to ``end_factor`` at ``max_iters``."""

    def __init__(self, optimizer: Optimizer, max_iters: int, end_factor: float = 0.0, **kwargs):
        self.max_iters = max_iters
        self.end_factor = end_factor
        super().__init__(optimizer, **kwargs)

    def _decay(self, it: int) -> float:
        t = min(it, self.max_iters) / max(self.max_iters, 1)
        return self.end_factor + (1 - self.end_factor) * 0.5 * (1.0 + math.cos(math.pi * t))


class WarmupPolyLR(WarmupLRBase):
    """``(1 - it / max_iters) ** power`` from 1 down to ``end_factor``."""

    def __init__(self, optimizer: Optimizer, max_iters: int, power: float = 0.9, end_factor: float = 0.0, **kwargs):
        self.max_iters = max_iters
        self.power = power
        self.end_factor = end_factor
        super().__init__(optimizer, **kwargs)

    def _decay(self, it: int) -> float:
        t = min(it, self.max_iters) / max(self.max_iters, 1)
        return self.end_factor + (1 - self.end_factor) * (1.0 - t) ** self.power


class InverseSquareRootLR(WarmupLRBase):
    """SAM 3's schedule: after the warm-up, ``1 / sqrt((it + timescale - warmup_iters) /
    timescale)``, times ``(max_iters - it) / cooldown_iters`` over the last ``cooldown_iters``.
    With the "linear" warm-up from ``warmup_factor`` 0 it equals the official
    ``InverseSquareRootParamScheduler`` at step ``it`` of ``max_iters``."""

    def __init__(self, optimizer: Optimizer, max_iters: int, timescale: float, cooldown_iters: int = 0, **kwargs):
        if timescale <= 0:
            raise ConfigError(f"SOLVER.INVERSE_SQRT_TIMESCALE must be > 0, got {timescale}")
        self.max_iters = max_iters
        self.timescale = timescale
        self.cooldown_iters = cooldown_iters
        super().__init__(optimizer, **kwargs)

    def _decay(self, it: int) -> float:
        decay = 1.0
        if it > self.warmup_iters:
            decay = 1.0 / math.sqrt((it + self.timescale - self.warmup_iters) / self.timescale)
        if self.cooldown_iters:
            decay *= min(1.0, (self.max_iters - it) / self.cooldown_iters)
        return decay


def _multistep(cfg, optimizer, **warmup):
    steps = [s for s in cfg.SOLVER.STEPS]
    return WarmupMultiStepLR(optimizer, steps, cfg.SOLVER.GAMMA, **warmup)


def _cosine(cfg, optimizer, **warmup):
    return WarmupCosineLR(optimizer, cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR_END_FACTOR, **warmup)


def _step(cfg, optimizer, **warmup):
    return WarmupStepLR(optimizer, cfg.SOLVER.STEP_SIZE, cfg.SOLVER.GAMMA, **warmup)


def _poly(cfg, optimizer, **warmup):
    return WarmupPolyLR(optimizer, cfg.SOLVER.MAX_ITER, cfg.SOLVER.POLY_POWER, cfg.SOLVER.BASE_LR_END_FACTOR, **warmup)


def _inverse_sqrt(cfg, optimizer, **warmup):
    s = cfg.SOLVER
    return InverseSquareRootLR(optimizer, s.MAX_ITER, s.INVERSE_SQRT_TIMESCALE, s.COOLDOWN_ITERS, **warmup)


# SOLVER.LR_SCHEDULER_NAME -> builder(cfg, optimizer, **warmup kwargs)
LR_SCHEDULERS = {
    "WarmupMultiStepLR": _multistep,
    "WarmupCosineLR": _cosine,
    "WarmupStepLR": _step,
    "WarmupPolyLR": _poly,
    "InverseSquareRootLR": _inverse_sqrt,
}


def build_lr_scheduler(cfg, optimizer: Optimizer) -> LRScheduler:
    """The schedule named by ``SOLVER.LR_SCHEDULER_NAME`` with the ``SOLVER.WARMUP_*`` warmup."""
    name = cfg.SOLVER.LR_SCHEDULER_NAME
    if name not in LR_SCHEDULERS:
        raise ConfigError(
            f"SOLVER.LR_SCHEDULER_NAME: unknown scheduler {name!r}.{format_suggestions(name, LR_SCHEDULERS)}"
            f" Valid: {', '.join(LR_SCHEDULERS)}"
        )
    warmup = dict(
        warmup_factor=cfg.SOLVER.WARMUP_FACTOR,
        warmup_iters=cfg.SOLVER.WARMUP_ITERS,
        warmup_method=cfg.SOLVER.WARMUP_METHOD,
    )
    scheduler = LR_SCHEDULERS[name](cfg, optimizer, **warmup)
    logger.info(describe_schedule(scheduler, cfg.SOLVER.MAX_ITER))
    cooldown = cfg.SOLVER.COOLDOWN_ITERS if name == "InverseSquareRootLR" else 0
    if cfg.SOLVER.WARMUP_ITERS + cooldown > cfg.SOLVER.MAX_ITER:
        logger.warning(
            f"SOLVER.WARMUP_ITERS {cfg.SOLVER.WARMUP_ITERS}"
            + (f" and SOLVER.COOLDOWN_ITERS {cooldown}" if cooldown else "")
            + f" take more than the run's SOLVER.MAX_ITER {cfg.SOLVER.MAX_ITER} iterations: the LR never reaches "
            "BASE_LR"
        )
    return scheduler


def describe_schedule(scheduler: WarmupLRBase, max_iter: int) -> str:
    """One line: the schedule, its warm-up and its LR multiplier at a few iterations."""
    last = max(max_iter - 1, 0)
    marks = sorted({0, min(scheduler.warmup_iters, last), max_iter // 4, max_iter // 2, (3 * max_iter) // 4, last})
    factors = ", ".join(f"{it}: {scheduler._factor(it):.4g}" for it in marks)
    return (
        f"LR schedule {type(scheduler).__name__} over {max_iter} iterations (warm-up {scheduler.warmup_method} "
        f"from {scheduler.warmup_factor:g} over {scheduler.warmup_iters}): each group's LR times, at iteration "
        f"{factors}"
    )
