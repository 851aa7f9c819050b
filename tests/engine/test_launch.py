"""launch(): a plain call at world size 1; argument checks."""

import pytest

from segtrain.engine.launch import launch
from segtrain.utils.errors import ConfigError


def test_world_size_one_calls_directly():
    assert launch(lambda a, b: a + b, 1, args=(2, 3)) == 5


def test_auto_url_needs_one_machine():
    with pytest.raises(ConfigError, match="--dist-url auto"):
        launch(print, 2, num_machines=2, dist_url="auto")


def test_machine_rank_range():
    with pytest.raises(ConfigError, match="--machine-rank 3"):
        launch(print, 1, num_machines=2, machine_rank=3, dist_url="tcp://127.0.0.1:1")


def test_torchrun_env(monkeypatch):
    from segtrain.engine.launch import torchrun_env

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert torchrun_env() is None
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_env() == {"rank": 3, "world_size": 4, "local_rank": 1, "local_world_size": 4}
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert torchrun_env()["local_world_size"] == 2
    # a one-process torchrun run is a plain call: no process group, like a plain single process
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert launch(lambda a: a * 2, 1, args=(21,)) == 42
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="torchrun environment"):
        torchrun_env()
