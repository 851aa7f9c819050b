"""Suite-wide settings: one intra-op thread (CI has 2 cores; oversubscription makes tiny ops 10-40x slower)."""
import pytest
import torch

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
