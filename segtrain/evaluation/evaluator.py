"""The ``DatasetEvaluator`` API and ``inference_on_dataset`` (eval mode, progress, timing)."""

import datetime
import logging
import math
import time
from collections import OrderedDict
from contextlib import ExitStack, contextmanager
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
from segtrain.utils import comm
from segtrain.utils.errors import DatasetError

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_on_dataset",
    "inference_context",
    "print_csv_format",
    "flatten_results_dict",
    "verify_results",
    "sum_over_processes",
    "DatasetDictIndex",
]

logger = logging.getLogger(__name__)


def sum_over_processes(array: Any, distributed: bool = True) -> Optional[Any]:
    """The element-wise sum of ``array`` (e.g. a confusion matrix) over all processes on the
    main process, ``None`` on the others; ``array`` itself when not ``distributed``."""
    if not distributed:
        return array
    comm.synchronize()
    gathered = comm.all_gather(array)
    if not comm.is_main_process():
        return None
    return sum(gathered[1:], gathered[0])


class DatasetDictIndex:
    """The registered dataset dicts of ``dataset_name`` by ``image_id`` and by ``file_name``,
    for evaluators that read per-image ground truth from them (``lookup(model_input)``)."""

    def __init__(self, dataset_name: str, evaluator_name: str):
        self._name = f"{evaluator_name}({dataset_name})"
        self._index: Dict[Any, Dict[str, Any]] = {}
        for d in DatasetCatalog.get(dataset_name):
            self._index[("id", d.get("image_id"))] = d
            self._index[("file", d.get("file_name"))] = d

    def lookup(self, inp: Dict[str, Any]) -> Dict[str, Any]:
        d = self._index.get(("id", inp.get("image_id"))) or self._index.get(("file", inp.get("file_name")))
        if d is None:
            raise DatasetError(
                f"{self._name}: no dataset entry for image_id {inp.get('image_id')!r} / file {inp.get('file_name')!r}"
            )
        return d


def read_metadata(dataset_name: str, *attrs: str):
    """``MetadataCatalog.get(dataset_name)``, after reading the dataset when none of ``attrs`` is
    set yet (``register_coco_instances`` sets class names and the category mapping only when its
    dataset is first read). Evaluators call it when they evaluate, not when they are built."""
    meta = MetadataCatalog.get(dataset_name)
    if not any(getattr(meta, a, None) for a in attrs) and dataset_name in DatasetCatalog:
        DatasetCatalog.get(dataset_name)
    return meta


