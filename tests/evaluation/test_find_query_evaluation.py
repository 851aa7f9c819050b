"""FindEvaluator on a find-query (SA-Co-style) dataset: one COCO image per image-query pair,
converted from the dataset dicts; a pair that is not instance-exhaustive is out of the SA-Co
metrics."""

import json

import cv2
import numpy as np
import pytest
import torch

from segtrain.data import DatasetCatalog, register_find_query_json
from segtrain.evaluation.find_evaluation import FindEvaluator
from segtrain.structures import Instances

H, W = 40, 50


def test_pairs_of_a_find_query_dataset(tmp_path):
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((H, W, 3), np.uint8))
    data = {
        "images": [
            {"id": 10, "file_name": "a.jpg", "height": H, "width": W, "text_input": "red mug"},
            {"id": 11, "file_name": "a.jpg", "height": H, "width": W, "text_input": "a cat"},
            {
                "id": 12,
                "file_name": "a.jpg",
                "height": H,
                "width": W,
                "text_input": "red mug",
                "is_instance_exhaustive": 0,
            },
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "bbox": [0.1, 0.25, 0.2, 0.5], "iscrowd": 0},
            {"id": 2, "image_id": 10, "bbox": [0.5, 0.0, 0.4, 0.25], "iscrowd": 1},
            {"id": 3, "image_id": 12, "bbox": [0.0, 0.0, 0.5, 0.5]},
        ],
    }
    (tmp_path / "q.json").write_text(json.dumps(data))
    name = "_test_find_query_eval"
    register_find_query_json(name, str(tmp_path / "q.json"), str(tmp_path))
    dicts = DatasetCatalog.get(name)
    ev = FindEvaluator(name, distributed=False)
    ev.reset()
    # pair 10: its mug found (IL_TP); pair 11: a cat "found" on an image without one (IL_FP);
    # pair 12: its mug missed, but the pair is not exhaustive
    dets = {10: ([5.0, 10.0, 15.0, 30.0], 0.9), 11: ([20.0, 20.0, 30.0, 30.0], 0.8)}
    for d in dicts:
        concept = d["find_categories"][0]
        box, score = dets.get(d["image_id"], (None, None))
        inst = Instances(
            (H, W),
            pred_boxes=torch.tensor([box] if box else [], dtype=torch.float32).reshape(-1, 4),
            scores=torch.tensor([score] if box else [], dtype=torch.float32),
            pred_classes=torch.full((1 if box else 0,), concept, dtype=torch.int64),
        )
        finds = {"categories": torch.tensor([concept]), "presence_scores": torch.tensor([0.7])}
        inp = {k: d[k] for k in ("image_id", "find_categories", "find_is_exhaustive")}
        ev.process([inp], [{"instances": inst, "finds": finds}])
    res = ev.evaluate()
    m = res["cgF1_bbox"]
    assert (m["num_pairs"], m["IL_TP"], m["IL_FP"], m["IL_TN"], m["IL_FN"]) == (2, 1, 1, 0, 0)
    assert m["positive_micro_F1"] == pytest.approx(100.0, abs=0.05)  # the crowd mug is no pair's ground truth
    # "red mug": 1 of its 2 instances found first -> precision 1 up to recall 0.5 (51 of 101 recall points)
    assert res["bbox"]["AP"] == pytest.approx(100 * 51 / 101)
    assert "segm" not in res and res["presence"]["num_finds"] == 3
