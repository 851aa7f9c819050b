"""The DAVIS protocol around the metrics: overlapping predictions merged into one label map as
the official VOS inference writes it (smallest id on top), the label maps written as indexed
PNGs, frames without annotation not scored."""

import numpy as np
import pytest
from PIL import Image

from segtrain.data.datasets import register_vos_folder, write_object_label_map
from segtrain.evaluation import VideoEvaluator
from segtrain.evaluation.video_label_maps import merge_object_masks, png_labels


def _masks():
    """Object 3 and object 7 overlap on columns 4-5 of every frame; [4, 8, 8] each."""
    a = np.zeros((4, 8, 8), bool)
    a[:, 2:6, 0:6] = True
    b = np.zeros_like(a)
    b[:, 2:6, 4:8] = True
    return a, b


def test_smallest_id_wins_where_objects_overlap():
    a, b = _masks()
    labels = merge_object_masks({7: b, 3: a}, [7, 3])  # positions: 7 -> 1, 3 -> 2
    assert (labels[:, 3, 4:6] == 2).all() and (labels[:, 3, 6:8] == 1).all() and (labels[:, 3, 0:4] == 2).all()
    assert png_labels([7, 3]) == [7, 3] and png_labels(["x", "y"]) == [1, 2] and png_labels([0, 300]) == [1, 2]


def _process(evaluator, gt_a, gt_b, pred_a, pred_b, **inp):
    evaluator.reset()
    gt = np.stack([gt_a, gt_b], axis=1)
    evaluator.process(
        [{"video_id": "v", "gt_masks": gt, "gt_obj_ids": [3, 7], **inp}],
        [{"pred_masks": np.stack([pred_a, pred_b], axis=1), "obj_ids": [3, 7]}],
    )
    return evaluator.evaluate()["video"]


def test_merged_predictions_are_scored_and_written_as_pngs(tmp_path):
    a, b = _masks()
    gt_b = b.copy()
    gt_b[:, :, 4:6] = False  # the GT gives the overlap to object 3
    merged = _process(VideoEvaluator(None, distributed=False, output_dir=str(tmp_path)), a, gt_b, a, b)
    raw = _process(VideoEvaluator(None, distributed=False, merge_overlaps=False), a, gt_b, a, b)
    assert merged["J"] == pytest.approx(100.0) and raw["J"] == pytest.approx(100 * (1 + 0.5) / 2)
    png = tmp_path / "video_predictions" / "v" / "00002.png"
    with Image.open(png) as im:
        assert im.mode == "P"
        values = np.array(im)
    assert (values[3, 0:6] == 3).all() and (values[3, 6:8] == 7).all() and (values[0] == 0).all()


def test_frames_without_annotation_are_not_scored(tmp_path):
    """A label-map video whose frame 2 has no PNG: the prediction there does not count."""
    size, length = 8, 5
    images, masks = tmp_path / "JPEGImages" / "v", tmp_path / "Annotations" / "v"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    gt = np.zeros((length, size, size), np.uint8)
    gt[:, 2:6, 2:6] = 1
    for t in range(length):
        Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(images / f"{t:05d}.jpg")
        if t != 2:
            write_object_label_map(str(masks / f"{t:05d}.png"), gt[t])
    register_vos_folder("protocol_vos", {}, str(tmp_path / "JPEGImages"), str(tmp_path / "Annotations"))
    evaluator = VideoEvaluator("protocol_vos", distributed=False, output_dir=str(tmp_path / "out"))
    evaluator.reset()
    pred = gt[:, None] == 1
    pred[2] = False  # wrong on the unannotated frame only
    evaluator.process([{"video_id": "v"}], [{"pred_masks": pred, "obj_ids": [1]}])
    res = evaluator.evaluate()["video"]
    assert res["J&F"] == pytest.approx(100.0)
    written = sorted(p.name for p in (tmp_path / "out" / "video_predictions" / "v").iterdir())
    assert written == [f"{t:05d}.png" for t in range(length)]  # every frame predicted is written
