"""register_roboflow_coco on the shapes dataset written in the Roboflow layout: splits, category
0 (the export's super-category), box-only exports, images without annotations, finds of every
image x every category, the 200-objects-per-find cap, and one-line errors."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import segtrain.modeling  # noqa: F401  (the model config keys the configs here read)
from segtrain.config import get_cfg
from segtrain.data import DatasetCatalog, MetadataCatalog
from segtrain.data import register_roboflow_coco as reexported
from segtrain.data.datasets import register_roboflow_coco, write_roboflow_shapes
from segtrain.data.find import FindDatasetMapper
from segtrain.data.mappers import build_mapper
from segtrain.structures.masks import BoxMode
from segtrain.utils.errors import DatasetError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPES = ["circle", "square", "triangle", "star", "ellipse", "hexagon"]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("rf") / "shapes")
    return write_roboflow_shapes(root, num_train=4, num_valid=2, num_test=2, image_size=48)


@pytest.fixture(scope="module")
def box_export(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("rf_boxes") / "shapes")
    return write_roboflow_shapes(root, num_train=4, num_valid=2, num_test=2, image_size=48, masks=False)


def test_layout_as_roboflow_writes_it(export):
    with open(os.path.join(export, "train", "_annotations.coco.json")) as f:
        data = json.load(f)
    assert data["categories"][0] == {"id": 0, "name": "shapes", "supercategory": "none"}
    assert all(c["supercategory"] == "shapes" for c in data["categories"][1:])
    assert min(i["id"] for i in data["images"]) == 0 and min(a["id"] for a in data["annotations"]) == 0
    assert not any(a["category_id"] == 0 for a in data["annotations"])
    assert all(os.path.isfile(os.path.join(export, "train", i["file_name"])) for i in data["images"])


def test_splits_category_zero_and_empty_image(export):
    assert register_roboflow_coco("_rf_masks", export) == ["_rf_masks_train", "_rf_masks_valid", "_rf_masks_test"]
    meta = MetadataCatalog.get("_rf_masks_train")
    assert meta.evaluator_type == "FindEvaluator" and meta.image_root == os.path.join(export, "train")
    dicts = DatasetCatalog.get("_rf_masks_train")
    # category 0 is kept as concept 0 (the official loader keeps every category), never annotated
    assert meta.thing_classes == ["shapes"] + SHAPES
    assert meta.thing_dataset_id_to_contiguous_id == {k: k for k in range(7)}
    assert not any(a["category_id"] == 0 for d in dicts for a in d["annotations"])
    assert len(dicts) == 5 and dicts[-1]["annotations"] == [] and dicts[-1]["file_name"].endswith("empty_000.jpg")
    assert all("segmentation" in a for d in dicts for a in d["annotations"])
    assert len(DatasetCatalog.get("_rf_masks_test")) == 3


def test_boxes_only_export(box_export):
    register_roboflow_coco("_rf_boxes", box_export)
    dicts = DatasetCatalog.get("_rf_boxes_valid")
    anns = [a for d in dicts for a in d["annotations"]]
    assert anns and not any("segmentation" in a for a in anns)
    assert all(a["bbox_mode"] == BoxMode.XYWH_ABS and len(a["bbox"]) == 4 for a in anns)


def test_only_present_splits_and_reexported(tmp_path):
    root = write_roboflow_shapes(str(tmp_path / "rf"), num_train=2, num_valid=1, num_test=1, image_size=48)
    os.remove(os.path.join(root, "test", "_annotations.coco.json"))
    assert reexported is register_roboflow_coco
    assert register_roboflow_coco("_rf_two", root) == ["_rf_two_train", "_rf_two_valid"]
    assert "_rf_two_test" not in DatasetCatalog


def test_every_image_times_every_category_is_a_find(export):
    register_roboflow_coco("_rf_finds", export)
    cfg = get_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = "FindDatasetMapper"
    cfg.INPUT.FIND.NUM_CONCEPTS = 7
    cfg.INPUT.FIND.NUM_NEGATIVES = -1
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TEST = (48,), 48
    mapper = build_mapper(cfg, is_train=True)
    assert isinstance(mapper, FindDatasetMapper) and mapper.find_sampler.max_objects_per_find == 200
    for d in DatasetCatalog.get("_rf_finds_train"):
        out = mapper(d)
        present = sorted(set(out["instances"].gt_classes.tolist()))
        finds = out["find_categories"].tolist()
        assert sorted(finds) == list(range(7)) and finds[: len(present)] == present
        assert out["find_is_exhaustive"].all()


def _crowded_dict(tmp_path, n_circles):
    """A 64x64 image with ``n_circles`` tiny box-only circles (concept 1) and one square (2)."""
    path = str(tmp_path / "img.jpg")
    cv2.imwrite(path, np.zeros((64, 64, 3), np.uint8))
    anns = [
        {"bbox": [float(i % 60), float(i // 60), 2.0, 2.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 1}
        for i in range(n_circles)
    ]
    anns.append({"bbox": [10.0, 10.0, 20.0, 20.0], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 2})
    return {"file_name": path, "height": 64, "width": 64, "image_id": 0, "annotations": anns}


def test_finds_with_more_than_200_objects_are_dropped_in_training(tmp_path):
    cfg = get_cfg()
    cfg.INPUT.DATASET_MAPPER_NAME = "FindDatasetMapper"
    cfg.INPUT.FIND.NUM_CONCEPTS = 4
    cfg.INPUT.FIND.NUM_NEGATIVES = -1
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MIN_SIZE_TEST = (64,), 64
    train, test = build_mapper(cfg, is_train=True), build_mapper(cfg, is_train=False)
    at_cap = train(_crowded_dict(tmp_path, 200))["find_categories"].tolist()
    assert at_cap == [1, 2, 0, 3]
    over = train(_crowded_dict(tmp_path, 201))
    # the crowded concept is neither a positive nor a presence negative; its objects stay in the image
    assert over["find_categories"].tolist() == [2, 0, 3] and len(over["instances"]) == 202
    assert test(_crowded_dict(tmp_path, 201))["find_categories"].tolist() == [1, 2, 0, 3]
    cfg.INPUT.FIND.MAX_OBJECTS_PER_FIND = -1
    assert build_mapper(cfg, is_train=True)(_crowded_dict(tmp_path, 201))["find_categories"].tolist() == [1, 2, 0, 3]


def test_bad_exports_are_one_line_errors(tmp_path, export):
    with pytest.raises(DatasetError, match="Roboflow export folder not found"):
        register_roboflow_coco("_rf_missing", str(tmp_path / "nowhere"))
    os.makedirs(tmp_path / "empty" / "train")
    with pytest.raises(DatasetError, match=r"no Roboflow split found \(expected train/_annotations.coco.json"):
        register_roboflow_coco("_rf_empty", str(tmp_path / "empty"))
    root = write_roboflow_shapes(str(tmp_path / "bad"), num_train=2, num_valid=1, num_test=1, image_size=48)
    path = os.path.join(root, "train", "_annotations.coco.json")
    with open(path) as f:
        data = json.load(f)
    data["annotations"][1]["category_id"] = 42
    with open(path, "w") as f:
        json.dump(data, f)
    register_roboflow_coco("_rf_bad", root)
    with pytest.raises(DatasetError, match=rf"^{path}: image id \d+ annotation id 1: unknown category_id 42") as e:
        DatasetCatalog.get("_rf_bad_train")
    assert "\n" not in str(e.value)
    # splits must share their categories
    path = os.path.join(root, "test", "_annotations.coco.json")
    with open(path) as f:
        data = json.load(f)
    data["categories"][1]["name"] = "disc"
    with open(path, "w") as f:
        json.dump(data, f)
    DatasetCatalog.get("_rf_bad_valid")
    with pytest.raises(DatasetError, match="categories .* differ from those of _rf_bad_valid"):
        DatasetCatalog.get("_rf_bad_test")


def test_tool_writes_the_layout(tmp_path):
    out = tmp_path / "tool"
    cmd = [sys.executable, os.path.join(ROOT, "tools", "write_roboflow_shapes.py"), "--output-dir", str(out)]
    cmd += ["--num-train", "2", "--num-valid", "1", "--num-test", "1", "--image-size", "48", "--boxes-only"]
    subprocess.run(cmd, check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    for split in ("train", "valid", "test"):
        with open(out / split / "_annotations.coco.json") as f:
            data = json.load(f)
        assert all(a["segmentation"] == [] for a in data["annotations"])
