"""Training hooks: one small class per side concern (timing, LR, checkpoints, evaluation,
validation loss, prediction images, best checkpoint, early stopping, writers, signals,
failure checkpoint)."""
import datetime
import logging
import math
import os
import random
import re
import signal
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from segtrain.checkpoint import Checkpointer
from segtrain.checkpoint import PeriodicCheckpointer as _PeriodicCheckpointer
from segtrain.checkpoint import unwrap_model
from segtrain.utils import comm
from segtrain.utils.errors import ConfigError, NonFiniteLossError
from segtrain.modeling.criterion.build import CORE_LOSS_KEY
from segtrain.utils.events import EventWriter

from .train_loop import HookBase
from segtrain.utils.visualizer import Visualizer
from segtrain.evaluation.evaluator import inference_context

__all__ = [
    "CallbackHook",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "EvalHook",
    "ValidationLoss",
    "VisualizationHook",
    "loss_mode",
    "render_predictions",
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


@contextmanager
def _isolated_rng(seed: int) -> Iterator[None]:
    """Seed the python / numpy / torch RNGs with ``seed`` for the block and restore the
    training streams after: an evaluation-time pass gives the same numbers every time and
    does not shift the training randomness (an exact resume stays exact)."""
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    cuda_state = torch.cuda.get_rng_state_all() if cuda else None
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)


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


def _lazy(obj: Any) -> Any:
    """``obj()`` when ``obj`` is a factory (a callable that is not itself the data), else ``obj``."""
    if callable(obj) and not isinstance(obj, (list, tuple)) and not hasattr(obj, "__iter__"):
        return obj()
    return obj


class ValidationLoss(HookBase):
    """Every ``period`` iterations (0: only after the last one) the mean of every loss the
    model returns on a fixed validation loader, put into the storage as ``<prefix><key>``
    and ``<prefix>total_loss`` (the ``core_loss``); ``prefix`` defaults to ``"val/"``.

    The model runs under ``torch.no_grad`` in training mode (so that it returns losses) with
    BN-like layers in eval mode (running statistics, not updated) and dropout off (``loss_mode``),
    and with the python / numpy / torch RNGs seeded with ``seed`` for the pass and restored after
    (random point sampling in the criterion draws the same points every time). The value is
    thus a deterministic function of the weights, and training is not disturbed.

    data_loader: a re-iterable loader, or a function returning one (built on first use);
    each batch is a list of model-input dicts that carry training targets (e.g. ``instances``)
    and are not randomly augmented (``InstanceDatasetMapper(is_train=False)`` keeps the
    annotations). num_batches: batches per process per pass (<= 0: all). Each batch's losses
    are weighted by its number of inputs; sums and counts are gathered from every process
    through ``comm``. autocast_dtype: run the forward under autocast (as ``AMPTrainer`` does).
    """

    def __init__(self, period: int, data_loader: Any, *, model: Optional[nn.Module] = None, num_batches: int = 0,
                 prefix: str = "val/", seed: int = 0, autocast_dtype: Optional[torch.dtype] = None):
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
            self._loader = _lazy(self._loader_or_factory)
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
        with _isolated_rng(self._seed), torch.no_grad(), loss_mode(model):
            for idx, batch in enumerate(loader):
                if 0 < self._num_batches <= idx:
                    break
                ctx = torch.autocast(device_type=device_type, dtype=self._dtype) if self._dtype else nullcontext()
                with ctx:
                    loss_dict = model(batch)
                if not isinstance(loss_dict, Mapping) or CORE_LOSS_KEY not in loss_dict:
                    got = sorted(loss_dict) if isinstance(loss_dict, Mapping) else type(loss_dict).__name__
                    raise ConfigError(f"validation loss: the model returned no {CORE_LOSS_KEY!r} in training mode "
                                      f"(got {got}); do the validation batches carry training targets?")
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
            keys = ["total_loss"] + [k for k in means if k not in ("total_loss", CORE_LOSS_KEY)
                                     and not re.search(r"_\d+$", k)]
            shown = "  ".join(f"{k}: {means[k]:.4g}" for k in keys if k in means)
            logger.info(f"Validation loss at iteration {self.trainer.iter} over {self._num_inputs} inputs "
                        f"({comm.get_world_size()} process(es), {time.perf_counter() - start:.1f} s): {shown}")

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if (self._period > 0 and next_iter % self._period == 0) or next_iter == self.trainer.max_iter:
            self._do()


