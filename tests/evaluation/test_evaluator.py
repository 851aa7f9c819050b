"""DatasetEvaluator API and inference_on_dataset: eval mode + no_grad, progress and timing logs,
training mode restored, evaluators combined."""

import logging
from collections import OrderedDict

import pytest
import torch
from torch import nn

from segtrain.evaluation import (
    DatasetEvaluator,
    DatasetEvaluators,
    flatten_results_dict,
    inference_on_dataset,
    print_csv_format,
    verify_results,
)


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.seen = []

    def forward(self, inputs):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return [{"value": (self.w * x["x"]).sum()} for x in inputs]


class _SumEvaluator(DatasetEvaluator):
    def __init__(self, key="sum"):
        self.key = key

    def reset(self):
        self.total, self.count = 0.0, 0

    def process(self, inputs, outputs):
        for o in outputs:
            self.total += float(o["value"])
            self.count += 1

    def evaluate(self):
        return OrderedDict({self.key: {"total": self.total, "count": self.count}})


def _loader(n_batches=40, batch=2):
    return [[{"x": torch.tensor([float(i * batch + j)])} for j in range(batch)] for i in range(n_batches)]


def test_inference_on_dataset_runs_eval_no_grad_and_restores_mode(caplog):
    model = _Model()
    model.train()
    with caplog.at_level(logging.INFO, logger="segtrain.evaluation.evaluator"):
        res = inference_on_dataset(model, _loader(), _SumEvaluator())
    assert res == {"sum": {"total": float(sum(range(80))), "count": 80}}
    assert all(s == (False, False) for s in model.seen)
    assert model.training
    progress = [r.message for r in caplog.records if "Inference done" in r.message]
    assert 15 <= len(progress) <= 20  # about every 5% of 40 batches, not every batch
    assert "ETA=" in progress[-1] and "s/img" in progress[-1]
    assert any("Total inference time" in r.message and "80 images" in r.message for r in caplog.records)


def test_inference_keeps_eval_mode_and_accepts_lists_and_none():
    model = _Model().eval()
    res = inference_on_dataset(model, _loader(3), [_SumEvaluator("a"), _SumEvaluator("b")])
    assert list(res) == ["a", "b"] and not model.training
    assert inference_on_dataset(model, iter(_loader(2)), None) == {}  # no len(): still fine


def test_training_mode_restored_after_an_error():
    class _Bad(_Model):
        def forward(self, inputs):
            raise RuntimeError("boom")

    model = _Bad().train()
    with pytest.raises(RuntimeError, match="boom"):
        inference_on_dataset(model, _loader(2), _SumEvaluator())
    assert model.training


def test_dataset_evaluators_reject_duplicate_tasks():
    ev = DatasetEvaluators([_SumEvaluator("a"), _SumEvaluator("a")])
    ev.reset()
    with pytest.raises(ValueError, match="result key 'a'"):
        ev.evaluate()


def test_result_helpers(caplog):
    res = OrderedDict(segm=OrderedDict(AP=50.0, AP50=70.0, **{"AP-circle": 1.0}), bbox={"AP": float("nan")})
    assert flatten_results_dict(res) == {
        "segm/AP": 50.0,
        "segm/AP50": 70.0,
        "segm/AP-circle": 1.0,
        "bbox/AP": res["bbox"]["AP"],
    }
    with caplog.at_level(logging.INFO, logger="segtrain.evaluation.evaluator"):
        print_csv_format(res)
    assert "copypaste: AP,AP50" in caplog.text and "50.0000,70.0000" in caplog.text
    assert "AP-circle" not in caplog.text
    assert verify_results(res, [("segm", "AP", 50.5, 1.0)])
    assert not verify_results(res, [("segm", "AP", 60, 1.0)])
    assert not verify_results(res, [("bbox", "AP", 0, 1.0)])  # NaN fails


def test_sum_over_processes(monkeypatch):
    """Element-wise sum of every process's array on the main process, None elsewhere."""
    import numpy as np

    from segtrain.evaluation.evaluator import sum_over_processes
    from segtrain.utils import comm

    a = np.arange(4).reshape(2, 2)
    assert sum_over_processes(a, distributed=False) is a
    monkeypatch.setattr(comm, "all_gather", lambda x: [x, 2 * x, 3 * x])
    monkeypatch.setattr(comm, "is_main_process", lambda: True)
    np.testing.assert_array_equal(sum_over_processes(a), 6 * a)
    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    assert sum_over_processes(a) is None
