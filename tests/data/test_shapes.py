"""The generated shapes dataset: deterministic, annotations equal to the drawn pixels,
parameters in the folder name, concurrent generation safe, registration from the config."""

import json
import os
import threading

import cv2
import numpy as np

from segtrain.data import DatasetCatalog, MetadataCatalog, register_shapes_from_cfg
from segtrain.data.datasets.shapes import SHAPES_CLASSES, ensure_shapes, render_shapes_image, shapes_dir
from segtrain.structures import segmentation_to_bitmask


def _files(folder):
    out = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = f.read()
    return out


def test_generation_is_deterministic(tmp_path):
    a = ensure_shapes(str(tmp_path / "a"), "train", 6, 64)
    b = ensure_shapes(str(tmp_path / "b"), "train", 6, 64)
    assert a.endswith(os.path.join("shapes", "train_n6_s64"))
    fa, fb = _files(a), _files(b)
    assert len(fa) == 7 and fa == fb
    # the split changes the content
    v = ensure_shapes(str(tmp_path / "a"), "val", 6, 64)
    assert _files(v)["images/000000.jpg"] != fa["images/000000.jpg"]


def test_annotations_equal_visible_pixels():
    n_occluded = n_polygon = 0
    for i in range(20):
        rgb, instances, ids = render_shapes_image(np.random.default_rng([3, i]), 96)
        assert rgb.shape == (96, 96, 3) and rgb.dtype == np.uint8
        assert len(instances) <= 8
        for k, inst in enumerate(instances):
            visible = ids == k
            assert visible.sum() >= 16
            if inst["occluded"]:
                n_occluded += 1
            else:
                n_polygon += 1
                # an unoccluded shape's polygon rasterizes to exactly its drawn pixels
                poly_mask = segmentation_to_bitmask([inst["polygon"]], 96, 96)
                assert np.array_equal(poly_mask, visible)
    assert n_occluded > 0 and n_polygon > 0


def test_json_matches_images(tmp_path):
    folder = ensure_shapes(str(tmp_path), "val", 8, 64)
    data = json.load(open(os.path.join(folder, "annotations.json")))
    assert [c["name"] for c in data["categories"]] == SHAPES_CLASSES
    kinds = set()
    by_image = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
        kinds.add("rle" if isinstance(a["segmentation"], dict) else "polygon")
    for img in data["images"]:
        pix = cv2.imread(os.path.join(folder, "images", img["file_name"]))
        assert pix.shape == (64, 64, 3)
        union = np.zeros((64, 64), dtype=int)
        for a in by_image.get(img["id"], []):
            m = segmentation_to_bitmask(a["segmentation"], 64, 64)
            union += m
            assert m.sum() == a["area"]
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            # each visible region is one roughly uniform colour (noise + JPEG only)
            inner = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            if inner.sum() > 10:
                assert pix[inner].astype(float).std(axis=0).max() < 20
        assert union.max() <= 1  # visible masks never overlap
    assert kinds == {"rle", "polygon"}


def test_concurrent_generation_is_safe(tmp_path):
    results, errors = [], []

    def run():
        try:
            results.append(ensure_shapes(str(tmp_path), "train", 5, 48))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert os.listdir(os.path.join(tmp_path, "shapes")) == ["train_n5_s48"]  # no temp folders left
    assert len(os.listdir(os.path.join(results[0], "images"))) == 5


def test_register_from_cfg_uses_config_sizes(tiny_cfg, shapes_root):
    tiny_cfg.DATASETS.SHAPES.NUM_VAL = 3
    tiny_cfg.DATASETS.SHAPES.IMAGE_SIZE = 48
    register_shapes_from_cfg(tiny_cfg)
    dicts = DatasetCatalog.get("shapes_val")
    assert len(dicts) == 3 and dicts[0]["height"] == 48
    assert os.path.isdir(shapes_dir(str(shapes_root), "val", 3, 48))
    meta = MetadataCatalog.get("shapes_val")
    assert meta.thing_classes == SHAPES_CLASSES and len(meta.thing_colors) == len(SHAPES_CLASSES)
    assert meta.evaluator_type == "coco" and os.path.isfile(meta.json_file)
    assert all(0 <= a["category_id"] < len(SHAPES_CLASSES) for d in dicts for a in d["annotations"])
