"""The criteria start no thread of their own: on a CPU shared with other jobs every extra
runnable thread beside the compute pool stalls the pool's barriers (docs/benchmarks.md, "Busy
machines"). SetCriterion (matching, random point draws, losses) forward and backward, at one
and two torch threads, starts no Python thread and leaves the process's OS thread count as it
found it after a warm-up call."""

import os
import threading

import pytest
import torch

from segtrain.modeling.criterion import CORE_LOSS_KEY, SetCriterion
from segtrain.modeling.matcher import HungarianMatcher


def _inputs(B=2, Q=7, K=3, n_aux=3, seed=0):
    g = torch.Generator().manual_seed(seed)

    def layer():
        return {
            "pred_logits": torch.randn(B, Q, K + 1, generator=g, requires_grad=True),
            "pred_masks": torch.randn(B, Q, 6, 6, generator=g, requires_grad=True),
        }

    out = layer()
    out["aux_outputs"] = [layer() for _ in range(n_aux)]
    targets = [
        {"labels": torch.tensor([0, 2]), "masks": torch.rand(2, 24, 24, generator=g) > 0.5},
        {"labels": torch.tensor([1]), "masks": torch.rand(1, 24, 24, generator=g) > 0.5},
    ]
    return out, targets


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.parametrize("threads", [1, 2])
def test_set_criterion_starts_no_thread(monkeypatch, threads):
    crit = SetCriterion(
        3,
        HungarianMatcher(2.0, 5.0, 5.0, num_points=30),
        {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0},
        0.1,
        ["labels", "masks"],
        40,
        3.0,
        0.75,
    )
    started = []
    original_start = threading.Thread.start

    def record_start(thread):
        started.append(thread.name)
        return original_start(thread)

    monkeypatch.setattr(threading.Thread, "start", record_start)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        crit(*_inputs(seed=0))[CORE_LOSS_KEY].backward()  # warm-up: the OpenMP pool exists after it
        before = _os_threads() if os.path.isdir("/proc/self/task") else None
        for seed in (1, 2):
            crit(*_inputs(seed=seed))[CORE_LOSS_KEY].backward()
        after = _os_threads() if before is not None else None
    finally:
        torch.set_num_threads(saved)
    assert started == []
    assert after == before
