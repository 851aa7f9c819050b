"""Evaluation hooks: periodic evaluation of the model, and the loss on a fixed validation loader."""

import logging
import re
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Dict, Iterator, Mapping, Optional

import torch
from torch import nn

from segtrain.checkpoint import unwrap_model
from segtrain.evaluation.evaluator import flatten_results_dict
from segtrain.modeling.criterion.build import CORE_LOSS_KEY
from segtrain.utils import comm
from segtrain.utils.env import seeded_rng, validation_pass
from segtrain.utils.errors import ConfigError

from ..train_loop import HookBase
from ._lazy import build_if_factory

__all__ = ["EvalHook", "ValidationLoss", "loss_mode"]

logger = logging.getLogger(__name__)


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
            for k, v in flatten_results_dict(results).items():
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


# Layers whose training-mode behaviour is random or updates state. The validation loss runs
# them in eval mode: norms with running statistics use them (and do not update them), dropout is off.
_EVAL_MODE_LAYERS = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd, nn.MultiheadAttention)


@contextmanager
def loss_mode(model: nn.Module) -> Iterator[None]:
    """The model in training mode (so that it returns its loss dict) except for BN-like and
    dropout layers, which are in eval mode; every module's mode is restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.train()
    for m in model.modules():
        if isinstance(m, _EVAL_MODE_LAYERS):
            m.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class ValidationLoss(HookBase):
    """Every ``period`` iterations (0: only after the last one) the mean of every loss the
    model returns on a fixed validation loader, put into the storage as ``<prefix><key>``
    and ``<prefix>total_loss`` (the ``core_loss``); ``prefix`` defaults to ``"val/"``.

    The model runs under ``torch.no_grad`` in training mode (so that it returns losses) with
    BN-like layers in eval mode (running statistics, not updated) and dropout off (``loss_mode``),
    and with the python / numpy / torch RNGs seeded with ``seed`` for the pass and restored after
    (``seeded_rng``: random point sampling in the criterion draws the same points every time, and
    the training streams do not move, so an exact resume stays exact). The value is thus a
    deterministic function of the weights, and training is not disturbed. The pass runs under
    ``validation_pass()``, so a model that draws random training inputs (SAM 2's prompts) can
    use its evaluation settings instead.

    data_loader: a re-iterable loader, or a function returning one (built on first use);
    each batch is a list of model-input dicts that carry training targets (e.g. ``instances``)
    and are not randomly augmented (``InstanceDatasetMapper(is_train=False)`` keeps the
    annotations). num_batches: batches per process per pass (<= 0: all). Each batch's losses
    are weighted by its number of inputs; sums and counts are gathered from every process
    through ``comm``. autocast_dtype: run the forward under autocast (as ``AMPTrainer`` does).
    """

    def __init__(
        self,
        period: int,
        data_loader: Any,
        *,
        model: Optional[nn.Module] = None,
        num_batches: int = 0,
        prefix: str = "val/",
        seed: int = 0,
        autocast_dtype: Optional[torch.dtype] = None,
    ):
        self._period = int(period)
        self._loader_or_factory = data_loader
        self._loader = None
        self._model = model
        self._num_batches = int(num_batches)
        self._prefix = prefix
        self._seed = int(seed)
        self._dtype = autocast_dtype
        self._num_inputs = 0
        self.latest: Dict[str, float] = {}  # the last pass's means (for callers and tests)

    def _get_loader(self):
        if self._loader is None:
            self._loader = build_if_factory(self._loader_or_factory)
        return self._loader

    def compute(self) -> Dict[str, float]:
        """One pass; returns ``{key: mean}`` over every process (the same on every rank)."""
        # DDP's forward prepares a gradient reduction; the plain module needs none
        model = unwrap_model(self._model if self._model is not None else self.trainer.model)
        loader = self._get_loader()
        if callable(getattr(getattr(loader, "dataset", None), "reseed", None)):
            loader.dataset.reseed(self._seed)  # the mapper's numpy draws repeat every pass
        device_type = next(model.parameters()).device.type
        sums: Dict[str, float] = {}
        counts: Dict[str, int] = {}
        with seeded_rng(self._seed, cuda=True), torch.no_grad(), loss_mode(model), validation_pass():
            for idx, batch in enumerate(loader):
                if 0 < self._num_batches <= idx:
                    break
                ctx = torch.autocast(device_type=device_type, dtype=self._dtype) if self._dtype else nullcontext()
                with ctx:
                    loss_dict = model(batch)
                if not isinstance(loss_dict, Mapping) or CORE_LOSS_KEY not in loss_dict:
                    got = sorted(loss_dict) if isinstance(loss_dict, Mapping) else type(loss_dict).__name__
                    raise ConfigError(
                        f"validation loss: the model returned no {CORE_LOSS_KEY!r} in training mode "
                        f"(got {got}); do the validation batches carry training targets?"
                    )
                n = len(batch) if hasattr(batch, "__len__") else 1
                for k, v in loss_dict.items():
                    sums[k] = sums.get(k, 0.0) + float(torch.as_tensor(v).detach().float().sum()) * n
                    counts[k] = counts.get(k, 0) + n
        total_sums: Dict[str, float] = {}
        total_counts: Dict[str, int] = {}
        for rank_sums, rank_counts in comm.all_gather((sums, counts)):
            for k, v in rank_sums.items():
                total_sums[k] = total_sums.get(k, 0.0) + v
                total_counts[k] = total_counts.get(k, 0) + rank_counts[k]
        means = {k: total_sums[k] / total_counts[k] for k in sorted(total_sums)}
        if CORE_LOSS_KEY in means:
            means["total_loss"] = means[CORE_LOSS_KEY]
        self._num_inputs = max(total_counts.values(), default=0)
        return means

    def _do(self) -> None:
        start = time.perf_counter()
        means = self.compute()
        self.latest = means
        if not means:
            logger.warning("validation loss: the validation loader gave no batch")
            return
        if comm.is_main_process():
            self.trainer.storage.put_scalars(**{self._prefix + k: v for k, v in means.items()}, smoothing_hint=False)
            # the total and the last layer's components; aux copies (loss_ce_3) are in metrics.json
            keys = ["total_loss"] + [
                k for k in means if k not in ("total_loss", CORE_LOSS_KEY) and not re.search(r"_\d+$", k)
            ]
            shown = "  ".join(f"{k}: {means[k]:.4g}" for k in keys if k in means)
            logger.info(
                f"Validation loss at iteration {self.trainer.iter} over {self._num_inputs} inputs "
                f"({comm.get_world_size()} process(es), {time.perf_counter() - start:.1f} s): {shown}"
            )

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if (self._period > 0 and next_iter % self._period == 0) or next_iter == self.trainer.max_iter:
            self._do()
