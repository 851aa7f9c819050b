"""EventStorage and writers: smoothing, JSON lines (incl. values put late), console line,
TensorBoard / W&B fallbacks, setup_logger files."""

import json
import logging
import os

import pytest

from segtrain.utils.events import (
    CommonMetricPrinter,
    EventStorage,
    JSONWriter,
    TensorboardXWriter,
    WandbWriter,
    get_event_storage,
)
from segtrain.utils.logger import setup_logger


def test_storage_smoothing_history_and_context():
    with pytest.raises(RuntimeError):
        get_event_storage()
    with EventStorage(start_iter=10) as s:
        assert get_event_storage() is s
        for i, v in enumerate([1.0, 9.0, 2.0]):
            s.iter = 10 + i
            s.put_scalars(core_loss=v)
            s.put_scalar("lr", 0.1 * (i + 1), smoothing_hint=False)
        latest = s.latest_with_smoothing_hint(window_size=3)
        assert latest["core_loss"] == (2.0, 12)  # median of 1, 9, 2
        assert latest["lr"][0] == pytest.approx(0.3)
        assert s.history("core_loss").values() == [(1.0, 10), (9.0, 11), (2.0, 12)]
        with s.name_scope("val"):
            s.put_scalar("loss", 1.0)
        assert "val/loss" in s.latest()
        with pytest.raises(KeyError, match="nope"):
            s.history("nope")


def test_json_writer_writes_late_values_at_written_iteration(tmp_path):
    path = tmp_path / "metrics.json"
    w = JSONWriter(str(path), window_size=1)
    with EventStorage() as s:
        for it in range(3):
            s.iter = it
            s.put_scalars(core_loss=float(it), loss_ce=1.0)
            w.write()
        s.put_scalars(**{"segm/AP": 42.0}, smoothing_hint=False)  # final evaluation, same iteration
        w.write()
        w.write()  # nothing new: nothing written
    w.close()
    lines = [json.loads(x) for x in open(path)]
    assert lines == [
        {"iteration": 0, "core_loss": 0.0, "loss_ce": 1.0},
        {"iteration": 1, "core_loss": 1.0, "loss_ce": 1.0},
        {"iteration": 2, "core_loss": 2.0, "loss_ce": 1.0},
        {"iteration": 2, "segm/AP": 42.0},
    ]


def test_common_metric_printer_line(caplog, monkeypatch):
    p = CommonMetricPrinter(max_iter=100)
    with EventStorage() as s:
        s.iter = 9
        s.put_scalars(core_loss=1.5, loss_dice_3=0.25, class_error=62.5, iou_target_mean=0.3, time=0.5, data_time=0.01)
        s.put_scalar("lr", 1e-4, smoothing_hint=False)
        monkeypatch.setattr(logging.getLogger("segtrain"), "propagate", True)  # reach caplog's root handler
        with caplog.at_level(logging.INFO, logger="segtrain.utils.events"):
            p.write()
    line = caplog.records[-1].getMessage()
    assert "iter: 10/100" in line and "eta: 0:00:45" in line
    assert line.index("core_loss: 1.5") < line.index("loss_dice_3: 0.25") < line.index("class_error: 62.5")
    assert "iou_target_mean" not in line  # other metrics stay in metrics.json
    assert "time: 0.5000" in line and "data_time: 0.0100" in line and "lr: 0.0001" in line


def test_tensorboard_writer_writes_event_file(tmp_path):
    w = TensorboardXWriter(str(tmp_path))
    with EventStorage() as s:
        s.put_scalar("core_loss", 1.0)
        w.write()
    w.close()
    if w._writer is not None:  # tensorboard installed
        assert any(p.name.startswith("events.out.tfevents") for p in tmp_path.iterdir())


def test_wandb_writer_without_wandb_is_noop(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_wandb(name, *a, **k):
        if name == "wandb":
            raise ImportError("no wandb")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    w = WandbWriter(project="p", mode="offline", output_dir=str(tmp_path))
    with EventStorage() as s:
        s.put_scalar("core_loss", 1.0)
        w.write()
    w.close()


def test_setup_logger_files_and_rank_suffix(tmp_path):
    name = "segtrain_test_logger"
    lg = setup_logger(str(tmp_path), 0, name=name)
    lg.info("hello rank0")
    setup_logger(str(tmp_path), 0, name=name)  # a second call must not duplicate handlers
    assert len(lg.handlers) == 2
    lg1 = setup_logger(str(tmp_path), 1, name=name + "_r1")
    lg1.info("hello rank1")
    assert len(lg1.handlers) == 1  # no console on rank > 0
    for h in lg.handlers + lg1.handlers:
        h.flush()
    assert "hello rank0" in (tmp_path / "log.txt").read_text()
    assert "hello rank1" in (tmp_path / "log.txt.rank1").read_text()
    for h in lg.handlers + lg1.handlers:
        h.close()


def test_wandb_writer_offline_without_network(tmp_path, monkeypatch):
    """With wandb installed, offline mode writes a local run (scalars included) and needs no network:
    the API host points at a closed local port."""
    wandb = pytest.importorskip("wandb")  # optional extra; skipped only where wandb is not installed
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    w = WandbWriter(project="segtrain-test", mode="offline", output_dir=str(tmp_path), config={"SEED": 1})
    assert w._run is not None and w._run.settings.mode == "offline"
    with EventStorage() as s:
        for it in range(3):
            s.iter = it
            s.put_scalars(core_loss=3.0 - it, loss_ce=1.0)
            w.write()
        s.put_scalar("segm/AP", 12.5, smoothing_hint=False)  # a late value at the last written iteration
        w.write()
    run_dir = w._run.dir
    w.close()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and os.path.commonpath([run_dir, str(runs[0])]) == str(runs[0])
    (record_file,) = runs[0].glob("run-*.wandb")
    records = record_file.read_bytes()  # the run's records, synced later by `wandb sync`
    assert b"core_loss" in records and b"loss_ce" in records and b"segm/AP" in records
    assert wandb.run is None  # finished


def test_common_metric_printer_with_train_prefix(caplog, monkeypatch):
    p = CommonMetricPrinter(max_iter=10, train_prefix="train/")
    with EventStorage() as s:
        s.iter = 4
        s.put_scalars(**{"train/core_loss": 2.0, "train/total_loss": 2.0, "train/loss_ce": 0.5, "val/loss_ce": 9.0})
        monkeypatch.setattr(logging.getLogger("segtrain"), "propagate", True)
        with caplog.at_level(logging.INFO, logger="segtrain.utils.events"):
            p.write()
    line = caplog.records[-1].getMessage()
    assert "core_loss: 2" in line and "loss_ce: 0.5" in line and line.index("core_loss") < line.index("loss_ce")
    assert "train/" not in line and "total_loss" not in line and ": 9" not in line
