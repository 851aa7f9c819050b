"""DAVIS-style J / F / J&F: hand-made masks, the DAVIS frame conventions, the evaluator API with
dataset GT lookup, and the copy-first-frame baseline on the moving shapes."""

import json

import numpy as np
import pytest
import torch

from segtrain.config import get_cfg
from segtrain.data import DatasetCatalog
from segtrain.data.datasets.shapes_video import register_shapes_video
from segtrain.evaluation import EVALUATOR_TYPE_TO_NAME, build_evaluator
from segtrain.evaluation.video_evaluation import (
    VideoEvaluator,
    copy_first_frame_prediction,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    evaluate_copy_first_frame_baseline,
    seg2bmap,
    video_gt_masks,
)
from segtrain.utils.errors import DatasetError

S = 64


def square(y, x, size=10, s=S):
    m = np.zeros((s, s), bool)
    m[y : y + size, x : x + size] = True
    return m


def test_j_on_hand_made_masks():
    a = square(10, 10)
    assert db_eval_iou(a, a) == 1.0
    assert db_eval_iou(a, square(40, 40)) == 0.0
    # shifted by 2 px: intersection 10 * 8 = 80, union 100 + 100 - 80 = 120
    assert db_eval_iou(a, square(10, 12)) == pytest.approx(80 / 120)
    empty = np.zeros((S, S), bool)
    assert db_eval_iou(empty, empty) == 1.0  # DAVIS: both empty is a perfect frame
    assert db_eval_iou(a, empty) == 0.0 and db_eval_iou(empty, a) == 0.0
    j = db_eval_iou(np.stack([a, a, empty]), torch.from_numpy(np.stack([a, square(10, 12), a])))
    assert j.shape == (3,) and j.tolist() == pytest.approx([1.0, 2 / 3, 0.0])


def test_boundary_map_is_davis():
    b = seg2bmap(square(10, 10))
    # one pixel wide: the right/bottom foreground edge and the left/top background edge
    assert b[9, 9:20].all() and b[9:20, 9].all() and b[19, 10:20].all() and b[10:20, 19].all()
    assert b.sum() == 40 and not b[12:18, 12:18].any()


def test_f_on_hand_made_masks():
    a = square(10, 10)
    assert db_eval_boundary(a, a) == 1.0
    assert db_eval_boundary(a, square(40, 40)) == 0.0
    empty = np.zeros((S, S), bool)
    assert db_eval_boundary(empty, empty) == 1.0
    assert db_eval_boundary(a, empty) == 0.0 and db_eval_boundary(empty, a) == 0.0
    # default tolerance on 64x64: ceil(0.008 * 90.5) = 1 px, so a 1-px shift is fully matched
    assert db_eval_boundary(a, square(10, 11)) == 1.0
    # GT: left half (boundary = column 31); prediction: columns 0..34 (boundary = column 34), 3 px away
    gt = np.zeros((S, S), bool)
    gt[:, :32] = True
    pred = np.zeros((S, S), bool)
    pred[:, :35] = True
    assert seg2bmap(gt)[:, 31].all() and seg2bmap(gt).sum() == S
    assert db_eval_boundary(gt, pred, bound_th=2) == 0.0  # outside the tolerance: P = R = 0
    assert db_eval_boundary(gt, pred, bound_th=3) == 1.0  # inside it: P = R = 1
    assert db_eval_iou(gt, pred) == pytest.approx(32 / 35)
    # lower half of the prediction's edge moved 8 px right. Prediction boundary: column 31 rows
    # 0-31 (32 px), the step on row 31 columns 32-39 (8 px), column 39 rows 32-63 (32 px) = 72.
    # Within 3 px of the GT: 32 + 3 step pixels = 35 of 72 (precision); GT pixels within 3 px of
    # the prediction: rows 0-31 + rows 32-34 (near the step) = 35 of 64 (recall).
    # F = 2PR / (P + R) = 2 * 35 / (72 + 64)
    half = gt.copy()
    half[32:, :40] = True
    assert seg2bmap(half).sum() == 72
    f = float(db_eval_boundary(gt, half, bound_th=3))
    assert f == pytest.approx(70 / 136) and f == pytest.approx(_brute_force_f(gt, half, 3))


