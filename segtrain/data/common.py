"""Datasets over a list of dicts: ``DatasetFromList`` (one pickled buffer, cheap to fork) and
``MapDataset`` (a mapper applied with per-item seeded randomness)."""

import pickle
from typing import Any, Callable, List, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from segtrain.utils.env import seeded_rng
from segtrain.utils.errors import DatasetError

from .detection_utils import bad_items_skipped

__all__ = ["DatasetFromList", "MapDataset", "mix_seed"]

_MAX_SKIPS_IN_A_ROW = 50


def mix_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(1)[0])


class DatasetFromList(Dataset):
    """A list of dicts stored as one pickled byte buffer, so that forked workers do not
    copy the list (touching Python objects' refcounts would)."""

    def __init__(self, items: List[Any]):
        blobs = [np.frombuffer(pickle.dumps(x, protocol=pickle.HIGHEST_PROTOCOL), dtype=np.uint8) for x in items]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._data = np.concatenate(blobs) if blobs else np.zeros(0, dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, idx: int) -> Any:
        start = 0 if idx == 0 else int(self._ends[idx - 1])
        return pickle.loads(memoryview(self._data[start : int(self._ends[idx])]))


class MapDataset(Dataset):
    """``map_func(dataset[idx])`` with reproducible randomness: every item is mapped under
    ``np.random`` / ``random`` / ``torch`` (CPU) states seeded from ``(seed, key)`` (the
    caller's states are restored after, in the main process), so an item's augmentation
    depends only on the base seed and its key, not on the worker, the worker count or what
    was mapped before.

    ``dataset[idx]``: the item keyed by ``idx`` (``None`` when it was skipped as bad).
    ``map_at(position, idx)``: the item at ``position`` of a sample stream (the training
    sampler's global position), returned with the number of bad items skipped for it.

    When ``map_func`` returns ``None`` (a skipped bad image, or a clip without objects): with
    ``retry`` another item, drawn from the same seeded stream, is mapped instead; without,
    ``None`` is returned.
    """

    def __init__(self, dataset: Dataset, map_func: Callable[[Any], Any], *, retry: bool, seed: int = 0):
        self._dataset, self._map_func, self._retry = dataset, map_func, retry
        self._seed = int(seed)

    def reseed(self, seed: int) -> None:
        """Change the base seed of every item's randomness."""
        self._seed = int(seed)

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, idx: int) -> Any:
        return self.map_at(idx, idx)[0]

    def map_at(self, position: int, idx: int) -> Tuple[Any, int]:
        """``(mapped item or None, bad items skipped)`` for ``position`` of the sample stream."""
        # in the main process (no loader workers) the caller's RNG states are restored after; a
        # worker process owns its RNGs and skips the (comparatively slow) save and restore
        restore = torch.utils.data.get_worker_info() is None
        with seeded_rng(mix_seed(self._seed, position), cuda=False, restore=restore):
            skipped_before = bad_items_skipped()
            for _ in range(_MAX_SKIPS_IN_A_ROW):
                out = self._map_func(self._dataset[idx])
                if out is not None or not self._retry:
                    return out, bad_items_skipped() - skipped_before
                idx = int(np.random.randint(len(self._dataset)))
        raise DatasetError(
            f"{_MAX_SKIPS_IN_A_ROW} images in a row were skipped as bad; check the dataset (last index {idx})"
        )
