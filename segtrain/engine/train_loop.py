"""The training loop: ``HookBase``, ``TrainerBase``, ``SimpleTrainer`` and ``AMPTrainer``.

``SimpleTrainer.run_step`` is fetch -> forward -> backward -> (every ``accum_iter``
iterations) clip -> read the losses -> check -> optimizer step. It back-propagates
``loss_dict[CORE_LOSS_KEY]`` only; the other keys are logged. Everything else (LR schedule,
checkpoints, evaluation, writers) lives in hooks.

One host-device synchronisation per step: the losses (and the gradient norm) are stacked
into one device tensor after the forward, averaged over processes with one collective, and
copied to the host once, after the backward and the clipping were queued. The non-finite
check reads that host copy, before the optimizer step, so a non-finite loss still stops
training before any parameter changes.
"""

import logging
import math
import time
import weakref
from contextlib import nullcontext
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import torch
from torch import nn

from segtrain.modeling.criterion.build import CORE_LOSS_KEY
from segtrain.utils import comm
from segtrain.utils.env import get_rng_state, set_rng_state
from segtrain.utils.errors import ConfigError, NonFiniteLossError
from segtrain.utils.events import EventStorage, get_event_storage

from .loss_staging import HostLosses, StagedLosses

__all__ = ["HookBase", "TrainerBase", "SimpleTrainer", "AMPTrainer"]

logger = logging.getLogger(__name__)


