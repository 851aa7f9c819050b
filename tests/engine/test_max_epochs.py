"""SOLVER.MAX_EPOCHS sets SOLVER.MAX_ITER from the number of training images and the batch."""

import logging

import pytest

import segtrain.modeling  # noqa: F401
from segtrain.config import get_cfg
from segtrain.engine.epochs import apply_max_epochs, iterations_per_epoch
from segtrain.utils.errors import ConfigError


def _cfg(epochs, batch=4):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("shapes_train",)
    cfg.DATASETS.SHAPES.NUM_TRAIN, cfg.DATASETS.SHAPES.NUM_VAL, cfg.DATASETS.SHAPES.IMAGE_SIZE = 10, 2, 32
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.SOLVER.MAX_EPOCHS = epochs
    cfg.freeze()
    return cfg


def test_max_iter_from_epochs(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGTRAIN_DATASETS", str(tmp_path))
    cfg = apply_max_epochs(_cfg(3))
    # 10 images at 4 per batch: 2 full batches per epoch (the partial one dropped)
    assert cfg.SOLVER.MAX_ITER == 6 and cfg.is_frozen()
    off = _cfg(0)
    assert apply_max_epochs(off) is off


def test_iterations_per_epoch():
    assert iterations_per_epoch(100, 2) == 50 and iterations_per_epoch(3, 8) == 1
    with pytest.raises(ConfigError, match="IMS_PER_BATCH"):
        iterations_per_epoch(10, 0)


def test_resolved_config_is_not_counted_again(tmp_path, monkeypatch, caplog):
    """setup_cfg and DefaultTrainer both resolve the epochs: the second call on the config the
    first returned reads no dataset but logs the resolution again (the first came before the
    log was set up); a changed config is counted again."""
    import segtrain.engine.epochs as epochs

    monkeypatch.setenv("SEGTRAIN_DATASETS", str(tmp_path))
    calls = []
    real = epochs.get_dataset_dicts
    monkeypatch.setattr(epochs, "get_dataset_dicts", lambda *a, **k: calls.append(a) or real(*a, **k))
    cfg = apply_max_epochs(_cfg(3))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="segtrain.engine.epochs"):
        assert apply_max_epochs(cfg) is cfg and len(calls) == 1
    assert "SOLVER.MAX_EPOCHS 3 over 10 training images (shapes_train) at 4 per batch" in caplog.text
    cfg.defrost()
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.freeze()
    assert apply_max_epochs(cfg).SOLVER.MAX_ITER == 15 and len(calls) == 2
