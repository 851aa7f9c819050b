"""Data-loader worker processes yield to the compute threads: they run at the niceness of
``SEGTRAIN_LOADER_NICENESS`` (default +10) with one OpenCV thread, in the training and the
inference loader; a bad value is a one-line error naming the variable."""

import itertools
import os

import cv2
import pytest

from segtrain.data import build_test_loader, build_train_loader
from segtrain.utils.errors import ConfigError


def _worker_settings(d):
    """Mapper run in the worker: what the worker process was set to."""
    return {"niceness": os.nice(0), "cv2_threads": cv2.getNumThreads(), "pid": os.getpid()}


@pytest.mark.parametrize("value, expected", [(None, 10), ("3", 3), ("0", 0)])
def test_workers_run_niced_with_one_opencv_thread(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("SEGTRAIN_LOADER_NICENESS", raising=False)
    else:
        monkeypatch.setenv("SEGTRAIN_LOADER_NICENESS", value)
    dicts = [{"image_id": i} for i in range(4)]
    base = os.nice(0)
    train = build_train_loader(dicts, mapper=_worker_settings, total_batch_size=2, num_workers=1, seed=0)
    test = build_test_loader(dicts, mapper=_worker_settings, num_workers=1)
    for batch in (next(iter(train)), next(iter(test))):
        for item in batch:
            assert item["pid"] != os.getpid()  # mapped in a worker process
            assert item["niceness"] == min(19, base + expected) and item["cv2_threads"] == 1
    assert os.nice(0) == base  # the main process keeps its priority


def test_no_workers_leave_the_main_process_alone(monkeypatch):
    monkeypatch.delenv("SEGTRAIN_LOADER_NICENESS", raising=False)
    base = os.nice(0)
    loader = build_train_loader([{"image_id": 0}], mapper=_worker_settings, total_batch_size=1, num_workers=0, seed=0)
    (item,) = next(itertools.islice(iter(loader), 1))
    assert item["pid"] == os.getpid() and item["niceness"] == base == os.nice(0)


@pytest.mark.parametrize("value", ["-5", "20", "high"])
def test_bad_niceness_names_the_variable(monkeypatch, value):
    monkeypatch.setenv("SEGTRAIN_LOADER_NICENESS", value)
    with pytest.raises(ConfigError, match=f"SEGTRAIN_LOADER_NICENESS='{value}'"):
        next(iter(build_train_loader([{"image_id": 0}], mapper=_worker_settings, total_batch_size=1, seed=0)))
