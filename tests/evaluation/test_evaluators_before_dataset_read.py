"""Evaluators built before their dataset is first read (``register_coco_instances`` fills the
class names and the category mapping only then) read the metadata when they evaluate."""

import json

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from segtrain.data import MetadataCatalog, register_coco_instances
from segtrain.evaluation import PanopticEvaluator, SemSegEvaluator


@pytest.fixture
def unread_coco(tmp_path):
    """One 8x8 image, categories {3: a, 7: b}, one object of b; registered, not read yet."""
    mask = np.zeros((8, 8), np.uint8, order="F")
    mask[2:6, 1:5] = 1
    rle = mask_util.encode(mask)
    rle["counts"] = rle["counts"].decode()
    coco = {
        "images": [{"id": 1, "width": 8, "height": 8, "file_name": "a.jpg"}],
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "segmentation": rle,
                "area": 16.0,
                "bbox": [1.0, 2.0, 4.0, 4.0],
                "iscrowd": 0,
            }
        ],
    }
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    name = "_test_unread_coco"
    register_coco_instances(name, {}, str(tmp_path / "gt.json"), str(tmp_path / "images"))
    assert MetadataCatalog.get(name).get("thing_classes") is None
    return name, mask.astype(bool)


def test_sem_seg_evaluator(unread_coco):
    name, mask = unread_coco
    ev = SemSegEvaluator(name, distributed=False)
    ev.reset()
    logits = torch.zeros(2, 8, 8)
    logits[1][torch.from_numpy(mask)] = 1.0  # class b (contiguous 1) on the object, a elsewhere
    ev.process([{"image_id": 1}], [{"sem_seg": logits}])
    res = ev.evaluate()["sem_seg"]
    assert res["IoU-b"] == pytest.approx(100.0) and res["pACC"] == pytest.approx(100.0)


def test_panoptic_evaluator(unread_coco):
    name, mask = unread_coco
    ev = PanopticEvaluator(name, distributed=False)
    ev.reset()
    seg = np.zeros((8, 8), np.int32)
    seg[mask] = 5
    ev.process([{"image_id": 1}], [{"panoptic_seg": (torch.from_numpy(seg), [{"id": 5, "category_id": 1}])}])
    res = ev.evaluate()["panoptic_seg"]
    assert res["PQ-b"] == pytest.approx(100.0) and res["PQ"] == pytest.approx(100.0)
