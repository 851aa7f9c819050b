"""build_train_loader / build_test_loader / get_dataset_dicts on tiny shapes."""

import itertools
import logging
import os

import cv2
import numpy as np
import pytest
import torch

from segtrain.data import build_test_loader, build_train_loader, get_dataset_dicts
from segtrain.structures import Instances
from segtrain.utils.errors import ConfigError, DatasetError


def _ids(batches):
    return [[x["image_id"] for x in b] for b in batches]


@pytest.mark.parametrize("workers", [0, 2])
def test_train_loader_batches(tiny_cfg, workers):
    tiny_cfg.DATALOADER.NUM_WORKERS = workers
    tiny_cfg.SOLVER.IMS_PER_BATCH = 3
    loader = build_train_loader(tiny_cfg)
    batches = list(itertools.islice(iter(loader), 4))  # 12 items: more than one epoch of 8
    for b in batches:
        assert isinstance(b, list) and len(b) == 3
        for x in b:
            assert x["image"].dtype == torch.uint8 and x["image"].shape == (3, 64, 64)
            assert isinstance(x["instances"], Instances)
    assert sorted(i for b in _ids(batches)[:2] for i in b)[:6] == sorted(set(i for b in _ids(batches)[:2] for i in b))


def test_train_loader_deterministic_across_workers_and_runs(tiny_cfg):
    tiny_cfg.INPUT.RANDOM_FLIP = "horizontal"

    def run(workers):
        tiny_cfg.DATALOADER.NUM_WORKERS = workers
        batches = list(itertools.islice(iter(build_train_loader(tiny_cfg)), 3))
        return _ids(batches), [x["image"] for b in batches for x in b]

    ids0, imgs0 = run(0)
    ids0b, imgs0b = run(0)
    ids2, imgs2 = run(2)
    assert ids0 == ids0b == ids2  # the sampler order does not depend on workers
    # augmentation is seeded per sample: the same with 0 or 2 workers
    assert all(torch.equal(a, b) for a, b in zip(imgs0, imgs0b))
    assert all(torch.equal(a, b) for a, b in zip(imgs0, imgs2))
    tiny_cfg.SEED = 8
    assert run(0)[0] != ids0


def test_train_loader_resume(tiny_cfg):
    loader = build_train_loader(tiny_cfg)
    it = iter(loader)
    first = _ids(itertools.islice(it, 5))
    state = loader.state_dict()
    after = _ids(itertools.islice(it, 3))
    # a new loader (as in a new process) resumes at the saved position
    resumed = build_train_loader(tiny_cfg)
    resumed.load_state_dict(state)
    assert _ids(itertools.islice(iter(resumed), 3)) == after
    # start_iter does the same from the iteration count
    by_iter = build_train_loader(tiny_cfg, start_iter=5)
    assert _ids(itertools.islice(iter(by_iter), 3)) == after
    assert len(first) == 5


@pytest.mark.parametrize("workers", [0, 2])
def test_train_loader_resume_repeats_random_augmentation(tiny_cfg, workers):
    """A loader resumed at batch 3 hands out the very tensors (random sizes and flips included)
    that the uninterrupted loader gave as batches 3.., and they differ from those of batches 0.."""
    tiny_cfg.INPUT.RANDOM_FLIP = "horizontal"
    tiny_cfg.INPUT.MIN_SIZE_TRAIN = (40, 48, 56, 64)
    tiny_cfg.INPUT.MAX_SIZE_TRAIN = 64
    tiny_cfg.DATALOADER.NUM_WORKERS = workers
    loader = build_train_loader(tiny_cfg)
    it = iter(loader)
    first = list(itertools.islice(it, 3))
    state = loader.state_dict()
    after = list(itertools.islice(it, 6))  # crosses the epoch boundary (8 images)
    resumed = build_train_loader(tiny_cfg)
    resumed.load_state_dict(state)
    again = list(itertools.islice(iter(resumed), 6))
    flat = lambda batches: [x for b in batches for x in b]  # noqa: E731
    assert _ids(again) == _ids(after)
    for a, b in zip(flat(after), flat(again)):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["instances"].gt_masks, b["instances"].gt_masks)
    # the augmentation really is random: the same image in two epochs is not always mapped the same
    by_id = {}
    for x in flat(first + after):
        by_id.setdefault(x["image_id"], []).append(x["image"])
    assert any(len(v) > 1 and (v[0].shape != v[1].shape or not torch.equal(v[0], v[1])) for v in by_id.values())


def test_map_dataset_does_not_touch_global_rng(tiny_cfg):
    tiny_cfg.INPUT.RANDOM_FLIP = "horizontal"
    np.random.seed(3)
    expected = np.random.rand()
    np.random.seed(3)
    torch.manual_seed(3)
    expected_torch = torch.rand(1)
    torch.manual_seed(3)
    np.random.seed(3)
    list(itertools.islice(iter(build_train_loader(tiny_cfg)), 2))
    assert np.random.rand() == expected and torch.equal(torch.rand(1), expected_torch)


def test_train_loader_checks_batch_size(tiny_cfg):
    tiny_cfg.SOLVER.IMS_PER_BATCH = 0
    with pytest.raises(ConfigError, match="IMS_PER_BATCH"):
        build_train_loader(tiny_cfg)


def test_test_loader_each_image_once(tiny_cfg):
    tiny_cfg.DATALOADER.NUM_WORKERS = 2
    loader = build_test_loader(tiny_cfg, "shapes_val")
    batches = list(loader)
    assert len(loader) == 4 and [len(b) for b in batches] == [1, 1, 1, 1]
    assert [b[0]["image_id"] for b in batches] == [1, 2, 3, 4]
    assert all("instances" in b[0] for b in batches)


def test_skip_policy_through_the_config(tiny_cfg, coco_factory, caplog):
    def edit(data):
        data["annotations"][0]["category_id"] = 42

    json_file, root = coco_factory(edit=edit)
    # an image whose size differs from its JSON entry is only found when decoded, in the mapper
    cv2.imwrite(os.path.join(root, "b.png"), np.zeros((45, 50, 3), np.uint8))
    from segtrain.data import register_coco_instances

    register_coco_instances("test_loader_bad", {}, json_file, root)
    tiny_cfg.DATASETS.TRAIN = ("test_loader_bad",)
    tiny_cfg.DATASETS.TEST = ("test_loader_bad",)
    with pytest.raises(DatasetError, match="annotation id 11"):
        build_train_loader(tiny_cfg)
    tiny_cfg.DATASETS.ON_BAD_ANNOTATION = "skip"
    with caplog.at_level(logging.WARNING):
        loader = build_train_loader(tiny_cfg)
        batch = next(iter(loader))
    assert "Skipped 1 bad annotation(s)" in caplog.text
    assert [x["image_id"] for x in batch] == [1, 1]  # image 2 has the wrong size: replaced
    test_batches = list(build_test_loader(tiny_cfg, "test_loader_bad"))
    assert [b[0]["image_id"] for b in test_batches] == [1]


def test_get_dataset_dicts(tiny_cfg, shapes_root):
    from segtrain.data import register_shapes_from_cfg

    register_shapes_from_cfg(tiny_cfg)
    all_dicts = get_dataset_dicts(["shapes_train", "shapes_val"], filter_empty=False)
    assert len(all_dicts) == 12
    non_empty = get_dataset_dicts("shapes_train", filter_empty=True)
    assert all(d["annotations"] for d in non_empty) and len(non_empty) <= 8
    with pytest.raises(ConfigError):
        get_dataset_dicts([])
