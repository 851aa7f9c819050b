"""TrainingSampler / InferenceSampler: sharding, seeding and exact resume."""

import itertools

import pytest

from segtrain.data import InferenceSampler, TrainingSampler


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_training_shards_are_disjoint_and_cover_each_epoch(world_size):
    size = 12
    per_rank = size // world_size
    shards = [
        _take(TrainingSampler(size, seed=5, rank=r, world_size=world_size), 2 * per_rank) for r in range(world_size)
    ]
    for epoch in range(2):
        seen = [i for s in shards for i in s[epoch * per_rank : (epoch + 1) * per_rank]]
        assert sorted(seen) == list(range(size))


def test_training_seeded_and_shuffled():
    a = _take(TrainingSampler(50, seed=1, rank=0, world_size=1), 100)
    assert a == _take(TrainingSampler(50, seed=1, rank=0, world_size=1), 100)
    assert a != _take(TrainingSampler(50, seed=2, rank=0, world_size=1), 100)
    assert a[:50] != list(range(50)) and a[:50] != a[50:]  # shuffled, new order each epoch
    assert _take(TrainingSampler(5, shuffle=False, seed=0, rank=0, world_size=1), 7) == [0, 1, 2, 3, 4, 0, 1]


@pytest.mark.parametrize("world_size", [1, 2])
def test_training_resume_continues_exactly(world_size):
    full = [_take(TrainingSampler(7, seed=3, rank=r, world_size=world_size), 30) for r in range(world_size)]
    for consumed in (0, 5, 7, 16):
        for r in range(world_size):
            s = TrainingSampler(7, seed=3, rank=r, world_size=world_size, start=consumed)
            assert _take(s, 10) == full[r][consumed : consumed + 10]
            # through the state dict (seed travels with it)
            state = TrainingSampler(7, seed=3, rank=r, world_size=world_size).state_dict(consumed=consumed)
            s2 = TrainingSampler(7, seed=99, rank=r, world_size=world_size)
            s2.load_state_dict(state)
            assert _take(s2, 10) == full[r][consumed : consumed + 10]


def test_training_state_rejects_other_dataset():
    state = TrainingSampler(7, seed=3, rank=0, world_size=1).state_dict()
    with pytest.raises(ValueError, match="7 items"):
        TrainingSampler(8, seed=3, rank=0, world_size=1).load_state_dict(state)


@pytest.mark.parametrize("size,world_size", [(10, 3), (2, 4), (9, 1)])
def test_inference_contiguous_every_item_once(size, world_size):
    shards = [list(InferenceSampler(size, rank=r, world_size=world_size)) for r in range(world_size)]
    assert [i for s in shards for i in s] == list(range(size))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [len(InferenceSampler(size, rank=r, world_size=world_size)) for r in range(world_size)] == list(
        map(len, shards)
    )
