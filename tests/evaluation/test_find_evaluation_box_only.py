"""FindEvaluator on box-only ground truth: bbox AP and presence reported, segm skipped with a
log line; a json mixing both scores segm on the images whose every annotation has a mask."""

import json
import logging
import math

import pytest
import torch

from segtrain.evaluation.find_evaluation import FindEvaluator


def _outputs(coco_tools, json_file):
    """GT as detections, every concept a find (presence 0.8 when present, else 0.3)."""
    to_contig = dict(zip(coco_tools.DATASET_IDS, range(3)))
    inputs, outputs = coco_tools.gt_as_outputs(json_file, to_contig)
    for out in outputs:
        present = set(out["instances"].pred_classes.tolist())
        out["finds"] = {
            "categories": torch.tensor([0, 1, 2]),
            "presence_scores": torch.tensor([0.8 if c in present else 0.3 for c in range(3)]),
        }
    return inputs, outputs


def _register_variant(tmp_path, coco_tools, name, edit):
    data = coco_tools.make_coco_dict()
    edit(data)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    coco_tools.register(name, data if all("segmentation" in a for a in data["annotations"]) else None, json_file=path)
    return str(path)


def _processed_evaluator(tmp_path, coco_tools, name, edit, inputs, outputs):
    """A FindEvaluator on the tiny COCO json edited by ``edit``, registered as ``name``, that
    has processed ``inputs`` / ``outputs``."""
    _register_variant(tmp_path, coco_tools, name, edit)
    ev = FindEvaluator(name, distributed=False)
    ev.reset()
    ev.process(inputs, outputs)
    return ev


def test_box_only_ground_truth_skips_segm(tiny_coco, coco_tools, tmp_path, caplog):
    _, full_json, _ = tiny_coco
    inputs, outputs = _outputs(coco_tools, full_json)  # detections carry masks, as Sam3Image's do

    def strip(data):
        for k, a in enumerate(data["annotations"]):
            if k % 2:
                a["segmentation"] = []
            else:
                del a["segmentation"]

    ev = _processed_evaluator(tmp_path, coco_tools, "_test_find_box_only", strip, inputs, outputs)
    with caplog.at_level(logging.WARNING):
        res = ev.evaluate()
    assert list(res) == ["bbox", "bbox_positive", "cgF1_bbox", "presence"]
    assert res["bbox"]["AP"] == pytest.approx(100.0) and res["bbox_positive"]["AP"] == pytest.approx(100.0)
    # every present concept found exactly, no detection elsewhere (the crowd region is no pair's GT)
    assert res["cgF1_bbox"]["IL_MCC"] == pytest.approx(1.0, abs=1e-5)
    assert res["cgF1_bbox"]["cgF1"] == pytest.approx(100.0, abs=1e-2)
    assert res["presence"]["accuracy"] == 100.0 and res["presence"]["num_finds"] == 9
    assert "the ground truth has no segmentation; skipping segm" in caplog.text


def test_mixed_ground_truth_scores_segm_on_images_with_masks(tiny_coco, coco_tools, tmp_path, caplog):
    _, full_json, _ = tiny_coco
    inputs, outputs = _outputs(coco_tools, full_json)
    # image 3's detections get wrong masks: they must not count (its GT is box-only)
    inst3 = outputs[2]["instances"]
    inst3.pred_masks = torch.zeros_like(inst3.pred_masks)
    inst3.pred_masks[:, :2, :2] = True
    # image 1's first mask is wrong too: segm AP below 100 shows image 1 is scored
    inst1 = outputs[0]["instances"]
    inst1.pred_masks[0] = False
    inst1.pred_masks[0, 60:, 70:] = True

    def strip_image_3(data):
        for a in data["annotations"]:
            if a["image_id"] == 3:
                a["segmentation"] = []

    ev = _processed_evaluator(tmp_path, coco_tools, "_test_find_mixed", strip_image_3, inputs, outputs)
    with caplog.at_level(logging.INFO, logger="segtrain.evaluation.find_evaluation"):
        res = ev.evaluate()
    assert list(res) == ["bbox", "bbox_positive", "cgF1_bbox", "segm", "segm_positive", "cgF1_segm", "presence"]
    assert res["bbox"]["AP"] == pytest.approx(100.0)
    assert 0.0 < res["segm"]["AP"] < 100.0 and not math.isnan(res["segm"]["AP"])
    # image 1's wrong mask: a missed instance and a false positive in a positive pair
    assert res["cgF1_segm"]["positive_micro_F1"] < 100.0 and res["cgF1_segm"]["IL_MCC"] == pytest.approx(1.0, abs=1e-5)
    assert "segm AP over the 2 of 3 images" in caplog.text

    # image 1's mask fixed: segm 100 although image 3's masks are still wrong; only image 3: skipped
    outputs[0]["instances"].pred_masks = _outputs(coco_tools, full_json)[1][0]["instances"].pred_masks
    ev.reset()
    ev.process(inputs, outputs)
    assert ev.evaluate()["segm"]["AP"] == pytest.approx(100.0)
    ev.reset()
    ev.process(inputs[2:], outputs[2:])
    with caplog.at_level(logging.WARNING):
        res = ev.evaluate()
    assert not {"segm", "segm_positive", "cgF1_segm"} & set(res) and res["bbox"]["AP"] == pytest.approx(100.0)
    assert "none of the 1 evaluated images has a mask for every annotation; skipping segm" in caplog.text