def render_predictions(inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Mapping[str, Any]], *,
                       metadata: Any = None, score_threshold: float = 0.5, title: str = "prediction",
                       image_format: str = "RGB") -> Optional[np.ndarray]:
    """One row per input: ground truth (its ``instances``: ``gt_masks`` bool [N, H, W],
    ``gt_classes`` [N]) on the left, the prediction (``panoptic_seg``, else ``instances``, else
    ``sem_seg`` [K, H, W]) on the right, both on the input ``image`` (uint8 [3, H, W]). Returns RGB uint8
    [sum of H, 2 * max W, 3], or None when an output has neither."""
    import cv2

    rows = []
    for inp, out in zip(inputs, outputs):
        img = inp["image"].permute(1, 2, 0).cpu().numpy()
        if image_format == "BGR":
            img = img[:, :, ::-1]
        gt = Visualizer(img, metadata)
        inst = inp.get("instances")
        if inst is not None and len(inst) > 0 and inst.has("gt_masks"):
            classes = inst.gt_classes.tolist() if inst.has("gt_classes") else None
            gt.overlay_instances(masks=inst.gt_masks.cpu().numpy(), class_ids=classes,
                                 labels=[gt.class_name(c) for c in classes] if classes is not None else None)
        pred = Visualizer(img, metadata)
        if "panoptic_seg" in out:
            seg, info = out["panoptic_seg"]
            pred.draw_panoptic_seg(seg.cpu(), info or [])
        elif "instances" in out:
            pred.draw_instance_predictions(out["instances"].to("cpu"), score_threshold=score_threshold)
        elif "sem_seg" in out:
            pred.draw_sem_seg(out["sem_seg"].detach().float().cpu())
        else:
            return None
        panels = []
        for vis, text in ((gt, "ground truth"), (pred, title)):
            panel = vis.get_output()
            scale = min(0.4, panel.shape[1] / 400)  # the title fits small images too
            cv2.putText(panel, text, (3, 4 + int(25 * scale)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                        cv2.LINE_AA)
            panels.append(panel)
        rows.append(np.concatenate(panels, axis=1))
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, axis=0)


class VisualizationHook(HookBase):
    """Every ``period`` iterations (and after the last one) writes
    ``<output_dir>/iter_<iteration:07d>.png`` (``render_predictions``: ground truth | prediction,
    one row per input) for a few fixed validation inputs. Main process only; the model runs in
    eval mode under ``torch.no_grad`` and gets its training mode back after.

    inputs: a list of model-input dicts (test-mapper outputs), or a function returning one
    (called on first use). metadata: for class names and colours.
    """

    def __init__(self, period: int, inputs: Any, output_dir: str, *, model: Optional[nn.Module] = None,
                 metadata: Any = None, score_threshold: float = 0.5, image_format: str = "RGB"):
        self._period = int(period)
        self._inputs_or_factory = inputs
        self._inputs: Optional[List[Dict[str, Any]]] = None
        self._output_dir = output_dir
        self._model = model
        self._metadata = metadata
        self._threshold = float(score_threshold)
        self._format = image_format
        self._warned = False

    def _model_inputs(self) -> List[Dict[str, Any]]:
        if self._inputs is None:
            self._inputs = list(_lazy(self._inputs_or_factory))
        # predictions at the size of the drawn (mapped) image, not the original one
        return [{**{k: v for k, v in d.items() if k != "instances"},
                 "height": int(d["image"].shape[-2]), "width": int(d["image"].shape[-1])} for d in self._inputs]

    def write(self) -> Optional[str]:
        """Render and write the PNG of the current iteration; returns its path (None when skipped)."""
        model = unwrap_model(self._model if self._model is not None else self.trainer.model)
        inputs = self._model_inputs()
        if not inputs:
            return None
        it = self.trainer.iter
        with _isolated_rng(0), inference_context(model), torch.no_grad():
            outputs = [model([x])[0] for x in inputs]
        grid = render_predictions(self._inputs, outputs, metadata=self._metadata, score_threshold=self._threshold,
                                  title=f"prediction, iteration {it}", image_format=self._format)
        if grid is None:
            if not self._warned:
                logger.warning(f"visualization: the model's outputs have no 'instances' or 'sem_seg' "
                               f"(keys {sorted(outputs[0])}); nothing drawn")
                self._warned = True
            return None
        import cv2

        os.makedirs(self._output_dir, exist_ok=True)
        path = os.path.join(self._output_dir, f"iter_{it:07d}.png")
        if not cv2.imwrite(path, np.ascontiguousarray(grid[:, :, ::-1])):
            raise OSError(f"could not write {path!r}")
        logger.info(f"Wrote predictions on {len(inputs)} validation images to {path}")
        return path

    def after_step(self):
        if not comm.is_main_process():
            return
        next_iter = self.trainer.iter + 1
        if (self._period > 0 and next_iter % self._period == 0) or next_iter == self.trainer.max_iter:
            self.write()


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
