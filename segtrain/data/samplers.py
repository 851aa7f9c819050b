"""Samplers: an infinite, seeded, rank-sharded training sampler that can resume at an
exact position, and an inference sampler that visits every item once."""

import itertools
import logging
from typing import Any, Dict, Iterator, Optional, Tuple

import numpy as np
from torch.utils.data import Sampler

from segtrain.utils import comm

__all__ = ["TrainingSampler", "InferenceSampler"]

logger = logging.getLogger(__name__)


class TrainingSampler(Sampler):
    """Infinite stream of indices in [0, size).

    The global stream is epoch 0's permutation, then epoch 1's, ... where epoch ``e`` is
    drawn from ``default_rng([seed, e])`` (so any position can be reached without replaying
    the past). Rank ``r`` of ``W`` yields global items ``r, r + W, r + 2W, ...``, so ranks
    are disjoint within an epoch. ``start`` (per-rank items already consumed) resumes
    exactly; ``state_dict`` / ``load_state_dict`` carry the position (set by the loader,
    which knows how many items the trainer really consumed). ``positions()`` yields the
    same indices with their global positions.
    """

    def __init__(
        self,
        size: int,
        shuffle: bool = True,
        seed: Optional[int] = None,
        *,
        start: int = 0,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ):
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a dataset of size > 0, got {size}")
        self._size = int(size)
        self._shuffle = shuffle
        # every rank must draw the same permutations for the shards to be disjoint
        self._seed = int(comm.shared_random_seed() if seed is None or seed < 0 else seed)
        self._rank = comm.get_rank() if rank is None else int(rank)
        self._world_size = comm.get_world_size() if world_size is None else int(world_size)
        self.start = int(start)

    @property
    def seed(self) -> int:
        return self._seed

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self._shuffle:
            return np.arange(self._size)
        return np.random.default_rng([self._seed, epoch]).permutation(self._size)

    def _global_stream(self, global_start: int) -> Iterator[int]:
        epoch, offset = divmod(global_start, self._size)
        while True:
            order = self._epoch_order(epoch)
            for i in order[offset:]:
                yield int(i)
            epoch, offset = epoch + 1, 0

    def __iter__(self) -> Iterator[int]:
        for _, index in self.positions():
            yield index

    def positions(self) -> Iterator[Tuple[int, int]]:
        """This rank's items as ``(global position, index)``: the position in the global
        stream identifies a sample across resumes and world sizes (the loader seeds each
        sample's augmentation from it)."""
        global_start = self.start * self._world_size + self._rank
        stream = itertools.islice(self._global_stream(global_start), 0, None, self._world_size)
        return zip(itertools.count(global_start, self._world_size), stream)

    def state_dict(self, consumed: Optional[int] = None) -> Dict[str, Any]:
        """``{"seed", "size", "global_position"}``; ``global_position`` counts items of the
        global stream consumed by all ranks, given this rank consumed ``consumed`` items
        in total (default ``start``)."""
        consumed = self.start if consumed is None else int(consumed)
        return {"seed": self._seed, "size": self._size, "global_position": consumed * self._world_size}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue where ``state`` left off (same seed; dataset size must match)."""
        if int(state["size"]) != self._size:
            raise ValueError(f"sampler state is for a dataset of {state['size']} items, this one has {self._size}")
        self._seed = int(state["seed"])
        self.start = int(state["global_position"]) // self._world_size


class InferenceSampler(Sampler):
    """Every index exactly once, in order, split into contiguous shards by rank (the first
    ``size % W`` ranks get one extra item)."""

    def __init__(self, size: int, *, rank: Optional[int] = None, world_size: Optional[int] = None):
        self._size = int(size)
        rank = comm.get_rank() if rank is None else int(rank)
        world_size = comm.get_world_size() if world_size is None else int(world_size)
        per, extra = divmod(self._size, world_size)
        begin = rank * per + min(rank, extra)
        end = begin + per + (1 if rank < extra else 0)
        self._indices = range(begin, end)

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)
