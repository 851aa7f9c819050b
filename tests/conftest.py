"""Suite-wide settings: one intra-op thread (CI has 2 cores; oversubscription makes tiny ops 10-40x slower),
the repository root on ``sys.path`` so that ``tests.reference`` (the reference forms the tests compare
against) imports under any pytest invocation, and every test ends with the logging state it found (a
trainer or tool run by a test calls setup_logger, whose handlers stop propagation to caplog) and the
dataset catalogs it found (what it registered is removed, what it replaced or removed is put back)."""

import logging
import os
import sys

import pytest
import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from segtrain.data.catalog import catalogs_restored  # noqa: E402  (needs the root on sys.path)

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


@pytest.fixture(autouse=True)
def _restore_catalogs():
    """Datasets and metadata a test (or a function-scoped fixture) registers, replaces or removes
    are put back as they were; those of wider-scoped fixtures are set up before this snapshot."""
    with catalogs_restored():
        yield


@pytest.fixture
def tmp_datasets_root(tmp_path, monkeypatch):
    """Built-in datasets generated under ``tmp_path / "datasets"`` (``SEGTRAIN_DATASETS``) for
    the test; the registrations it makes there are undone by ``_restore_catalogs``."""
    root = tmp_path / "datasets"
    monkeypatch.setenv("SEGTRAIN_DATASETS", str(root))
    return root
