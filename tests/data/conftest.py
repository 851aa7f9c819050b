"""Fixtures for data tests: a private ``$SEGTRAIN_DATASETS`` with tiny shapes sizes, a tiny
config, and a factory that writes small COCO files with real images."""

import copy
import json

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from segtrain.config import get_cfg
from segtrain.data.datasets.builtin import register_shapes

TINY = {"num_train": 8, "num_val": 4, "image_size": 64}


@pytest.fixture
def shapes_root(tmp_path, monkeypatch):
    """``$SEGTRAIN_DATASETS`` in tmp_path and shapes registered there at tiny sizes;
    the registration the test found is put back afterwards (tests/conftest.py)."""
    root = tmp_path / "datasets"
    monkeypatch.setenv("SEGTRAIN_DATASETS", str(root))
    register_shapes(str(root), **TINY)
    return root


@pytest.fixture
def tiny_cfg(shapes_root):
    cfg = get_cfg()
    cfg.DATASETS.SHAPES.NUM_TRAIN = TINY["num_train"]
    cfg.DATASETS.SHAPES.NUM_VAL = TINY["num_val"]
    cfg.DATASETS.SHAPES.IMAGE_SIZE = TINY["image_size"]
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SEED = 7
    return cfg


H, W = 40, 50
SQUARE = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def base_coco():
    """Two 40x50 images; categories 5 ("a") and 9 ("b"); a polygon, a compressed RLE,
    an uncompressed RLE and a crowd RLE."""
    blob = np.zeros((H, W), bool)
    blob[5:20, 25:45] = True
    right = np.zeros((H, W), bool)
    right[20:35, 30:48] = True
    crowd = np.zeros((H, W), bool)
    crowd[0:5, 0:10] = True
    uncompressed = {"size": [H, W], "counts": []}
    # column-major run lengths of `right`, starting with a run of zeros
    flat = right.T.reshape(-1)
    runs, cur, n = [], False, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    uncompressed["counts"] = runs
    return {
        "images": [
            {"id": 1, "file_name": "a.jpg", "height": H, "width": W},
            {"id": 2, "file_name": "b.png", "height": H, "width": W},
        ],
        "annotations": [
            {
                "id": 11,
                "image_id": 1,
                "category_id": 5,
                "segmentation": [SQUARE],
                "bbox": [10, 10, 20, 20],
                "iscrowd": 0,
            },
            {"id": 12, "image_id": 1, "category_id": 9, "segmentation": _rle(blob), "iscrowd": 0},
            {"id": 21, "image_id": 2, "category_id": 9, "segmentation": uncompressed, "iscrowd": 0},
            {"id": 22, "image_id": 2, "category_id": 5, "segmentation": _rle(crowd), "iscrowd": 1},
        ],
        "categories": [{"id": 9, "name": "b"}, {"id": 5, "name": "a"}],
    }


@pytest.fixture
def coco_factory(tmp_path):
    """``make(data=None, edit=None) -> (json_file, image_root)``: writes the images that
    ``data`` lists (random pixels) and the JSON; ``edit(data)`` may change a deep copy first."""
    counter = {"n": 0}

    def make(data=None, edit=None, write_images=True):
        counter["n"] += 1
        d = tmp_path / f"coco{counter['n']}"
        (d / "images").mkdir(parents=True)
        data = copy.deepcopy(data if data is not None else base_coco())
        if edit is not None:
            edit(data)
        rng = np.random.default_rng(0)
        if write_images:
            for img in data["images"]:
                if isinstance(img, dict) and "file_name" in img:
                    pix = rng.integers(0, 255, size=(H, W, 3), dtype=np.uint8)
                    cv2.imwrite(str(d / "images" / img["file_name"]), pix)
        json_file = d / "instances.json"
        json_file.write_text(json.dumps(data))
        return str(json_file), str(d / "images")

    return make
