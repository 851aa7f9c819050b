"""``FindSampler``: which concepts of one image become finds.

A find is one (image, concept prompt) pair. For each image the sampler keeps the concepts
present in its annotations (positives) and adds absent ones (presence negatives, finds
whose target set is empty), so the presence head sees both answers. A concept with more
objects than ``max_objects_per_find`` gives no find at all (neither positive nor negative), as
SAM 3's ``FilterFindQueriesWithTooManyOut`` drops such a find.
"""

from collections import Counter
from typing import Iterable, Optional, Sequence

import numpy as np

from segtrain.utils.errors import ConfigError, DatasetError

__all__ = ["FindSampler"]


class FindSampler:
    """Concept ids of the finds of one image.

    num_concepts: K; concepts are contiguous category ids in [0, K).
    num_negatives: absent concepts drawn per image (-1: all of them, i.e. exhaustive finds).
    max_positives: present concepts kept per image (-1: all; else a random subset).
    max_objects_per_find: a present concept with more objects than this is no find (-1: no cap).

    ``sampler(present, rng)`` -> int64 [F]: the (sorted) positives first, then the negatives
    in draw order; ``present`` lists the class of every object (repeats count the objects).
    At least one find is returned when there is an absent concept: an image with no positives
    and ``num_negatives == 0`` still gets one negative.
    """

    def __init__(
        self, num_concepts: int, num_negatives: int = -1, max_positives: int = -1, max_objects_per_find: int = -1
    ):
        if int(num_concepts) < 1:
            raise ConfigError(f"INPUT.FIND.NUM_CONCEPTS must be >= 1, got {num_concepts}")
        if int(num_negatives) < -1:
            raise ConfigError(f"INPUT.FIND.NUM_NEGATIVES must be >= -1 (-1: all absent concepts), got {num_negatives}")
        if int(max_positives) < -1 or int(max_positives) == 0:
            raise ConfigError(f"INPUT.FIND.MAX_POSITIVES must be -1 (all) or >= 1, got {max_positives}")
        if int(max_objects_per_find) < -1 or int(max_objects_per_find) == 0:
            raise ConfigError(
                f"INPUT.FIND.MAX_OBJECTS_PER_FIND must be -1 (no cap) or >= 1, got {max_objects_per_find}"
            )
        self.num_concepts = int(num_concepts)
        self.num_negatives = int(num_negatives)
        self.max_positives = int(max_positives)
        self.max_objects_per_find = int(max_objects_per_find)

    def within_object_cap(self, finds: Sequence[int], present: Iterable[int]) -> np.ndarray:
        """``finds`` (int64 [F]) without those whose concept has more than
        ``max_objects_per_find`` objects in ``present`` (the class of every object)."""
        finds = np.asarray(finds, dtype=np.int64).reshape(-1)
        if self.max_objects_per_find < 0:
            return finds
        counts = Counter(int(c) for c in present)
        return finds[[counts[int(c)] <= self.max_objects_per_find for c in finds]].astype(np.int64)

    def __call__(self, present: Iterable[int], rng: Optional[np.random.RandomState] = None) -> np.ndarray:
        rng = rng if rng is not None else np.random
        present = [int(c) for c in present]
        pos = sorted(set(present))
        bad = [c for c in pos if not 0 <= c < self.num_concepts]
        if bad:
            raise DatasetError(
                f"category id(s) {bad} outside [0, {self.num_concepts}) (INPUT.FIND.NUM_CONCEPTS); "
                "does the concept vocabulary match the dataset's classes?"
            )
        pos = self.within_object_cap(pos, present).tolist()
        if self.max_positives > 0 and len(pos) > self.max_positives:
            pos = sorted(int(c) for c in rng.choice(pos, self.max_positives, replace=False))
        present_set = set(present)
        absent = [c for c in range(self.num_concepts) if c not in present_set]
        n_neg = len(absent) if self.num_negatives < 0 else min(self.num_negatives, len(absent))
        if not pos and n_neg == 0 and absent:
            n_neg = 1
        neg = [int(c) for c in rng.choice(absent, n_neg, replace=False)] if n_neg > 0 else []
        if self.num_negatives < 0:
            neg = sorted(neg)  # exhaustive: a fixed order
        return np.asarray(pos + neg, dtype=np.int64)

    def __repr__(self) -> str:
        return (
            f"FindSampler(num_concepts={self.num_concepts}, num_negatives={self.num_negatives}, "
            f"max_positives={self.max_positives}, max_objects_per_find={self.max_objects_per_find})"
        )