def _brute_force_f(gt, pred, r):
    """F from pairwise distances between boundary pixels (a disk of radius r)."""
    gb, pb = np.argwhere(seg2bmap(gt)), np.argwhere(seg2bmap(pred))
    d = np.sqrt(((gb[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    precision = (d.min(axis=0) <= r).mean()
    recall = (d.min(axis=1) <= r).mean()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_f_matches_brute_force_on_random_blobs():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48]
    for _ in range(5):

        def blob():
            cy, cx, ry, rx = rng.uniform(15, 33), rng.uniform(15, 33), rng.uniform(5, 12), rng.uniform(5, 12)
            return (yy - cy) ** 2 / ry**2 + (xx - cx) ** 2 / rx**2 <= 1

        g, p = blob(), blob()
        for r in (1, 2, 4):
            assert float(db_eval_boundary(g, p, bound_th=r)) == pytest.approx(_brute_force_f(g, p, r))


def test_statistics():
    mean, recall, decay = db_statistics(np.array([1.0, 1.0, 0.0, 0.0]))
    assert (mean, recall, decay) == (0.5, 0.5, 1.0)


def _video_inputs():
    """4 frames, 2 objects: a square moving right by 2 px/frame, and one appearing at frame 2."""
    gt = np.zeros((4, 2, S, S), bool)
    for t in range(4):
        gt[t, 0] = square(10, 10 + 2 * t)
        if t >= 2:
            gt[t, 1] = square(40, 40)
    return gt, [7, 9]


def test_evaluator_perfect_partial_and_missing():
    gt, ids = _video_inputs()
    ev = VideoEvaluator(dataset_name=None, distributed=False)
    ev.reset()
    inp = {"video_id": "v", "gt_masks": gt, "gt_obj_ids": ids}
    wrong_ends = gt.copy()
    wrong_ends[[0, 3]] = False  # the first and last frames are not scored (DAVIS)
    ev.process([inp], [{"pred_masks": torch.from_numpy(wrong_ends), "obj_ids": torch.tensor(ids)}])
    res = ev.evaluate()["video"]
    assert res["J&F"] == pytest.approx(100) and res["J"] == pytest.approx(100) and res["F"] == pytest.approx(100)
    assert res["num_objects"] == 2 and res["num_videos"] == 1

    # object 7 copied from frame 0: J on frames 1, 2 = 80/120 and 60/140; object 9 missing: J = 1 then 0
    ev.reset()
    ev.process([inp], [{"pred_masks": {7: np.repeat(gt[:1, 0], 4, axis=0), 12345: gt[:, 1]}}])
    res = ev.evaluate()["video"]
    j7 = (80 / 120 + 60 / 140) / 2
    assert res["J"] == pytest.approx(100 * (j7 + 0.5) / 2)

    ev2 = VideoEvaluator(dataset_name=None, distributed=False, skip_first_last=False)
    ev2.process([inp], [{"pred_masks": wrong_ends, "obj_ids": ids}])
    assert ev2.evaluate()["video"]["J"] < 100

    with pytest.raises(DatasetError, match=r"video id v object id 7: predicted masks are \[4, 32, 32\]"):
        ev.process([inp], [{"pred_masks": np.zeros((4, 2, 32, 32), bool), "obj_ids": ids}])
    with pytest.raises(DatasetError, match="needs 'obj_ids'"):
        ev.process([inp], [{"pred_masks": np.zeros((4, 2, S, S), bool)}])


def test_extra_prompt_kinds_are_scored_apart(tmp_path):
    """pred_masks_by_prompt (MODEL.SAM2.TEST.EXTRA_PROMPTS) gives one result group per kind."""
    gt, ids = _video_inputs()
    ev = VideoEvaluator(dataset_name=None, distributed=False, output_dir=str(tmp_path))
    ev.reset()
    inp = {"video_id": "v", "gt_masks": gt, "gt_obj_ids": ids}
    empty = np.zeros_like(gt)
    ev.process([inp], [{"pred_masks": gt, "obj_ids": ids, "pred_masks_by_prompt": {"box": empty, "point": gt}}])
    res = ev.evaluate()
    assert list(res) == ["video", "video_box", "video_point"]
    assert res["video"]["J&F"] == pytest.approx(100) and res["video_point"]["J&F"] == pytest.approx(100)
    # all-empty predictions: object 9 is absent on frame 1 (J = 1 there), so J = (0 + 0.5) / 2 per object mean
    assert res["video_box"]["J"] == pytest.approx(100 * (0 + 0.5) / 2)
    assert res["video_box"]["num_objects"] == 2
    dumped = json.load(open(tmp_path / "video_metrics.json"))
    assert dumped["overall"]["J&F"] == pytest.approx(100) and sorted(dumped["by_prompt"]) == [
        "video_box",
        "video_point",
    ]


def test_copy_first_frame_prediction():
    gt, _ = _video_inputs()
    pred = copy_first_frame_prediction(gt)
    assert (pred[:, 0] == gt[0, 0]).all()
    assert not pred[:2, 1].any() and (pred[2:, 1] == gt[2, 1]).all()  # starts where the object appears


@pytest.fixture
def tiny_shapes_video(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGTRAIN_DATASETS", str(tmp_path))
    register_shapes_video(str(tmp_path), num_train=2, num_val=6, num_frames=8, image_size=64)
    yield "shapes_video_val"
    monkeypatch.delenv("SEGTRAIN_DATASETS")
    register_shapes_video()


def test_evaluator_from_config_with_dataset_gt(tiny_shapes_video, tmp_path):
    assert EVALUATOR_TYPE_TO_NAME["video"] == "VideoEvaluator"
    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)  # the default output folder (OUTPUT_DIR/inference), not ./output
    cfg.DATASETS.SHAPES_VIDEO.NUM_TRAIN, cfg.DATASETS.SHAPES_VIDEO.NUM_VAL = 2, 6
    cfg.DATASETS.SHAPES_VIDEO.NUM_FRAMES, cfg.DATASETS.SHAPES_VIDEO.IMAGE_SIZE = 8, 64
    ev = build_evaluator(cfg, tiny_shapes_video, output_dir=None)
    assert isinstance(ev, VideoEvaluator)
    ev.reset()
    for video in DatasetCatalog.get(tiny_shapes_video):
        ids, gt = video_gt_masks(video)
        inp = {"video_id": video["video_id"], "frame_indices": torch.arange(8)}
        ev.process([inp], [{"pred_masks": torch.from_numpy(gt), "obj_ids": ids}])
    res = ev.evaluate()["video"]
    assert res["J&F"] == pytest.approx(100) and res["num_videos"] == 6
    assert (tmp_path / "inference" / "video_metrics.json").is_file()


def test_copy_first_frame_baseline_is_beatable(tiny_shapes_video, tmp_path):
    res = evaluate_copy_first_frame_baseline(tiny_shapes_video, output_dir=str(tmp_path / "out"))["video"]
    assert 0 < res["J&F"] < 90 and 0 < res["J"] < 90 and 0 < res["F"] < 90
    assert (tmp_path / "out" / "video_metrics.json").is_file()
