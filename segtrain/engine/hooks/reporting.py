"""The end-of-run report: loss trends in the log, ``metrics_final.json`` and the training curves."""

import json
import logging
import os
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from segtrain.checkpoint import atomic_write_bytes
from segtrain.utils.loss_trends import describe_rising, format_loss_trends, loss_trends
from segtrain.utils.plot_metrics import read_metrics, write_metrics_png

from ..train_loop import HookBase

__all__ = ["TrainingReport"]

logger = logging.getLogger(__name__)

History = Tuple[List[Dict[str, float]], str]


class TrainingReport(HookBase):
    """After a run that ended without an error (early stops included), from ``<output_dir>/metrics.json``:
    every loss key's last-fifth / first-fifth mean ratio in the log (:mod:`segtrain.utils.loss_trends`)
    with a warning naming the keys that did not go down; ``metrics_final.json`` with
    ``{"iteration", "results", "loss_trends"}`` when there are evaluation results; and ``metrics.png``
    (``write_metrics_png``). Main process only.

    Register it after the evaluation hook (the final results) and after the writers (their last
    flush completes metrics.json). A finished run never fails on its report: a file that cannot
    be read or plotted is a warning.

    results: returns the last evaluation results (nested dict) or None; called once, at the end.
    """

    def __init__(self, output_dir: str, results: Optional[Callable[[], Optional[Mapping]]] = None):
        self._output_dir = output_dir
        self._results = results

    @property
    def metrics_path(self) -> str:
        """``<output_dir>/metrics.json``, the JSONWriter's file (see ``default_writers``)."""
        return os.path.join(self._output_dir or "", "metrics.json")

    def after_train(self):
        results_fn, self._results = self._results, None  # the closure may hold the trainer
        if self.trainer.exception is not None or not self._output_dir:
            return
        results = results_fn() if results_fn is not None else None
        history = self._read_history()
        trends = self._report_loss_trends(history[0]) if history else {}
        if results:
            path = os.path.join(self._output_dir, "metrics_final.json")
            payload = {"iteration": self.trainer.iter - 1, "results": results}
            if trends:
                payload["loss_trends"] = trends
            atomic_write_bytes(path, json.dumps(payload, indent=2, default=float).encode())
            logger.info(f"Final evaluation results written to {path}")
        if history:
            self._write_curves(history)

    def _read_history(self) -> Optional[History]:
        """``read_metrics`` of metrics.json; None without the file, or when it cannot be read (logged)."""
        metrics = self.metrics_path
        if not os.path.isfile(metrics):
            return None
        try:
            return read_metrics(metrics)
        except Exception as e:  # noqa: BLE001 - the run is done; a report must not turn it into a failure
            logger.warning(f"could not read {metrics} for the loss trends and training curves: {e}")
            return None

    def _report_loss_trends(self, records: List[Dict[str, float]]) -> Dict[str, Dict[str, float]]:
        """Log the trends of ``records`` and warn about the keys that did not go down; returns the
        trends (empty for short runs)."""
        trends = loss_trends(records)
        if trends:
            logger.info(format_loss_trends(trends, f"Loss trends over the run ({self.metrics_path}):"))
            rising = describe_rising(trends, records)
            if rising:
                logger.warning(
                    f"{len(rising)} loss key(s) did not go down over the run (last fifth >= first fifth): "
                    + ", ".join(rising)
                )
        return trends

    def _write_curves(self, history: History) -> None:
        """``metrics.png`` beside metrics.json (a plotting failure is a warning)."""
        metrics = self.metrics_path
        try:
            write_metrics_png(metrics, history=history)
        except Exception as e:  # noqa: BLE001 - the run is done; a plot must not turn it into a failure
            logger.warning(f"could not plot {metrics}: {e}")
