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
