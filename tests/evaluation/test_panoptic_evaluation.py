"""PanopticEvaluator: PQ / SQ / RQ on a hand-computed example (void, crowd, IoU exactly 0.5,
wrong class, stuff), GT derived from instances, the start-up check of the MaskFormer switch."""

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from segtrain.config import load_config
from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
from segtrain.engine.startup_check import check_config
from segtrain.evaluation import PanopticEvaluator, build_evaluator
from segtrain.evaluation.panoptic_evaluation import panoptic_gt_from_annotations, pq_image_stats
from segtrain.utils.errors import DatasetError

# 6x6 ground truth: 1 = "a" (8 px), 2 = "b" (4 px), 3 = "a" crowd (4 px), 4 = "sky" stuff (12 px), 0 = void
GT = np.array(
    [
        [1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0],
        [2, 2, 0, 0, 3, 3],
        [2, 2, 0, 0, 3, 3],
        [4, 4, 4, 4, 4, 4],
        [4, 4, 4, 4, 4, 4],
    ]
)
GT_INFO = [
    {"id": 1, "category_id": 0, "iscrowd": 0},
    {"id": 2, "category_id": 1, "iscrowd": 0},
    {"id": 3, "category_id": 0, "iscrowd": 1},
    {"id": 4, "category_id": 2, "iscrowd": 0},
]
# prediction: 1 "a" covers 6 px of GT 1 and 2 void px -> IoU 6 / (8 + 8 - 6 - 2) = 0.75, a TP;
# 2 "a" on GT "b" -> an FP of a and the FN of b; 3 "b" all on void and 4 "a" all on the "a" crowd
# -> ignored; 5 "sky" on half the sky -> IoU exactly 0.5, not a match: an FP and an FN of sky
PRED = np.array(
    [
        [1, 1, 1, 0, 1, 0],
        [1, 1, 1, 0, 1, 0],
        [2, 2, 3, 3, 4, 4],
        [2, 2, 3, 3, 4, 4],
        [5, 5, 5, 0, 0, 0],
        [5, 5, 5, 0, 0, 0],
    ]
)
PRED_INFO = [
    {"id": 1, "category_id": 0},
    {"id": 2, "category_id": 0},
    {"id": 3, "category_id": 1},
    {"id": 4, "category_id": 0},
    {"id": 5, "category_id": 2},
]


@pytest.fixture
def panoptic_dataset(tmp_path):
    path = tmp_path / "pan.png"
    rgb = np.stack([GT, np.zeros_like(GT), np.zeros_like(GT)], axis=-1).astype(np.uint8)
    cv2.imwrite(str(path), rgb[..., ::-1])  # OpenCV writes BGR
    name = "_test_panoptic_3class"
    DatasetCatalog.register(
        name,
        lambda: [
            {
                "file_name": "img.png",
                "image_id": 5,
                "height": 6,
                "width": 6,
                "pan_seg_file_name": str(path),
                "segments_info": GT_INFO,
            }
        ],
    )
    MetadataCatalog.get(name).set(
        stuff_classes=["a", "b", "sky"],
        thing_classes=["a", "b"],
        thing_dataset_id_to_contiguous_id={1: 0, 2: 1},
        evaluator_type="panoptic_seg",
    )
    return name


def test_image_statistics_by_hand():
    stats = pq_image_stats(GT, GT_INFO, PRED, PRED_INFO, num_classes=3)
    # columns TP, FP, FN, IoU sum
    np.testing.assert_allclose(stats, [[1, 1, 0, 0.75], [0, 0, 1, 0], [0, 1, 1, 0]])


