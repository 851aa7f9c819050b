"""A Roboflow export named in the config (DATASETS.ROBOFLOW) registers at start-up, once per
folder; NUM_TRAIN_IMAGES keeps SAM 3's few-shot subset of the training images."""

import random

import pytest

from segtrain.config import get_cfg
from segtrain.data import MetadataCatalog, get_dataset_dicts, register_datasets_from_cfg
from segtrain.data.datasets import write_roboflow_shapes
from segtrain.data.datasets.roboflow import official_image_subset
from segtrain.data.find.mapper import num_concepts_from_cfg
from segtrain.utils.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("rf_cfg") / "export")
    return write_roboflow_shapes(root, num_train=9, num_valid=2, num_test=2, image_size=48, masks=False)


@pytest.fixture
def cfg_for(export):
    def make(name="rfcfg", num=0, root=export):
        cfg = get_cfg()
        cfg.DATASETS.ROBOFLOW.ROOT = root
        cfg.DATASETS.ROBOFLOW.NAME = name
        cfg.DATASETS.ROBOFLOW.NUM_TRAIN_IMAGES = num
        return cfg

    return make


def test_registers_once_and_reads(cfg_for):
    cfg = cfg_for()
    register_datasets_from_cfg(cfg)
    dicts = get_dataset_dicts("rfcfg_train", filter_empty=False)
    assert len(dicts) == 10  # 9 images with objects and one without
    classes = MetadataCatalog.get("rfcfg_train").thing_classes
    register_datasets_from_cfg(cfg)  # the same folder again: the registration and its metadata stay
    assert MetadataCatalog.get("rfcfg_train").thing_classes == classes


def test_few_shot_subset(cfg_for):
    register_datasets_from_cfg(cfg_for(name="rfsub", num=4))
    dicts = get_dataset_dicts("rfsub_train", filter_empty=False)
    ids = sorted(d["image_id"] for d in get_dataset_dicts("rfsub_valid", filter_empty=False))
    assert len(dicts) == 4 and len(ids) == 3
    assert [d["image_id"] for d in dicts] == sorted(d["image_id"] for d in dicts)


def test_official_subset_positions():
    # Sam3ImageDataset(limit_ids=3) over 10 images: positions shuffled by random.Random(10)
    dicts = [{"image_id": 100 + i} for i in reversed(range(10))]
    positions = list(range(10))
    random.Random(10).shuffle(positions)
    got = official_image_subset(dicts, 3)
    assert [d["image_id"] for d in got] == sorted(100 + p for p in positions[:3])
    assert len(official_image_subset(dicts, 0)) == 10 and len(official_image_subset(dicts, 50)) == 10


def test_missing_folder_is_one_line_error(cfg_for, tmp_path):
    with pytest.raises(DatasetError, match="Roboflow export folder not found"):
        register_datasets_from_cfg(cfg_for(name="rfmissing", root=str(tmp_path / "nope")))


def test_concept_vocabulary_from_the_datasets(cfg_for):
    cfg = cfg_for(name="rfvocab")
    register_datasets_from_cfg(cfg)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = ("rfvocab_train",), ("rfvocab_test",)
    # the 6 shapes and Roboflow's category 0, read from the (lazy) json reader
    assert num_concepts_from_cfg(cfg, True) == 7 and num_concepts_from_cfg(cfg, False) == 7
    cfg.DATASETS.TRAIN = ("rfvocab_train", "shapes_train")
    with pytest.raises(ConfigError, match="different numbers of categories"):
        num_concepts_from_cfg(cfg, True)
    cfg.INPUT.FIND.NUM_CONCEPTS = 9
    assert num_concepts_from_cfg(cfg, True) == 9
