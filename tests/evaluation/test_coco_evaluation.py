"""COCOEvaluator: GT as predictions gives AP 100; perturbed predictions match COCOeval run by
hand on the saved results file; recall@0.5score matches a brute-force count; edge cases."""

import contextlib
import copy
import io
import json
import logging
import math

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segtrain.evaluation import COCOEvaluator
from segtrain.evaluation.coco_evaluation import RECALL_KEY
from segtrain.structures import Instances
from segtrain.utils.errors import ConfigError, DatasetError

TO_CONTIG = {3: 0, 7: 1, 11: 2}


def _run(evaluator, inputs, outputs):
    evaluator.reset()
    for i in range(len(inputs)):
        evaluator.process(inputs[i : i + 1], outputs[i : i + 1])
    return evaluator.evaluate()


def _assert_perfect(res, classes):
    for task in ("bbox", "segm"):
        for k in ["AP", "AP50", "AP75", RECALL_KEY] + [f"AP-{c}" for c in classes]:
            assert res[task][k] == pytest.approx(100.0), (task, k)


def test_ground_truth_as_predictions_gives_ap_100(tiny_coco, coco_tools, tmp_path, caplog):
    name, json_file, _ = tiny_coco
    inputs, outputs = coco_tools.gt_as_outputs(json_file, TO_CONTIG)
    ev = COCOEvaluator(name, output_dir=str(tmp_path / "out"))
    with caplog.at_level(logging.INFO, logger="segtrain.evaluation.coco_evaluation"):
        res = _run(ev, inputs, outputs)
    assert list(res) == ["bbox", "segm"]
    _assert_perfect(res, coco_tools.CLASSES)
    assert res["segm"]["APs"] == pytest.approx(100.0)
    assert math.isnan(res["segm"]["APl"])  # no large objects in 64x80 images
    assert "Per-category segm AP" in caplog.text and "triangle" in caplog.text
    saved = json.loads((tmp_path / "out" / "coco_instances_results.json").read_text())
    assert len(saved) == 7 and {r["category_id"] for r in saved} == {3, 7, 11}


def test_dataset_without_json_is_converted(coco_tools, tmp_path):

    coco_dict = coco_tools.make_coco_dict()
    name = "_test_tiny_coco_nojson"
    coco_tools.register(name, coco_dict)
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(coco_dict))
    inputs, outputs = coco_tools.gt_as_outputs(str(gt_path), TO_CONTIG)
    ev = COCOEvaluator(name, output_dir=str(tmp_path / "out"), distributed=False)
    res = _run(ev, inputs, outputs)
    _assert_perfect(res, coco_tools.CLASSES)
    cached = json.loads((tmp_path / "out" / f"{name}_coco_format.json").read_text())
    assert sorted(c["id"] for c in cached["categories"]) == [3, 7, 11]
    assert len(cached["annotations"]) == 8


def _perturbed_outputs(json_file, seed=0):
    """GT with jittered boxes, eroded masks, random scores, some deleted, plus false positives."""
    rng = np.random.default_rng(seed)
    coco = COCO(json_file)
    inputs, outputs = [], []
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        h, w = info["height"], info["width"]
        masks, boxes, classes = [], [], []
        for a in coco.imgToAnns[img_id]:
            if a["iscrowd"] or rng.random() < 0.2:
                continue
            m = coco.annToMask(a)
            it = int(rng.integers(0, 3))
            if it:
                m = cv2.erode(m, np.ones((3, 3), np.uint8), iterations=it)
            x, y, bw, bh = a["bbox"]
            boxes.append(np.array([x, y, x + bw, y + bh]) + rng.uniform(-3, 3, 4))
            masks.append(m.astype(bool))
            classes.append(TO_CONTIG[a["category_id"]])
        for _ in range(2):  # false positives
            m = np.zeros((h, w), bool)
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            m[y0 : y0 + 15, x0 : x0 + 18] = True
            masks.append(m)
            boxes.append(np.array([x0, y0, x0 + 18, y0 + 15], float))
            classes.append(int(rng.integers(0, 3)))
        inst = Instances(
            (h, w),
            pred_masks=torch.as_tensor(np.stack(masks)),
            pred_boxes=torch.as_tensor(np.stack(boxes), dtype=torch.float32),
            scores=torch.as_tensor(rng.uniform(0.05, 1.0, len(masks)), dtype=torch.float32),
            pred_classes=torch.as_tensor(classes, dtype=torch.int64),
        )
        inputs.append({"image_id": img_id})
        outputs.append({"instances": inst})
    return inputs, outputs


