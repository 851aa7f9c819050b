"""FindEvaluator: COCO AP with absent-concept detections as false positives (SAM 3's RF100 /
ODinW protocol), AP over positive finds only, presence metrics over all finds."""

import math

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.evaluation import COCOEvaluator, build_evaluator
from segtrain.evaluation.find_evaluation import FindEvaluator, presence_metrics
from segtrain.structures import Instances
from segtrain.utils.errors import DatasetError


def test_presence_metrics_by_hand():
    # predictions at 0.5: [T, F, T, F] vs truth [T, F, F, T]: one of each outcome
    m = presence_metrics([0.9, 0.2, 0.7, 0.4], [True, False, False, True])
    assert (m["accuracy"], m["precision"], m["recall"], m["F1"]) == (50.0, 50.0, 50.0, 50.0)
    assert m["chance_accuracy"] == 50.0 and m["positive_rate"] == 50.0 and m["num_finds"] == 4
    m = presence_metrics([0.1, 0.1, 0.1], [True, False, False])
    assert m["accuracy"] == pytest.approx(200 / 3) and m["chance_accuracy"] == pytest.approx(200 / 3)
    assert math.isnan(m["precision"]) and m["recall"] == 0.0 and m["F1"] == 0.0
    assert math.isnan(presence_metrics([], [])["accuracy"])


def _with_finds(inputs, outputs, present_by_image, extra):
    """Adds every concept (0, 1, 2) as a find of each image, presence 0.8 when present else 0.3,
    and the detections ``extra[image_id]`` (class, box) with score 0.99, ranked above the
    ground-truth detections (score 0.5)."""
    for inp, out in zip(inputs, outputs):
        out["instances"].scores = out["instances"].scores * 0.5
        present = present_by_image[inp["image_id"]]
        out["finds"] = {
            "categories": torch.tensor([0, 1, 2]),
            "presence_scores": torch.tensor([0.8 if c in present else 0.3 for c in range(3)]),
        }
        for cls, box in extra.get(inp["image_id"], []):
            inst = out["instances"]
            h, w = inst.image_size
            mask = torch.zeros(1, h, w, dtype=torch.bool)
            mask[0, box[1] : box[3], box[0] : box[2]] = True
            add = Instances(
                (h, w),
                pred_masks=mask,
                pred_boxes=torch.tensor([box], dtype=torch.float32),
                scores=torch.tensor([0.99]),
                pred_classes=torch.tensor([cls]),
            )
            out["instances"] = Instances.cat([inst, add])
    return inputs, outputs


def test_absent_concept_detections_are_false_positives(tiny_coco, coco_tools):
    name, json_file, _ = tiny_coco
    to_contig = dict(zip(coco_tools.DATASET_IDS, range(3)))
    present = {1: {0, 1, 2}, 2: {0, 2}, 3: {0, 1}}  # image 2's triangle is a crowd region
    # confident detections of concepts that are absent (negative finds)
    extra = {2: [(1, [40, 10, 60, 30])], 3: [(2, [5, 5, 25, 25])]}

    ev = FindEvaluator(name, distributed=False)
    ev.reset()
    ev.process(*_with_finds(*coco_tools.gt_as_outputs(json_file, to_contig), present, extra))
    res = ev.evaluate()
    assert res["bbox_positive"]["AP"] == pytest.approx(100.0) and res["segm_positive"]["AP"] == pytest.approx(100.0)
    assert res["bbox"]["AP"] < 95.0 and res["segm"]["AP"] < 95.0
    p = res["presence"]
    assert p["num_finds"] == 9 and p["accuracy"] == 100.0 and p["F1"] == 100.0
    assert p["positive_rate"] == pytest.approx(700 / 9)

    # the same detections scored by plain COCO AP: the negative-find detections are false positives
    coco = COCOEvaluator(name, distributed=False)
    coco.reset()
    inputs, outputs = _with_finds(*coco_tools.gt_as_outputs(json_file, to_contig), present, extra)
    coco.process(inputs, outputs)
    plain = coco.evaluate()
    assert res["bbox"]["AP"] == pytest.approx(plain["bbox"]["AP"]) and res["segm"]["AP"] == pytest.approx(
        plain["segm"]["AP"]
    )


