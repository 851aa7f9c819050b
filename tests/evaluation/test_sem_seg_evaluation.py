"""SemSegEvaluator on a hand-computed 2-class example, GT derived from instances, errors."""

import math

import cv2
import numpy as np
import pytest
import torch

from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
from segtrain.evaluation import SemSegEvaluator
from segtrain.evaluation.sem_seg_evaluation import semantic_gt_from_annotations
from segtrain.utils.errors import DatasetError

GT = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 255], [0, 0, 0, 255]], dtype=np.uint8)
PRED = np.array([[0, 0, 0, 1], [0, 1, 1, 1], [0, 0, 1, 0], [1, 0, 0, 1]])


@pytest.fixture
def two_class_dataset(tmp_path):
    path = tmp_path / "gt.png"
    cv2.imwrite(str(path), GT)
    name = "_test_semseg_2class"
    DatasetCatalog.register(
        name, lambda: [{"file_name": "img.png", "image_id": 7, "height": 4, "width": 4, "sem_seg_file_name": str(path)}]
    )
    MetadataCatalog.get(name).set(stuff_classes=["a", "b"], ignore_label=255, evaluator_type="sem_seg")
    return name


def _logits(labels, k=2):
    return (
        torch.nn.functional.one_hot(torch.as_tensor(np.asarray(labels), dtype=torch.int64), k).permute(2, 0, 1).float()
    )


def test_two_class_metrics_by_hand(two_class_dataset, tmp_path):
    """Class a: 9 GT px, 7 right, 1 b-pixel predicted as a -> IoU 7/10, acc 7/9.
    Class b: 5 GT px, 4 right, 2 a-pixels predicted as b -> IoU 4/7, acc 4/5.
    The two ignored pixels count nowhere (their predictions included)."""
    ev = SemSegEvaluator(two_class_dataset, output_dir=str(tmp_path))
    ev.reset()
    ev.process([{"image_id": 7, "file_name": "img.png"}], [{"sem_seg": _logits(PRED)}])
    res = ev.evaluate()["sem_seg"]
    iou = [7 / 10, 4 / 7]
    assert res["IoU-a"] == pytest.approx(100 * iou[0]) and res["IoU-b"] == pytest.approx(100 * iou[1])
    assert res["mIoU"] == pytest.approx(100 * sum(iou) / 2)
    assert res["fwIoU"] == pytest.approx(100 * (9 / 14 * iou[0] + 5 / 14 * iou[1]))
    assert res["ACC-a"] == pytest.approx(100 * 7 / 9) and res["ACC-b"] == pytest.approx(100 * 4 / 5)
    assert res["mACC"] == pytest.approx(100 * (7 / 9 + 4 / 5) / 2)
    assert res["pACC"] == pytest.approx(100 * 11 / 14)
    assert (tmp_path / "sem_seg_evaluation.json").exists()
    ev.reset()  # a second pass starts from zero
    ev.process([{"image_id": 7}], [{"sem_seg": _logits(np.where(GT == 255, 0, GT))}])
    assert ev.evaluate()["sem_seg"]["mIoU"] == pytest.approx(100.0)


def test_absent_class_is_nan_and_left_out(two_class_dataset):
    ev = SemSegEvaluator(two_class_dataset, num_classes=3)
    ev.reset()
    ev.process([{"image_id": 7}], [{"sem_seg": _logits(PRED, 3)}])
    res = ev.evaluate()["sem_seg"]
    assert math.isnan(res["IoU-2"])
    assert res["mIoU"] == pytest.approx(100 * (7 / 10 + 4 / 7) / 2)


def test_size_mismatch_and_unknown_image_are_one_line_errors(two_class_dataset):
    ev = SemSegEvaluator(two_class_dataset)
    with pytest.raises(DatasetError, match="prediction is 5x4 but the ground truth is 4x4"):
        ev.process([{"image_id": 7}], [{"sem_seg": torch.zeros(2, 5, 4)}])
    with pytest.raises(DatasetError, match="no dataset entry for image_id 8"):
        ev.process([{"image_id": 8, "file_name": "other.png"}], [{"sem_seg": torch.zeros(2, 4, 4)}])


def test_gt_from_instance_annotations():
    d = {
        "height": 6,
        "width": 6,
        "annotations": [
            {"category_id": 0, "segmentation": [[0, 0, 3, 0, 3, 3, 0, 3]], "iscrowd": 0},
            {"category_id": 1, "segmentation": [[2, 2, 5, 2, 5, 5, 2, 5]], "iscrowd": 0},
            {"category_id": 0, "segmentation": [[0, 4, 2, 4, 2, 6, 0, 6]], "iscrowd": 1},
        ],
    }
    gt = semantic_gt_from_annotations(d)
    assert gt[0, 0] == 0 and gt[4, 4] == 1
    assert gt[2, 2] == 255  # claimed by both classes
    assert gt[5, 0] == 255 and gt[0, 5] == 255  # crowd, background


def test_instance_dataset_gt_as_prediction(tiny_coco, coco_tools):
    name, _, coco_dict = tiny_coco
    ev = SemSegEvaluator(name)
    ev.reset()
    for d in coco_tools.coco_to_dataset_dicts(coco_dict):
        gt = semantic_gt_from_annotations(d)
        ev.process([{"image_id": d["image_id"]}], [{"sem_seg": _logits(np.where(gt == 255, 0, gt), 3)}])
    res = ev.evaluate()["sem_seg"]
    assert res["mIoU"] == pytest.approx(100.0) and res["pACC"] == pytest.approx(100.0)
    assert set(k for k in res if k.startswith("IoU-")) == {f"IoU-{c}" for c in coco_tools.CLASSES}