class HookBase:
    """Base class of training hooks. ``self.trainer`` is a weak proxy set by
    ``TrainerBase.register_hooks``. A hook with state returns it from ``state_dict``; it is
    saved in the trainer's checkpoint state and restored on resume."""

    trainer: "TrainerBase" = None

    def before_train(self) -> None:
        pass

    def after_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_backward(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        pass


class TrainerBase:
    """An iteration counter that calls its hooks around ``run_step``.

    ``iter``: the current iteration (after ``train`` returns: one past the last one run).
    ``exception``: the exception that ended training, or None (read by hooks in ``after_train``).
    ``request_stop(reason)``: end training after the current step (early stopping, signals).
    """

    def __init__(self) -> None:
        self._hooks: List[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.storage: Optional[EventStorage] = None
        self.exception: Optional[BaseException] = None
        self._stop_reason: Optional[str] = None

    def register_hooks(self, hooks: Iterable[Optional[HookBase]]) -> None:
        """Append hooks (None entries are skipped); they run in registration order."""
        hooks = [h for h in hooks if h is not None]
        for h in hooks:
            assert isinstance(h, HookBase), f"{type(h).__name__} is not a HookBase"
            # a weak proxy: the trainer owns its hooks, not the other way round
            h.trainer = weakref.proxy(self)
        self._hooks.extend(hooks)

    def request_stop(self, reason: str) -> None:
        self._stop_reason = reason

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter .. max_iter - 1`` (fewer if a hook requests a stop)."""
        logger.info(f"Starting training from iteration {start_iter}")
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        self.exception = None
        self._stop_reason = None
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    if self._stop_reason is not None:
                        logger.info(f"Stopping at iteration {self.iter}: {self._stop_reason}")
                        break
                if max_iter > start_iter:
                    self.iter += 1
            except BaseException as e:
                self.exception = e
                if isinstance(e, Exception):
                    logger.error(f"Training stopped at iteration {self.iter} by {type(e).__name__}: {e}")
                raise
            finally:
                self.after_train()

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        for h in self._hooks:
            h.after_train()

    def before_step(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.before_step()

    def after_backward(self) -> None:
        for h in self._hooks:
            h.after_backward()

    def after_step(self) -> None:
        for h in self._hooks:
            h.after_step()

    def run_step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> Dict[str, Any]:
        """``{"iteration": iter, "hooks": {hook class name: state}}``."""
        hooks = {}
        for h in self._hooks:
            s = h.state_dict()
            if s:
                name = type(h).__qualname__
                if name in hooks:
                    logger.warning(f"two hooks named {name} have state; only the first is checkpointed")
                    continue
                hooks[name] = s
        return {"iteration": self.iter, "hooks": hooks}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.iter = state["iteration"]
        for name, s in state.get("hooks", {}).items():
            matches = [h for h in self._hooks if type(h).__qualname__ == name]
            if matches:
                matches[0].load_state_dict(s)
            else:
                logger.warning(f"checkpoint has state for hook {name!r}, which is not registered; ignored")


class SimpleTrainer(TrainerBase):
    """Fetch a batch, ``loss_dict = model(batch)``, back-propagate ``loss_dict["core_loss"]``.

    model: in training mode; returns a dict of scalar losses with ``CORE_LOSS_KEY`` (may be
    wrapped in DistributedDataParallel). data_loader: an iterable of batches; if it has
    ``state_dict`` / ``load_state_dict`` its position is checkpointed. grad_clipper:
    ``clip(params) -> norm or None`` called right before ``optimizer.step``. accum_iter: the
    loss is scaled by ``1 / accum_iter`` and the optimizer steps after iterations
    ``accum_iter - 1, 2 * accum_iter - 1, ...`` (and after the last one).
    metric_prefix: put in front of every loss key in the event storage (``WRITERS.TRAIN_PREFIX``);
    "" keeps the model's keys, e.g. "train/" logs ``train/loss_ce`` ... and ``train/total_loss``
    (the ``core_loss``). ``time``, ``data_time``, ``lr`` and ``grad_norm`` are never prefixed.
    A ``NonFiniteLossError`` raised inside the model (e.g. by a matcher's cost check) is re-raised
    with `` (at iteration N)`` added to its one-line message.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        grad_clipper: Optional[Callable] = None,
        accum_iter: int = 1,
        *,
        metric_prefix: str = "",
    ):
        super().__init__()
        if accum_iter < 1:
            raise ConfigError(f"SOLVER.ACCUM_ITER must be >= 1, got {accum_iter}")
        model.train()
        self.model = model
        self.data_loader = data_loader
        self.optimizer = optimizer
        self.grad_clipper = grad_clipper
        self.accum_iter = int(accum_iter)
        self.metric_prefix = metric_prefix
        self._data_loader_iter_obj = None
        self._zeroed = False

    @property
    def _data_loader_iter(self):
        # created lazily so that a resumed loader state is loaded before iteration starts
        if self._data_loader_iter_obj is None:
            self._data_loader_iter_obj = iter(self.data_loader)
        return self._data_loader_iter_obj

    def _is_boundary(self) -> bool:
        return (self.iter + 1) % self.accum_iter == 0 or self.iter + 1 >= self.max_iter

    def run_step(self) -> None:
        assert self.model.training, "[SimpleTrainer] the model was switched to eval mode"
        if not self._zeroed:
            self.optimizer.zero_grad(set_to_none=True)
            self._zeroed = True
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        boundary = self._is_boundary()
        # skip the DDP gradient all-reduce on micro-steps that do not update
        sync = nullcontext() if boundary or not hasattr(self.model, "no_sync") else self.model.no_sync()
        with sync:
            try:
                loss_dict = self._forward(data)
            except NonFiniteLossError as e:
                # raised inside the model (e.g. by a matcher), which does not know the iteration
                e.args = (f"{e} (at iteration {self.iter})", *e.args[1:])
                raise
            staged = self._stage_losses(loss_dict, data_time)
            self._backward(staged.core / self.accum_iter)
        self.after_backward()
        grad_norm = self._prepare_step() if boundary else None
        host = staged.read(grad_norm)  # the step's one device -> host read
        self._raise_if_non_finite(staged, host)  # before the optimizer changes anything
        self._write_metrics(staged, host)
        if boundary:
            self._apply_step()
            self.optimizer.zero_grad(set_to_none=True)

    def _forward(self, data: Any) -> Dict[str, torch.Tensor]:
        return self.model(data)

    def _backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def _clip(self) -> Optional[torch.Tensor]:
        if self.grad_clipper is None:
            return None
        return self.grad_clipper([p for g in self.optimizer.param_groups for p in g["params"]])

    def _prepare_step(self) -> Optional[torch.Tensor]:
        """Everything of the optimizer step before parameters change (clipping); returns the
        gradient norm (a tensor, not read here) or None."""
        return self._clip()

    def _apply_step(self) -> None:
        self.optimizer.step()

    def _stage_losses(self, loss_dict: Mapping[str, Any], data_time: float) -> StagedLosses:
        """Check that ``loss_dict`` has the core loss and stack every value, detached, into one
        device tensor (averaged over processes with one collective); nothing is read yet."""
        if not isinstance(loss_dict, Mapping) or CORE_LOSS_KEY not in loss_dict:
            keys = sorted(loss_dict) if isinstance(loss_dict, Mapping) else type(loss_dict).__name__
            raise ConfigError(
                f"model {type(self.model).__name__} returned no {CORE_LOSS_KEY!r} in training "
                f"(got {keys}); its criterion must return the total under {CORE_LOSS_KEY!r}"
            )
        return StagedLosses(loss_dict, data_time)

    def _raise_if_non_finite(self, staged: StagedLosses, host: HostLosses) -> None:
        """Raise ``NonFiniteLossError`` naming the non-finite keys and the iteration when any
        loss is non-finite on any process (all processes stop together)."""
        if not host.any_bad:
            return
        names = staged.names
        bad = [f"{k}={v}" for k, v in zip(names, host.local) if not math.isfinite(v) and k != CORE_LOSS_KEY]
        core_val = host.local[names.index(CORE_LOSS_KEY)]
        if not bad and math.isfinite(core_val):
            detail = f"a loss on another process (rank {comm.get_rank()} is finite)"
        else:
            detail = ", ".join(bad) if bad else "(only the total)"
        raise NonFiniteLossError(f"non-finite loss at iteration {self.iter}: {detail} ({CORE_LOSS_KEY}={core_val})")

    def _write_metrics(self, staged: StagedLosses, host: HostLosses) -> None:
        """Losses and data time averaged over processes, and the gradient norm, put into the
        event storage (main process), from the host copy."""
        if not comm.is_main_process():
            return
        storage = get_event_storage()
        storage.put_scalar("data_time", host.data_time)
        losses = dict(zip(staged.names, host.mean))
        if self.metric_prefix:
            losses = {self.metric_prefix + k: v for k, v in losses.items()}
            losses[self.metric_prefix + "total_loss"] = losses[self.metric_prefix + CORE_LOSS_KEY]
        storage.put_scalars(**losses)
        if host.grad_norm is not None:
            storage.put_scalar("grad_norm", host.grad_norm)

    def state_dict(self) -> Dict[str, Any]:
        ret = super().state_dict()
        ret["rng"] = get_rng_state()
        if callable(getattr(self.data_loader, "state_dict", None)):
            ret["data_loader"] = self.data_loader.state_dict()
        return ret

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if "rng" in state:
            if comm.get_world_size() == 1:
                set_rng_state(state["rng"])
            else:
                logger.info("Not restoring the RNG state of rank 0 on every process; each rank keeps its seed")
        can_load = callable(getattr(self.data_loader, "load_state_dict", None))
        if "data_loader" in state and can_load:
            self.data_loader.load_state_dict(state["data_loader"])
            self._data_loader_iter_obj = None
            logger.info("Restored the training data loader position")
        elif can_load:
            logger.warning("checkpoint has no data loader state; the data order restarts from the beginning")
        else:
            logger.warning("the training data loader has no state_dict; the resumed data order is not exact")


def _autocast_dtype(dtype: str, device_type: str) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device_type == "cuda" else torch.bfloat16
    table = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise ConfigError(f"SOLVER.AMP.DTYPE: unknown dtype {dtype!r}; valid: auto, float16, bfloat16")
    return table[dtype]


class AMPTrainer(SimpleTrainer):
    """``SimpleTrainer`` with autocast: bf16 on CPU, fp16 with a ``GradScaler`` on CUDA
    (``dtype="auto"``). The scaler's state is part of ``state_dict``."""

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        grad_clipper: Optional[Callable] = None,
        accum_iter: int = 1,
        *,
        dtype: str = "auto",
        grad_scaler: Optional[torch.amp.GradScaler] = None,
        metric_prefix: str = "",
    ):
        super().__init__(model, data_loader, optimizer, grad_clipper, accum_iter, metric_prefix=metric_prefix)
        param = next(model.parameters())
        self.device_type = param.device.type
        self.dtype = _autocast_dtype(dtype, self.device_type)
        if grad_scaler is None and self.dtype == torch.float16:
            grad_scaler = torch.amp.GradScaler(self.device_type)
        self.grad_scaler = grad_scaler
        logger.info(
            f"AMP: autocast {self.dtype} on {self.device_type}"
            + (" with GradScaler" if grad_scaler is not None else "")
        )

    def _forward(self, data: Any) -> Dict[str, torch.Tensor]:
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            return self.model(data)

    def _backward(self, loss: torch.Tensor) -> None:
        if self.grad_scaler is None:
            loss.backward()
        else:
            self.grad_scaler.scale(loss).backward()

    def _prepare_step(self) -> Optional[torch.Tensor]:
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
        return self._clip()

    def _apply_step(self) -> None:
        if self.grad_scaler is None:
            return super()._apply_step()
        # (GradScaler.step reads its inf/NaN flag on the host: torch's own synchronisation)
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def state_dict(self) -> Dict[str, Any]:
        ret = super().state_dict()
        if self.grad_scaler is not None:
            ret["grad_scaler"] = self.grad_scaler.state_dict()
        return ret

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        if self.grad_scaler is not None and "grad_scaler" in state:
            self.grad_scaler.load_state_dict(state["grad_scaler"])