def test_wrong_presence_lowers_accuracy_not_ap(tiny_coco, coco_tools):
    name, json_file, _ = tiny_coco
    to_contig = dict(zip(coco_tools.DATASET_IDS, range(3)))
    everything = {1: {0, 1, 2}, 2: {0, 1, 2}, 3: {0, 1, 2}}  # claims every concept is present
    ev = FindEvaluator(name, distributed=False)
    ev.reset()
    ev.process(*_with_finds(*coco_tools.gt_as_outputs(json_file, to_contig), everything, {}))
    res = ev.evaluate()
    assert res["bbox"]["AP"] == pytest.approx(100.0)
    assert res["presence"]["accuracy"] == pytest.approx(700 / 9) and res["presence"]["recall"] == 100.0


def test_needs_find_outputs_and_is_registered(tiny_coco, coco_tools):
    name, json_file, _ = tiny_coco
    ev = FindEvaluator(name, distributed=False)
    ev.reset()
    inputs, outputs = coco_tools.gt_as_outputs(json_file, dict(zip(coco_tools.DATASET_IDS, range(3))))
    with pytest.raises(DatasetError, match="has no 'finds'.*Sam3Image"):
        ev.process(inputs[:1], outputs[:1])
    cfg = get_cfg()
    cfg.TEST.EVALUATOR = "FindEvaluator"
    assert isinstance(build_evaluator(cfg, name), FindEvaluator)


def test_saco_metrics_of_hand_made_finds(tiny_coco, coco_tools):
    """Every GT instance detected at score 1 except image 1's blob (a present concept with no
    detection: IL_FN); a triangle detected at 0.9 on image 2, where the only triangle is a crowd
    region (an absent concept with a detection: IL_FP); a blob at 0.4 on image 3 (absent, below
    the 0.5 threshold: IL_TN). 9 finds: IL TP 6, FP 1, TN 1, FN 1, so IL_MCC = (6 - 1) / sqrt(7 * 7 * 2 * 2)
    = 5/14; instances TP 6, FN 1, no false positive in a positive pair: pmF1 = 12/13."""
    name, json_file, _ = tiny_coco
    to_contig = dict(zip(coco_tools.DATASET_IDS, range(3)))
    inputs, outputs = coco_tools.gt_as_outputs(json_file, to_contig)
    present = {1: {0, 1, 2}, 2: {0, 2}, 3: {0, 1}}
    for inp, out in zip(inputs, outputs):
        inst = out["instances"]
        if inp["image_id"] == 1:
            inst = inst[inst.pred_classes != 2]
        extra = {2: (1, [40, 10, 60, 30], 0.9), 3: (2, [5, 5, 25, 25], 0.4)}.get(inp["image_id"])
        if extra is not None:
            cls, box, score = extra
            h, w = inst.image_size
            mask = torch.zeros(1, h, w, dtype=torch.bool)
            mask[0, box[1] : box[3], box[0] : box[2]] = True
            add = Instances(
                (h, w),
                pred_masks=mask,
                pred_boxes=torch.tensor([box], dtype=torch.float32),
                scores=torch.tensor([score]),
                pred_classes=torch.tensor([cls]),
            )
            inst = Instances.cat([inst, add])
        out["instances"] = inst
        out["finds"] = {
            "categories": torch.tensor([0, 1, 2]),
            "presence_scores": torch.tensor([0.9 if c in present[inp["image_id"]] else 0.1 for c in range(3)]),
        }
    ev = FindEvaluator(name, distributed=False)
    ev.reset()
    ev.process(inputs, outputs)
    res = ev.evaluate()
    for task in ("cgF1_bbox", "cgF1_segm"):
        m = res[task]
        assert (m["IL_TP"], m["IL_FP"], m["IL_TN"], m["IL_FN"]) == (6, 1, 1, 1)
        assert m["IL_MCC"] == pytest.approx(5 / 14, abs=1e-5)
        assert m["positive_micro_F1"] == pytest.approx(1200 / 13, abs=0.05)
        assert m["cgF1"] == pytest.approx(100 * 12 / 13 * 5 / 14, abs=0.05)

    # a find marked non-exhaustive leaves the SA-Co metrics (image 2's triangle find: no IL_FP)
    inputs[1]["find_categories"] = torch.tensor([0, 1, 2])
    inputs[1]["find_is_exhaustive"] = torch.tensor([True, False, True])
    ev.reset()
    ev.process(inputs, outputs)
    m = ev.evaluate()["cgF1_bbox"]
    assert (m["num_pairs"], m["IL_FP"]) == (8, 0)
