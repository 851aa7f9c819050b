"""FindSampler's per-find object cap (SAM 3's FilterFindQueriesWithTooManyOut, 200 objects):
a concept with more objects is no find at all, neither positive nor presence negative."""

import numpy as np
import pytest

from segtrain.data.find import FindSampler
from segtrain.utils.errors import ConfigError


def test_crowded_concept_is_no_find():
    s = FindSampler(4, num_negatives=-1, max_objects_per_find=3)
    assert s([1, 1, 1, 2]).tolist() == [1, 2, 0, 3]  # 3 objects: at the cap, kept
    assert s([1, 1, 1, 1, 2]).tolist() == [2, 0, 3]  # 4: dropped, and not a negative either
    assert FindSampler(4, num_negatives=-1)([1] * 500).tolist() == [1, 0, 2, 3]  # -1: no cap
    assert s.within_object_cap([1, 2, 3], [1, 1, 1, 1, 2]).tolist() == [2, 3]


def test_only_crowded_positives_still_give_a_negative():
    finds = FindSampler(3, num_negatives=0, max_objects_per_find=1)([0, 0], np.random.RandomState(0))
    assert len(finds) == 1 and int(finds[0]) in (1, 2)


def test_bad_cap():
    with pytest.raises(ConfigError, match="MAX_OBJECTS_PER_FIND"):
        FindSampler(3, max_objects_per_find=0)
