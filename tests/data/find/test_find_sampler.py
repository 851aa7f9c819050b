"""FindSampler: positives first, absent concepts as presence negatives, exhaustive mode."""

import numpy as np
import pytest

from segtrain.data.find import FindSampler
from segtrain.utils.errors import ConfigError, DatasetError


def test_positives_then_sampled_negatives():
    s = FindSampler(6, num_negatives=2)
    rng = np.random.RandomState(0)
    for _ in range(20):
        finds = s([4, 1, 4], rng)
        assert finds.dtype == np.int64
        assert finds[:2].tolist() == [1, 4]  # each present concept once, sorted
        neg = finds[2:].tolist()
        assert len(neg) == 2 and len(set(neg)) == 2 and not set(neg) & {1, 4}
        assert all(0 <= c < 6 for c in neg)


def test_negatives_cover_the_absent_concepts():
    s = FindSampler(5, num_negatives=1)
    rng = np.random.RandomState(1)
    seen = {int(s([0], rng)[1]) for _ in range(200)}
    assert seen == {1, 2, 3, 4}


def test_exhaustive_and_capped():
    assert FindSampler(4, num_negatives=-1)([2]).tolist() == [2, 0, 1, 3]
    assert FindSampler(4, num_negatives=10)([0, 1, 2, 3]).tolist() == [0, 1, 2, 3]
    capped = FindSampler(6, num_negatives=0, max_positives=2)([0, 1, 2, 3], np.random.RandomState(0))
    assert len(capped) == 2 and set(capped.tolist()) <= {0, 1, 2, 3}


def test_image_without_objects_still_gets_a_find():
    finds = FindSampler(3, num_negatives=0)([], np.random.RandomState(0))
    assert len(finds) == 1 and 0 <= int(finds[0]) < 3


def test_bad_inputs():
    with pytest.raises(DatasetError, match=r"category id\(s\) \[7\] outside \[0, 6\)"):
        FindSampler(6)([7])
    with pytest.raises(ConfigError, match="NUM_NEGATIVES"):
        FindSampler(6, num_negatives=-2)
    with pytest.raises(ConfigError, match="MAX_POSITIVES"):
        FindSampler(6, max_positives=0)
    with pytest.raises(ConfigError, match="NUM_CONCEPTS"):
        FindSampler(0)
