"""segtrain.utils.env: the one seed-and-restore of the global RNGs (python, numpy, torch)."""

import random

import numpy as np
import torch

from segtrain.utils.env import get_rng_state, seeded_rng, set_rng_state


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_cpu_only_seeding_matches_the_data_path_recipe():
    """``cuda=False`` seeds exactly as each mapped item has always been seeded (it decides the
    augmentations): numpy with ``seed % 2**32``, python with ``seed``, the CPU generator with
    ``seed % 2**63``."""
    for seed in (0, 7, 2**40 + 3, 2**64 + 11):
        np.random.seed(seed % 2**32)
        random.seed(seed)
        torch.default_generator.manual_seed(seed % 2**63)
        expected = _draws()
        with seeded_rng(seed, cuda=False):
            assert _draws() == expected


def test_all_device_seeding_matches_manual_seed():
    """``cuda=True`` (the hooks' passes) seeds as ``random.seed``, ``np.random.seed(seed % 2**32)``
    and ``torch.manual_seed`` do."""
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    expected = _draws()
    with seeded_rng(5, cuda=True):
        assert _draws() == expected


def test_restores_the_callers_streams():
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    state = get_rng_state()
    untouched = _draws()
    set_rng_state(state)
    for cuda in (False, True):
        with seeded_rng(123, cuda=cuda):
            inside = _draws()
        assert _draws() == untouched  # the block did not move the caller's streams
        set_rng_state(state)
        with seeded_rng(123, cuda=cuda):
            assert _draws() == inside  # and it repeats
        set_rng_state(state)


def test_no_restore_leaves_the_seeded_streams():
    with seeded_rng(9, cuda=False, restore=False):
        first = _draws()
    after = _draws()
    with seeded_rng(9, cuda=False):
        assert _draws() == first
        assert _draws() == after


def test_state_keys_are_the_checkpoint_format():
    state = get_rng_state()
    assert {"python", "numpy", "torch"} <= set(state)
    assert set(get_rng_state(cuda=False)) == {"python", "numpy", "torch"}
