"""Training-time metric storage (``EventStorage``) and the writers that publish it:
console line (``CommonMetricPrinter``), JSON lines (``JSONWriter``), TensorBoard
(``TensorboardXWriter``) and Weights & Biases (``WandbWriter``)."""

import datetime
import json
import logging
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from fvcore.common.history_buffer import HistoryBuffer

__all__ = [
    "EventStorage",
    "get_event_storage",
    "EventWriter",
    "CommonMetricPrinter",
    "JSONWriter",
    "TensorboardXWriter",
    "WandbWriter",
]

logger = logging.getLogger(__name__)

_CURRENT_STORAGE_STACK: List["EventStorage"] = []


def get_event_storage() -> "EventStorage":
    """The innermost ``EventStorage`` in use (``with EventStorage(): ...``)."""
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError("get_event_storage() must be called inside a 'with EventStorage(...)' context")
    return _CURRENT_STORAGE_STACK[-1]


class EventStorage:
    """Per-iteration scalar metrics with a full history per name.

    ``put_scalar(name, value, smoothing_hint)`` records ``value`` at the current ``iter``;
    the hint tells writers whether to show a windowed median (losses, times) or the raw
    latest value (learning rate, evaluation metrics).
    """

    def __init__(self, start_iter: int = 0):
        self._history: Dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: Dict[str, bool] = {}
        self._latest: Dict[str, Tuple[float, int]] = {}
        self._iter = start_iter
        self._current_prefix = ""

    def put_scalar(self, name: str, value: Any, smoothing_hint: bool = True, cur_iter: Optional[int] = None) -> None:
        """Record ``value`` (a number or a one-element tensor) under ``name``."""
        name = self._current_prefix + name
        cur_iter = self._iter if cur_iter is None else int(cur_iter)
        value = float(value.item() if isinstance(value, torch.Tensor) else value)
        self._history[name].update(value, cur_iter)
        self._latest[name] = (value, cur_iter)
        prev = self._smoothing_hints.get(name)
        if prev is not None and prev != smoothing_hint:
            logger.warning(f"scalar {name!r} was put with smoothing_hint={prev} before; keeping {prev}")
        else:
            self._smoothing_hints[name] = smoothing_hint

    def put_scalars(self, *, smoothing_hint: bool = True, cur_iter: Optional[int] = None, **kwargs: Any) -> None:
        """``put_scalar`` for every keyword argument."""
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint, cur_iter=cur_iter)

    def history(self, name: str) -> HistoryBuffer:
        """The ``HistoryBuffer`` of ``name`` (``KeyError`` naming it when absent)."""
        if name not in self._history:
            raise KeyError(f"no history for scalar {name!r}; known: {', '.join(sorted(self._history))}")
        return self._history[name]

    def histories(self) -> Dict[str, HistoryBuffer]:
        return dict(self._history)

    def latest(self) -> Dict[str, Tuple[float, int]]:
        """``{name: (latest value, iteration it was put at)}``."""
        return dict(self._latest)

    def latest_with_smoothing_hint(self, window_size: int = 20) -> Dict[str, Tuple[float, int]]:
        """Like ``latest`` but smoothed names give the median of their last ``window_size`` values."""
        out = {}
        for k, (v, it) in self._latest.items():
            out[k] = (self._history[k].median(window_size) if self._smoothing_hints[k] else v, it)
        return out

    def smoothing_hints(self) -> Dict[str, bool]:
        return dict(self._smoothing_hints)

    def step(self) -> None:
        """Advance the iteration counter by one."""
        self._iter += 1

    @property
    def iter(self) -> int:
        return self._iter

    @iter.setter
    def iter(self, val: int) -> None:
        self._iter = int(val)

    @contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        """Prefix every scalar put inside the block with ``name/``."""
        old = self._current_prefix
        self._current_prefix = old + name.rstrip("/") + "/"
        try:
            yield
        finally:
            self._current_prefix = old

    def __enter__(self) -> "EventStorage":
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc) -> None:
        assert _CURRENT_STORAGE_STACK[-1] is self
        _CURRENT_STORAGE_STACK.pop()