def test_pq_sq_rq_by_hand(panoptic_dataset, tmp_path):
    """a: PQ 0.75 / 1.5 = 0.5, SQ 0.75, RQ 1 / 1.5; b and sky: 0. Things are a and b."""
    ev = PanopticEvaluator(panoptic_dataset, output_dir=str(tmp_path))
    ev.reset()
    ev.process([{"image_id": 5}], [{"panoptic_seg": (torch.as_tensor(PRED, dtype=torch.int32), PRED_INFO)}])
    res = ev.evaluate()["panoptic_seg"]
    assert res["PQ-a"] == pytest.approx(50.0) and res["PQ-b"] == 0.0 and res["PQ-sky"] == 0.0
    assert res["PQ"] == pytest.approx(50 / 3) and res["SQ"] == pytest.approx(25.0)
    assert res["RQ"] == pytest.approx(100 * (2 / 3) / 3)
    assert res["PQ_th"] == pytest.approx(25.0) and res["SQ_th"] == pytest.approx(37.5)
    assert res["PQ_st"] == 0.0 and res["num_categories"] == 3 and res["num_categories_st"] == 1
    assert (tmp_path / "panoptic_evaluation.json").exists()

    ev.reset()  # the ground truth itself scores 100 on every category
    perfect = np.where(GT == 3, 0, GT)
    ev.process([{"image_id": 5}], [{"panoptic_seg": (perfect, [dict(s) for s in GT_INFO if s["id"] != 3])}])
    res = ev.evaluate()["panoptic_seg"]
    assert res["PQ"] == pytest.approx(100.0) and res["SQ"] == pytest.approx(100.0) and res["RQ"] == pytest.approx(100.0)


def test_bad_predictions_are_one_line_errors(panoptic_dataset):
    ev = PanopticEvaluator(panoptic_dataset)
    with pytest.raises(DatasetError, match="segment ids \\[5\\] that are not in its segments_info"):
        ev.process([{"image_id": 5}], [{"panoptic_seg": (PRED, PRED_INFO[:4])}])
    with pytest.raises(DatasetError, match="prediction is 5x6 but the ground truth is 6x6"):
        ev.process([{"image_id": 5}], [{"panoptic_seg": (PRED[:5], PRED_INFO)}])
    with pytest.raises(DatasetError, match="no dataset entry for image_id 9"):
        ev.process([{"image_id": 9}], [{"panoptic_seg": (PRED, PRED_INFO)}])


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def test_ground_truth_from_instances_voids_overlaps_and_puts_crowd_under():
    m1 = np.zeros((4, 5), bool)
    m1[:2, :3] = True
    m2 = np.zeros((4, 5), bool)
    m2[1:3, 2:4] = True  # overlaps m1 at (1, 2)
    crowd = np.zeros((4, 5), bool)
    crowd[2:, :] = True
    d = {
        "height": 4,
        "width": 5,
        "annotations": [
            {"segmentation": _rle(m1), "category_id": 0},
            {"segmentation": _rle(m2), "category_id": 1},
            {"segmentation": _rle(crowd), "category_id": 0, "iscrowd": 1},
        ],
    }
    seg, info = panoptic_gt_from_annotations(d)
    assert sorted((s["id"], s["category_id"], s["iscrowd"]) for s in info) == [(1, 0, 0), (2, 1, 0), (3, 0, 1)]
    assert seg[1, 2] == 0  # two instances: void
    assert (seg[m1 & ~m2] == 1).all() and (seg[m2 & ~m1] == 2).all()
    assert (seg[crowd & ~m2] == 3).all() and seg[0, 4] == 0  # crowd under the instances; background void


def test_evaluator_type_and_maskformer_switch_checked_at_start_up(panoptic_dataset):
    cfg = load_config(
        "projects/m2f/tiny.yaml", ["DATASETS.TEST", f"('{panoptic_dataset}',)", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"]
    )
    assert isinstance(build_evaluator(cfg, panoptic_dataset), PanopticEvaluator)
    problems = [p for p in check_config(cfg, train=False) if "PanopticEvaluator" in p]
    assert len(problems) == 1 and "MODEL.MASK_FORMER.TEST.PANOPTIC_ON False" in problems[0]
    cfg.defrost()
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = True
    assert not [p for p in check_config(cfg, train=False) if "PanopticEvaluator" in p]


def test_missing_output_is_a_one_line_error(panoptic_dataset):
    with pytest.raises(
        DatasetError, match="outputs have no 'panoptic_seg' \\(only \\['instances'\\]\\).*PANOPTIC_ON True"
    ):
        PanopticEvaluator(panoptic_dataset).process([{"image_id": 5}], [{"instances": None}])
