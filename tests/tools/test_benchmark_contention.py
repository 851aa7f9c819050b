"""``benchmark.py contention``: the table's medians and ratios, and a tiny run end to end (the
busy processes it starts are gone afterwards; each case reports its threads and times)."""

import importlib.util
import json
import os

import pytest
import torch

from tools.benchmarks import contention

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TOOL = os.path.join(ROOT, "tools", "benchmark.py")
TINY = os.path.join(ROOT, "projects", "m2f", "tiny.yaml")


def test_rows_give_medians_and_ratios_to_alone():
    results = [
        {"case": "segtrain", "policy": "adaptive", "busy": 0, "threads": 2, "step_s": [1.0, 3.0, 2.0]},
        {"case": "segtrain", "policy": "adaptive", "busy": 1, "threads": 1, "step_s": [3.0, 3.0, 9.0]},
        {"case": "plain", "policy": "adaptive", "busy": 0, "threads": 2, "step_s": [1.0]},
        {"case": "plain", "policy": "adaptive", "busy": 1, "error": "subprocess exited 1: boom"},
    ]
    rows, summary = contention._rows(results, [0, 1])
    step_rows = {r[0]: r for r in rows if r[2] == "step ms"}
    assert step_rows["segtrain"][3:] == ["2/1", 2000.0, 3000.0, "1.50x"]
    assert summary["segtrain_adaptive_step_s_ratio_beside_1"] == pytest.approx(1.5)
    assert step_rows["plain"][5:] == [None, "-"]  # the failed case has no figure and no ratio
    assert "plain_adaptive_step_s_ratio_beside_1" not in summary


@pytest.mark.slow
def test_tiny_run_alone_and_beside_one(tmp_path, monkeypatch):
    started = []
    start_busy = contention._start_busy
    monkeypatch.setattr(contention, "_start_busy", lambda n: started.extend(start_busy(n)) or started[-n:])
    monkeypatch.setenv("SEGTRAIN_DATASETS", str(tmp_path / "datasets"))
    for key in ("OMP_NUM_THREADS", "SEGTRAIN_NUM_THREADS"):  # a fixed count would skip the measurement
        monkeypatch.delenv(key, raising=False)
    spec = importlib.util.spec_from_file_location("benchmark_tool", _TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "contention.json"
    size = ["INPUT.MIN_SIZE_TRAIN", "(64,)", "INPUT.MAX_SIZE_TRAIN", "64", "INPUT.MIN_SIZE_TEST", "64"]
    size += ["INPUT.MAX_SIZE_TEST", "64", "DATASETS.SHAPES.IMAGE_SIZE", "64", "DATASETS.SHAPES.NUM_TRAIN", "4"]
    size += ["DATASETS.SHAPES.NUM_VAL", "2", "DATALOADER.NUM_WORKERS", "0"]
    argv = ["contention", "--config-file", TINY, "--busy", "0,1", "--policies", "adaptive", "--warmup", "1"]
    argv += ["--repeat", "2", "--eval-images", "2", "--eval-passes", "1", "--settle", "0.2", "--output", str(out)]
    argv += size
    try:
        assert tool.main(argv) == 0
    finally:
        torch.set_num_threads(1)
    assert len(started) == 2 and all(p.poll() is not None for p in started)  # started and stopped
    report = json.loads(out.read_text())
    cases = {(r["case"], r["busy"]): r for r in report["results"]}
    assert sorted(cases) == [("plain", 0), ("plain", 1), ("segtrain", 0), ("segtrain", 1)]
    for r in cases.values():
        assert "error" not in r, r["error"]
        assert len(r["step_s"]) == 2 and all(t > 0 for t in r["step_s"])
        assert len(r["eval_s_per_image"]) >= 1 and r["threads"] >= 1
        assert r["free_cpus"] is not None  # each adaptive case measured the free cores itself
    assert "segtrain_adaptive_step_s_ratio_beside_1" in report["summary"]
