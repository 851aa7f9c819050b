"""FindEvaluator against the official SAM 3 eval code on the same hand-made predictions.

Fixture ``data/sam3_eval_parity.json``: made in a scratch folder from facebookresearch/sam3 at
commit 99d02f28c8d34610ab35559b72642b01f10fdb1e. A Roboflow-style json (4 images of 64x80,
category 0 the super-category without annotations, categories 1-3, a crowd region, an image
without annotations, a triangle mask), every image x every category as a find (the find
(image 1, category 2) not exhaustive), and 15 hand-made detections (IoU 0.5 and 0.75 exactly,
a score of 0.499996 that rounds to 0.5, detections of absent concepts, of the super-category,
on the crowd region, on the empty image). The official numbers are:

* ``bbox`` / ``segm`` (and ``*_positive``): ``sam3/eval/coco_writer.py``
  ``PredictionDumper._dump`` + ``gather_and_merge_predictions`` (rounding, top 100 per image),
  then ``sam3/eval/coco_eval_offline.py`` ``CocoEvaluatorOfflineWithPredFileEvaluators``
  with ``positive_split`` False / True;
* ``cgF1_bbox`` / ``cgF1_segm``: the same dump, re-keyed to one GT image per find
  (``is_instance_exhaustive`` from the find), through ``sam3/eval/cgf1_eval.py``
  ``CGF1Evaluator``.

The fixture's annotation ids start at 1: pycocotools reads a match to id 0 as unmatched, and
segtrain renumbers such a json before COCOeval (the official RF100 evaluation does not).
segm APs / APm / APl are not compared: the official dump keeps each detection's box, so
pycocotools sizes detections by box area; segtrain sizes them by mask area.
"""

import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch

from segtrain.data.catalog import DatasetCatalog, MetadataCatalog, catalogs_restored
from segtrain.evaluation.find_evaluation import FindEvaluator
from segtrain.structures import Instances

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "sam3_eval_parity.json")
NAME = "_test_sam3_eval_parity"
AP_KEYS = {"AP": "AP", "AP50": "AP_50", "AP75": "AP_75", "APs": "AP_small", "APm": "AP_medium", "APl": "AP_large"}


@pytest.fixture(scope="module")
def fixture():
    with open(FIXTURE) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def registered_gt(fixture, tmp_path_factory):
    """The fixture's json as the metadata of NAME for the module (its own scope: the per-test
    restore of tests/conftest.py takes its snapshot after this setup)."""
    gt = fixture["gt"]
    path = tmp_path_factory.mktemp("parity") / "gt.json"
    path.write_text(json.dumps(gt))
    cat_ids = sorted(c["id"] for c in gt["categories"])
    with catalogs_restored():
        MetadataCatalog.get(NAME).set(
            json_file=str(path),
            thing_classes=[c["name"] for c in sorted(gt["categories"], key=lambda c: c["id"])],
            thing_dataset_id_to_contiguous_id={d: i for i, d in enumerate(cat_ids)},
        )
        yield
        assert NAME not in DatasetCatalog


@pytest.fixture(scope="module")
def results(fixture, registered_gt):
    gt = fixture["gt"]
    to_contiguous = {d: i for i, d in enumerate(sorted(c["id"] for c in gt["categories"]))}
    ev = FindEvaluator(NAME, distributed=False)
    ev.reset()
    for img in gt["images"]:
        preds = [p for p in fixture["predictions"] if p["image_id"] == img["id"]]
        finds = [f for f in fixture["finds"] if f[0] == img["id"]]
        h, w = img["height"], img["width"]
        boxes = torch.tensor([p["bbox"] for p in preds], dtype=torch.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        masks = [mask_util.decode(dict(p["segmentation"], counts=p["segmentation"]["counts"].encode())) for p in preds]
        inst = Instances(
            (h, w),
            pred_boxes=boxes,
            scores=torch.tensor([p["score"] for p in preds], dtype=torch.float64),
            pred_classes=torch.tensor([to_contiguous[p["category_id"]] for p in preds], dtype=torch.int64),
            pred_masks=torch.as_tensor(np.stack(masks).astype(bool)) if masks else torch.zeros((0, h, w), dtype=bool),
        )
        concepts = torch.tensor([to_contiguous[f[1]] for f in finds])
        inputs = [
            {
                "image_id": img["id"],
                "find_categories": concepts,
                "find_is_exhaustive": torch.tensor([f[2] for f in finds]),
            }
        ]
        outputs = [
            {"instances": inst, "finds": {"categories": concepts, "presence_scores": torch.full((len(finds),), 0.5)}}
        ]
        ev.process(inputs, outputs)
    return ev.evaluate()


@pytest.mark.parametrize("task", ["bbox", "bbox_positive", "segm", "segm_positive"])
def test_coco_ap_equals_official(results, fixture, task):
    official = fixture["official"][task]
    keys = AP_KEYS if task.startswith("bbox") else {k: AP_KEYS[k] for k in ("AP", "AP50", "AP75")}
    for ours, theirs in keys.items():
        expected = official[theirs] * 100 if official[theirs] > -1 else float("nan")
        assert results[task][ours] == pytest.approx(expected, abs=1e-9, nan_ok=True), (task, ours)


@pytest.mark.parametrize("task", ["cgF1_bbox", "cgF1_segm"])
def test_saco_metrics_equal_official(results, fixture, task):
    official = fixture["official"][task]
    assert len(official) == 26
    for name, value in official.items():
        expected = value if name == "IL_MCC" else 100 * value
        assert results[task][name] == pytest.approx(expected, abs=1e-9), (task, name)
    # 16 finds, one of them not exhaustive
    assert results[task]["num_pairs"] == 15


def test_absent_concept_detections_lower_the_official_ap(results):
    assert results["bbox"]["AP"] < results["bbox_positive"]["AP"]
    assert results["segm"]["AP"] < results["segm_positive"]["AP"]