class DatasetEvaluator:
    """Accumulates (input, output) pairs over a dataset and computes metrics at the end.

    ``reset()`` before a pass; ``process(inputs, outputs)`` for every batch (lists of the same
    length: model inputs and the model's eval outputs, see docs/CONTRACTS.md); ``evaluate()``
    once, which gathers across processes and returns an ``OrderedDict`` such as
    ``{"bbox": {"AP": 40.1, ...}, "segm": {...}}`` on the main process (``{}`` elsewhere).
    """

    #: the key of each model output dict that this evaluator scores (None: not one key)
    output_key = None

    def reset(self) -> None:
        """Clear the state kept from a previous pass."""

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """Record one batch. ``inputs``/``outputs``: the model's inputs and eval outputs."""

    def evaluate(self) -> "OrderedDict[str, Dict[str, float]]":
        """Metrics over everything processed since ``reset`` (task -> metric name -> value)."""
        return OrderedDict()


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators run as one; their result dicts are merged (a task name produced by two
    evaluators is an error, since one would silently hide the other)."""

    def __init__(self, evaluators: Sequence[DatasetEvaluator]):
        super().__init__()
        self._evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs, outputs) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self):
        results = OrderedDict()
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if comm.is_main_process() and result is not None:
                for k, v in result.items():
                    if k in results:
                        raise ValueError(
                            f"two evaluators produced the result key {k!r} ({type(evaluator).__name__} is the second)"
                        )
                    results[k] = v
        return results


@contextmanager
def inference_context(model: nn.Module):
    """Put ``model`` in eval mode for the block and restore its previous training mode after."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _format_eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _cuda_sync() -> None:
    # CUDA kernels run asynchronously: without a sync the per-image time would measure
    # only kernel launches.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def inference_on_dataset(
    model: nn.Module,
    data_loader: Iterable[List[Dict[str, Any]]],
    evaluator: Union[DatasetEvaluator, Sequence[DatasetEvaluator], None],
    *,
    log_period_s: float = 30.0,
    log_fraction: float = 0.05,
) -> "OrderedDict[str, Dict[str, float]]":
    """Run ``model`` on every batch of ``data_loader`` and evaluate with ``evaluator``.

    The model runs in eval mode under ``torch.no_grad`` and gets its training mode back after.
    A progress line (done/total, s/img, ETA) is logged every ``log_fraction`` of the dataset or
    every ``log_period_s`` seconds, whichever comes first; total and per-image times are logged
    at the end. The first few batches are left out of the per-image time (warm-up).

    model: called as ``model(inputs) -> outputs`` (lists of dicts, docs/CONTRACTS.md).
    data_loader: an iterable of batches (lists of dicts); ``len()`` is used when available.
    evaluator: one evaluator, a list of them, or None (inference only, returns ``{}``).
    Returns the evaluator's ``OrderedDict`` (``{}`` on processes other than the main one).
    """
    if evaluator is None:
        evaluator = DatasetEvaluators([])
    elif isinstance(evaluator, (list, tuple)):
        evaluator = DatasetEvaluators(evaluator)
    evaluator.reset()

    try:
        total = len(data_loader)  # batches on this process
    except TypeError:
        total = None
    logger.info(f"Start inference on {total if total is not None else 'an unknown number of'} batches")
    num_warmup = min(5, total - 1) if total else 5

    num_images = 0
    num_images_timed = 0
    start = time.perf_counter()
    timed_start = start
    compute_time = 0.0
    last_log_time = start
    next_log_fraction = log_fraction
    with ExitStack() as stack:
        stack.enter_context(inference_context(model))
        stack.enter_context(torch.no_grad())
        for idx, inputs in enumerate(data_loader):
            if idx == num_warmup:
                timed_start = time.perf_counter()
                num_images_timed = 0
                compute_time = 0.0
            t0 = time.perf_counter()
            outputs = model(inputs)
            _cuda_sync()
            compute_time += time.perf_counter() - t0
            evaluator.process(inputs, outputs)
            n = len(inputs) if hasattr(inputs, "__len__") else 1
            num_images += n
            num_images_timed += n

            now = time.perf_counter()
            done = idx + 1
            due_by_fraction = total is not None and done / total >= next_log_fraction
            if done == total:
                continue  # the summary below covers the last batch
            if due_by_fraction or now - last_log_time >= log_period_s:
                while total is not None and done / total >= next_log_fraction:
                    next_log_fraction += log_fraction
                last_log_time = now
                _log_progress(done, total, num_images, num_images_timed, now - timed_start, compute_time)

    total_time = time.perf_counter() - start
    per_image = (time.perf_counter() - timed_start) / max(num_images_timed, 1)
    # a loader that drops bad images (DATASETS.ON_BAD_ANNOTATION='skip') says how many
    skipped = int(getattr(data_loader, "num_skipped", 0) or 0)
    skipped_note = f" (+{skipped} skipped as bad, DATASETS.ON_BAD_ANNOTATION='skip')" if skipped else ""
    logger.info(
        f"Total inference time: {_format_eta(total_time)} ({total_time:.3f} s) for {num_images} images{skipped_note} "
        f"({per_image:.4f} s/img after warm-up, {compute_time / max(num_images_timed, 1):.4f} s/img in the model; "
        f"{comm.get_world_size()} process(es))"
    )
    results = evaluator.evaluate()
    # an evaluator returns None on non-main processes; give the caller a dict anyway
    return results if results is not None else OrderedDict()


def _log_progress(
    done: int, total: Optional[int], num_images: int, num_timed: int, elapsed: float, compute: float
) -> None:
    s_per_img = elapsed / max(num_timed, 1)
    msg = f"Inference done {done}/{total if total is not None else '?'} batches ({num_images} images). "
    msg += f"{s_per_img:.4f} s/img ({compute / max(num_timed, 1):.4f} s/img in the model)"
    if total is not None and num_timed > 0:
        imgs_per_batch = num_images / done
        msg += f". ETA={_format_eta(s_per_img * imgs_per_batch * (total - done))}"
    logger.info(msg)


def flatten_results_dict(results: Mapping[str, Any], prefix: str = "") -> Dict[str, float]:
    """``{"segm": {"AP": 1.0}}`` -> ``{"segm/AP": 1.0}`` (the form hooks and writers use)."""
    out: Dict[str, float] = {}
    for k, v in results.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_results_dict(v, key + "/"))
        else:
            out[key] = v
    return out


def print_csv_format(results: Mapping[str, Mapping[str, float]]) -> None:
    """Log each task's metrics as two comma-separated lines (names, values) for copy-paste.
    Per-class entries (names with a '-') are left out to keep the lines short."""
    for task, res in results.items():
        if not isinstance(res, Mapping):
            logger.info(f"copypaste: {task}={res}")
            continue
        important = [(k, v) for k, v in res.items() if "-" not in k]
        logger.info(f"copypaste: Task: {task}")
        logger.info("copypaste: " + ",".join(k for k, _ in important))
        logger.info("copypaste: " + ",".join(_fmt(v) for _, v in important))


def _fmt(v: Any) -> str:
    try:
        return f"{float(v):.4f}"
    except (TypeError, ValueError):
        return str(v)


def verify_results(
    results: Mapping[str, Mapping[str, float]], expected: Iterable[Tuple[str, str, float, float]]
) -> bool:
    """Check ``results[task][metric]`` against ``(task, metric, value, tolerance)`` entries.
    Logs every mismatch (missing, NaN or off by more than the tolerance); returns True if all pass."""
    ok = True
    for task, metric, value, tol in expected:
        actual = results.get(task, {}).get(metric)
        if actual is None or not math.isfinite(float(actual)) or abs(float(actual) - value) > tol:
            logger.error(f"Result verification failed: {task}/{metric} = {actual}, expected {value} +/- {tol}")
            ok = False
    if ok:
        logger.info("Results verification passed.")
    return ok
