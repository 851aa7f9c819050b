"""hooks.TrainingReport: the end-of-run loss trends, metrics_final.json and metrics.png, after the
final evaluation and the writers' last flush, only for a run that ended without an error."""

import json
import logging

import pytest
import torch
from torch import nn

from segtrain.engine.hooks import CallbackHook, EvalHook, PeriodicWriter, TrainingReport
from segtrain.engine.train_loop import SimpleTrainer
from segtrain.utils.events import JSONWriter


class _Falling(nn.Module):
    """core_loss = w^2 (goes down under SGD), loss_flat = 1 (does not)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))

    def forward(self, batch):
        return {"core_loss": self.w**2, "loss_flat": torch.tensor(1.0)}


def _batches():
    while True:
        yield [{}]


def _train(hooks, max_iter=20):
    model = _Falling()
    t = SimpleTrainer(model, _batches(), torch.optim.SGD(model.parameters(), lr=0.05))
    t.register_hooks(hooks)
    t.train(0, max_iter)
    return t


def _report_hooks(out, results):
    evals = iter(results)
    return [
        EvalHook(0, lambda: next(evals)),
        PeriodicWriter([JSONWriter(str(out / "metrics.json"))], period=1),
        TrainingReport(str(out), lambda: results[-1]),
    ]


def test_writes_final_results_trends_and_curves(tmp_path, caplog):
    pytest.importorskip("matplotlib")
    with caplog.at_level(logging.INFO, logger="segtrain"):
        _train(_report_hooks(tmp_path, [{"segm": {"AP": 3.0}}]))
    final = json.load(open(tmp_path / "metrics_final.json"))
    assert final["iteration"] == 19 and final["results"] == {"segm": {"AP": 3.0}}
    assert final["loss_trends"]["core_loss"]["ratio"] < 1 and final["loss_trends"]["loss_flat"]["ratio"] == 1
    assert "Loss trends over the run" in caplog.text
    assert "1 loss key(s) did not go down over the run (last fifth >= first fifth): loss_flat x1.00" in caplog.text
    assert f"Final evaluation results written to {tmp_path / 'metrics_final.json'}" in caplog.text
    assert (tmp_path / "metrics.png").is_file()
    # the final evaluation reached metrics.json before the report read it
    lines = [json.loads(x) for x in open(tmp_path / "metrics.json")]
    assert lines[-1]["segm/AP"] == 3.0


def test_nothing_after_an_error(tmp_path):
    def fail(trainer):
        if trainer.iter == 3:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _train([CallbackHook(after_step=fail)] + _report_hooks(tmp_path, [{"segm": {"AP": 1.0}}]))
    assert not (tmp_path / "metrics_final.json").exists() and not (tmp_path / "metrics.png").exists()


def test_unreadable_metrics_is_a_warning(tmp_path, caplog):
    (tmp_path / "metrics.json").write_text("not json\n{}\n")
    with caplog.at_level(logging.INFO, logger="segtrain"):
        _train([TrainingReport(str(tmp_path), lambda: {"segm": {"AP": 2.0}})], max_iter=2)
    assert "could not read" in caplog.text and "for the loss trends and training curves" in caplog.text
    final = json.load(open(tmp_path / "metrics_final.json"))
    assert final == {"iteration": 1, "results": {"segm": {"AP": 2.0}}}  # no trends, results still written