def _cocoeval_by_hand(json_file, results_file, iou_type):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(json_file)
        results = json.load(open(results_file))
        if iou_type == "segm":  # mask AP uses mask areas for the size ranges (as detectron2)
            for r in results:
                r.pop("bbox")
        dt = gt.loadRes(results)
        e = COCOeval(gt, dt, iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return [float("nan") if s < 0 else 100 * s for s in e.stats[:6]]


def _recall_brute_force(json_file, results, iou_type, score_thr=0.5):
    gt = COCO(json_file)
    recalled = total = 0
    for img_id in gt.getImgIds():
        for cat in gt.getCatIds():
            gts = [a for a in gt.imgToAnns[img_id] if a["category_id"] == cat and not a["iscrowd"]]
            dts = sorted(
                [r for r in results if r["image_id"] == img_id and r["category_id"] == cat and r["score"] >= score_thr],
                key=lambda r: -r["score"],
            )
            total += len(gts)
            if not gts or not dts:
                continue
            if iou_type == "segm":
                ious = mask_util.iou([d["segmentation"] for d in dts], [gt.annToRLE(g) for g in gts], [0] * len(gts))
            else:
                ious = mask_util.iou([d["bbox"] for d in dts], [g["bbox"] for g in gts], [0] * len(gts))
            taken = set()
            for di in range(len(dts)):
                cands = [(ious[di, gi], gi) for gi in range(len(gts)) if gi not in taken and ious[di, gi] >= 0.5]
                if cands:
                    taken.add(max(cands)[1])
            recalled += len(taken)
    return 100.0 * recalled / total


@pytest.mark.parametrize("seed", [0, 1])
def test_perturbed_predictions_match_cocoeval_by_hand(tiny_coco, tmp_path, seed):
    name, json_file, _ = tiny_coco
    inputs, outputs = _perturbed_outputs(json_file, seed)
    out_dir = tmp_path / "out"
    res = _run(COCOEvaluator(name, output_dir=str(out_dir)), inputs, outputs)
    results_file = str(out_dir / "coco_instances_results.json")
    saved = json.load(open(results_file))
    for task in ("bbox", "segm"):
        expected = _cocoeval_by_hand(json_file, results_file, task)
        got = [res[task][k] for k in ["AP", "AP50", "AP75", "APs", "APm", "APl"]]
        np.testing.assert_allclose(got, expected, atol=1e-9, equal_nan=True)
        assert res[task]["AP"] < 100
        assert res[task][RECALL_KEY] == pytest.approx(_recall_brute_force(json_file, saved, task))


def test_recall_reveals_low_scores(tiny_coco, coco_tools):
    """Perfect masks with scores below 0.5 keep AP 100 (ranking) but recall@0.5score is 0."""
    name, json_file, _ = tiny_coco
    inputs, outputs = coco_tools.gt_as_outputs(json_file, TO_CONTIG)
    for o in outputs:
        o["instances"].scores = o["instances"].scores * 0.3
    res = _run(COCOEvaluator(name), inputs, outputs)
    assert res["segm"]["AP"] == pytest.approx(100.0)
    assert res["segm"][RECALL_KEY] == 0.0


def test_max_dets_per_image(tiny_coco, coco_tools):
    name, json_file, _ = tiny_coco
    inputs, outputs = coco_tools.gt_as_outputs(json_file, TO_CONTIG)
    res = _run(COCOEvaluator(name, max_dets_per_image=300), inputs, outputs)
    assert res["segm"]["AP"] == pytest.approx(100.0)


def test_bbox_only_predictions_and_task_selection(tiny_coco, coco_tools):
    name, json_file, _ = tiny_coco
    inputs, outputs = coco_tools.gt_as_outputs(json_file, TO_CONTIG)
    for o in outputs:
        o["instances"].remove("pred_masks")
    res = _run(COCOEvaluator(name), inputs, outputs)
    assert list(res) == ["bbox"] and res["bbox"]["AP"] == pytest.approx(100.0)
    res = _run(COCOEvaluator(name, tasks=("bbox",)), *coco_tools.gt_as_outputs(json_file, TO_CONTIG))
    assert list(res) == ["bbox"]


def test_empty_predictions_do_not_crash(tiny_coco, coco_tools, caplog):
    name, json_file, _ = tiny_coco
    ev = COCOEvaluator(name)
    inputs, _ = coco_tools.gt_as_outputs(json_file, TO_CONTIG)
    empty = [
        {
            "instances": Instances(
                (64, 80),
                pred_boxes=torch.zeros(0, 4),
                scores=torch.zeros(0),
                pred_classes=torch.zeros(0, dtype=torch.int64),
                pred_masks=torch.zeros(0, 64, 80, dtype=torch.bool),
            )
        }
        for _ in inputs
    ]
    with caplog.at_level(logging.WARNING):
        res = _run(ev, inputs, empty)
    assert res["bbox"]["AP"] == 0.0 and res["segm"]["AP"] == 0.0 and res["segm"][RECALL_KEY] == 0.0
    assert "no instance predicted" in caplog.text
    ev.reset()
    res = ev.evaluate()  # nothing processed at all
    assert math.isnan(res["segm"]["AP"]) and math.isnan(res["bbox"][RECALL_KEY])


def test_subset_of_images_is_evaluated_alone(tiny_coco, coco_tools):
    name, json_file, _ = tiny_coco
    inputs, outputs = coco_tools.gt_as_outputs(json_file, TO_CONTIG)
    res = _run(COCOEvaluator(name), inputs[:1], outputs[:1])
    assert res["segm"]["AP"] == pytest.approx(100.0)


def test_bad_predictions_give_one_line_errors(tiny_coco, coco_tools):
    name, json_file, _ = tiny_coco
    inputs, outputs = coco_tools.gt_as_outputs(json_file, TO_CONTIG)
    ev = COCOEvaluator(name)
    bad = copy.deepcopy(outputs[0])
    bad["instances"].pred_classes = torch.full_like(bad["instances"].pred_classes, 5)
    with pytest.raises(ConfigError, match=r"predicted class 5 on image 1 is not a class") as e:
        ev.process(inputs[:1], [bad])
    assert "\n" not in str(e.value)
    with pytest.raises(DatasetError, match="image_id 99 is not an image of .*tiny.json"):
        ev.process([{"image_id": 99}], outputs[:1])
    small = copy.deepcopy(outputs[0])
    small["instances"].pred_masks = small["instances"].pred_masks[:, :32, :40]
    with pytest.raises(DatasetError, match="pred_masks are 32x40 but the image is 64x80"):
        ev.process(inputs[:1], [small])
    with pytest.raises(ConfigError, match="unknown task 'keypoints'"):
        COCOEvaluator(name, tasks=("keypoints",))


def test_missing_json_file_is_a_dataset_error(coco_tools, tmp_path):

    name = "_test_missing_json"
    coco_tools.register(name, json_file=tmp_path / "nope.json")
    with pytest.raises(DatasetError, match="COCO json not found: .*nope.json"):
        COCOEvaluator(name)


def test_annotation_id_zero_is_not_a_false_positive(coco_tools, tmp_path):
    """pycocotools reads a matched GT id of 0 as 'unmatched'; ids are renumbered for evaluation."""

    coco_dict = coco_tools.make_coco_dict()
    for i, a in enumerate(coco_dict["annotations"]):
        a["id"] = i  # starts at 0
        del a["area"]  # and no areas: filled from the masks
    path = tmp_path / "zero_ids.json"
    path.write_text(json.dumps(coco_dict))
    name = "_test_zero_ids"
    coco_tools.register(name, json_file=path)
    inputs, outputs = coco_tools.gt_as_outputs(str(path), TO_CONTIG)
    res = _run(COCOEvaluator(name), inputs, outputs)
    _assert_perfect(res, coco_tools.CLASSES)


@pytest.mark.parametrize("cat_ids", [(1, 2), (3, 7)])
def test_evaluator_built_before_the_dataset_is_read_maps_categories(tmp_path, cat_ids):
    """``register_coco_instances`` fills ``thing_dataset_id_to_contiguous_id`` only when the
    dataset is read; an evaluator built before that (as ``DefaultTrainer.test(cfg, model,
    evaluators=[COCOEvaluator(name)])`` does) must still map class 1 to the second category."""
    from segtrain.data import MetadataCatalog, register_coco_instances

    mask = np.zeros((8, 8), np.uint8, order="F")
    mask[2:6, 1:5] = 1
    rle = mask_util.encode(mask)
    rle["counts"] = rle["counts"].decode()
    coco = {
        "images": [{"id": 1, "width": 8, "height": 8, "file_name": "a.jpg"}],
        "categories": [{"id": cat_ids[0], "name": "a"}, {"id": cat_ids[1], "name": "b"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": cat_ids[1],
                "segmentation": rle,
                "area": 16.0,
                "bbox": [1.0, 2.0, 4.0, 4.0],
                "iscrowd": 0,
            }
        ],
    }
    json_file = tmp_path / "gt.json"
    json_file.write_text(json.dumps(coco))
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    name = f"coco_mapping_probe_{cat_ids[1]}"
    register_coco_instances(name, {}, str(json_file), str(tmp_path / "images"))
    assert MetadataCatalog.get(name).get("thing_dataset_id_to_contiguous_id") is None  # not read yet
    evaluator = COCOEvaluator(name, distributed=False)
    inst = Instances((8, 8))
    inst.pred_classes = torch.tensor([1])  # contiguous id of category "b"
    inst.scores = torch.tensor([0.9])
    inst.pred_masks = torch.from_numpy(mask.astype(bool))[None]
    inst.pred_boxes = torch.tensor([[1.0, 2.0, 5.0, 6.0]])
    res = _run(evaluator, [{"image_id": 1}], [{"instances": inst}])
    assert res["segm"]["AP"] == pytest.approx(100.0) and res["bbox"]["AP"] == pytest.approx(100.0)
    # pycocotools on the same files gives the same number
    gt = COCO(str(json_file))
    dt = gt.loadRes([{"image_id": 1, "category_id": cat_ids[1], "segmentation": rle, "score": 0.9}])
    ev = COCOeval(gt, dt, "segm")
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert res["segm"]["AP"] == pytest.approx(100 * ev.stats[0])