class EventWriter:
    """Base class: ``write()`` publishes what is new in the current storage; ``close()``."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _NewValuesMixin:
    """Tracks, per scalar name, the last iteration already written, so a value put later at
    an iteration that was already written (e.g. the final evaluation) is still written."""

    def _init_new_values(self, window_size: int) -> None:
        self._window_size = window_size
        self._last_written: Dict[str, int] = {}

    def _new_values(self, storage: EventStorage) -> Dict[int, Dict[str, float]]:
        by_iter: Dict[int, Dict[str, float]] = defaultdict(dict)
        for k, (v, it) in storage.latest_with_smoothing_hint(self._window_size).items():
            if it <= self._last_written.get(k, -1):
                continue
            by_iter[it][k] = v
            self._last_written[k] = it
        return dict(sorted(by_iter.items()))


class JSONWriter(_NewValuesMixin, EventWriter):
    """Appends one JSON object per iteration (``{"iteration": i, name: value, ...}``) to
    ``json_file``; every scalar is written, evaluation metrics included."""

    def __init__(self, json_file: str, window_size: int = 20):
        os.makedirs(os.path.dirname(os.path.abspath(json_file)), exist_ok=True)
        self._file = open(json_file, "a")
        self._init_new_values(window_size)

    def write(self) -> None:
        for it, scalars in self._new_values(get_event_storage()).items():
            self._file.write(json.dumps({"iteration": it, **scalars}, sort_keys=True) + "\n")
        self._file.flush()
        try:
            os.fsync(self._file.fileno())
        except OSError:  # not every file system supports fsync; the flush is enough there
            pass

    def close(self) -> None:
        self._file.close()


class TensorboardXWriter(_NewValuesMixin, EventWriter):
    """Scalars to TensorBoard event files in ``log_dir`` (``torch.utils.tensorboard``).
    When tensorboard is not installed the writer does nothing (one info line)."""

    def __init__(self, log_dir: str, window_size: int = 20, **kwargs: Any):
        self._init_new_values(window_size)
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (optional dependency)
        except ImportError:
            logger.info("tensorboard is not installed; TensorBoard writer disabled")
            self._writer = None
            return
        self._writer = SummaryWriter(log_dir, **kwargs)

    def write(self) -> None:
        if self._writer is None:
            return
        for it, scalars in self._new_values(get_event_storage()).items():
            for k, v in scalars.items():
                self._writer.add_scalar(k, v, it)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class WandbWriter(_NewValuesMixin, EventWriter):
    """Scalars to Weights & Biases. ``mode`` is wandb's ("online", "offline", "disabled");
    when wandb is not importable the writer does nothing (one info line)."""

    def __init__(
        self,
        *,
        project: str,
        mode: str = "offline",
        output_dir: str = ".",
        config: Optional[Dict[str, Any]] = None,
        window_size: int = 20,
    ):
        self._init_new_values(window_size)
        self._run = None
        try:
            import wandb  # noqa: PLC0415 (optional dependency)
        except ImportError:
            logger.info("wandb is not installed; W&B writer disabled")
            return
        self._run = wandb.init(project=project, mode=mode, dir=output_dir, config=config or {})

    def write(self) -> None:
        if self._run is None:
            return
        for it, scalars in self._new_values(get_event_storage()).items():
            self._run.log(scalars, step=it)

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()


# Criterion metrics printed on the console line after the losses (DETR prints class_error).
_CONSOLE_METRICS = ("class_error",)


class CommonMetricPrinter(EventWriter):
    """Logs one console line: ETA, iter/max_iter, core_loss, every other loss key,
    ``class_error`` (Mask2Former's ``SetCriterion``), time, data_time, lr, and peak CUDA
    memory when on a GPU.

    train_prefix: the prefix the trainer puts before loss keys (``WRITERS.TRAIN_PREFIX``, e.g.
    "train/"); the line shows those keys without it (and without the ``total_loss`` copy).
    """

    def __init__(self, max_iter: int, window_size: int = 20, *, train_prefix: str = ""):
        self._max_iter = max_iter
        self._window_size = window_size
        self._prefix = train_prefix
        self._last_write: Optional[Tuple[int, float]] = None
        self._last_printed = -1

    def _eta(self, storage: EventStorage) -> Optional[str]:
        iteration = storage.iter
        remaining = self._max_iter - iteration - 1
        try:
            eta_s = storage.history("time").median(1000) * remaining
            storage.put_scalar("eta_seconds", eta_s, smoothing_hint=False)
        except KeyError:
            # no timer hook: estimate from the wall time between two writes
            now = time.perf_counter()
            eta_s = None
            if self._last_write is not None and iteration > self._last_write[0]:
                eta_s = (now - self._last_write[1]) / (iteration - self._last_write[0]) * remaining
            self._last_write = (iteration, now)
            if eta_s is None:
                return None
        return str(datetime.timedelta(seconds=int(eta_s)))

    def write(self) -> None:
        storage = get_event_storage()
        iteration = storage.iter
        if iteration == self._last_printed:  # e.g. the final write after the last periodic one
            return
        self._last_printed = iteration
        hist = storage.histories()

        def med(name: str) -> Optional[float]:
            return hist[name].median(self._window_size) if name in hist else None

        parts = []
        eta = self._eta(storage)
        if eta:
            parts.append(f"eta: {eta}")
        parts.append(f"iter: {iteration + 1}/{self._max_iter}")
        latest = storage.latest()
        p = self._prefix
        loss_keys = [
            k
            for k in hist
            if k.startswith(p)
            and "loss" in k[len(p) :]
            and "/" not in k[len(p) :]
            and latest[k][1] == iteration
            and not (p and k == p + "total_loss")
        ]
        loss_keys.sort(key=lambda k: (k != p + "core_loss", k))
        parts += [f"{k[len(p) :]}: {med(k):.4g}" for k in loss_keys]
        # metrics a criterion returns beside its losses that DETR-style logs show on this line
        parts += [
            f"{name}: {med(p + name):.4g}"
            for name in _CONSOLE_METRICS
            if p + name in hist and latest[p + name][1] == iteration
        ]
        for name in ("time", "data_time"):
            if name in hist:
                parts.append(f"{name}: {med(name):.4f}")
        if "lr" in hist:
            parts.append(f"lr: {hist['lr'].latest():.5g}")
        if torch.cuda.is_available():
            parts.append(f"max_mem: {torch.cuda.max_memory_allocated() / 1024.0 / 1024.0:.0f}M")
        logger.info("  ".join(parts))
