"""Suite-wide settings: one intra-op thread (CI has 2 cores; oversubscription makes tiny ops 10-40x slower),
the repository root on ``sys.path`` so that ``tests.reference`` (the reference forms the tests compare
against) imports under any pytest invocation, and every test ends with the logging state it found (a
trainer or tool run by a test calls setup_logger, whose handlers stop propagation to caplog)."""

import logging
import os
import sys

import pytest
import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

torch.set_num_threads(1)

_LOGGER_NAMES = ("segtrain", "fvcore")


@pytest.fixture(autouse=True)
def _restore_loggers():
    saved = {
        n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate, logging.getLogger(n).level)
        for n in _LOGGER_NAMES
    }
    yield
    for n, (handlers, propagate, level) in saved.items():
        lg = logging.getLogger(n)
        for h in list(lg.handlers):
            if h not in handlers:
                lg.removeHandler(h)
                h.close()
        lg.propagate, lg.level = propagate, level


@pytest.fixture
def tmp_datasets_root(tmp_path, monkeypatch):
    """Built-in datasets generated under ``tmp_path / "datasets"`` (``SEGTRAIN_DATASETS``) for
    the test; the default registration of the shapes splits is restored afterwards."""
    from segtrain.data.datasets import builtin

    original_root = builtin.get_datasets_root()
    root = tmp_path / "datasets"
    monkeypatch.setenv("SEGTRAIN_DATASETS", str(root))
    yield root
    builtin.register_shapes(original_root)  # back to the default registration
