"""Suite-wide settings: one intra-op thread (CI has 2 cores; oversubscription makes tiny ops 10-40x slower),
and the repository root on ``sys.path`` so that ``tests.reference`` (the reference forms the tests compare
against) imports under any pytest invocation."""

import os
import sys

import pytest
import torch

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

torch.set_num_threads(1)


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
