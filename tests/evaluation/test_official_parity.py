"""Each evaluator against the official metric code on the same hand-made inputs.

- COCO AP: pycocotools' COCOeval, run here directly.
- PQ: panopticapi's ``pq_compute_single_core`` and ``PQStat.pq_average``; semantic metrics:
  Detectron2's ``SemSegEvaluator.process`` / ``evaluate``; J / F: the DAVIS 2017 toolkit's
  semi-supervised ``DAVISEvaluation.evaluate``. Their numbers are in
  ``data/official_parity.json``, produced once by running that code (the commits are in the file's
  ``sources``) on the inputs of ``parity_cases.py``, written out as panoptic PNG + JSON, as label
  maps, and as a DAVIS folder (``JPEGImages/480p``, ``Annotations/480p``, ``ImageSets/2017/val.txt``)
  with indexed-PNG results. Cases: crowd (two crowd segments of a category), void, IoU exactly
  0.5, non-contiguous category ids, an image with no annotation, a GT segment with no pixel, an
  object absent on some frames, an object lost after the prompt, a video of 2 frames.
"""

import copy
import json
import os

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segtrain.data import DatasetCatalog, MetadataCatalog, register_coco_instances, register_coco_panoptic
from segtrain.evaluation import COCOEvaluator, PanopticEvaluator, SemSegEvaluator, VideoEvaluator
from segtrain.evaluation.davis_metrics import db_eval_boundary, db_eval_iou
from segtrain.evaluation.panoptic_evaluation import pq_image_stats
from segtrain.structures import Instances
from tests.evaluation import parity_cases as cases

OFFICIAL = json.load(open(os.path.join(os.path.dirname(__file__), "data", "official_parity.json")))


def _nan_or(value):
    return float("nan") if value is None else value


# ---------------------------------------------------------------------------- panopticapi
def _write_panoptic(tmp_path):
    png_dir = tmp_path / "panoptic"
    png_dir.mkdir()
    images, annotations = [], []
    for i, case in enumerate(cases.panoptic_cases()):
        name = f"{case['name']}.png"
        ids = case["gt"]
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
        cv2.imwrite(str(png_dir / name), rgb[:, :, ::-1])
        images.append({"id": i, "file_name": f"{case['name']}.jpg", "height": 10, "width": 10})
        annotations.append({"image_id": i, "file_name": name, "segments_info": case["gt_info"]})
    path = tmp_path / "panoptic.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": cases.PANOPTIC_CATEGORIES}))
    return str(png_dir), str(path)


def test_panoptic_quality_equals_panopticapi(tmp_path):
    png_dir, json_file = _write_panoptic(tmp_path)
    register_coco_panoptic("parity_panoptic", {}, str(tmp_path), png_dir, json_file)
    evaluator = PanopticEvaluator("parity_panoptic", distributed=False)  # built before the dataset is read
    contiguous = {c["id"]: k for k, c in enumerate(cases.PANOPTIC_CATEGORIES)}
    per_image = {}
    for i, case in enumerate(cases.panoptic_cases()):
        info = [{"id": s["id"], "category_id": contiguous[s["category_id"]]} for s in case["pred_info"]]
        output = {"panoptic_seg": (torch.as_tensor(case["pred"]), info)}
        single = PanopticEvaluator("parity_panoptic", distributed=False)
        single.reset()
        single.process([{"image_id": i}], [output])
        per_image[case["name"]] = single._stats
        evaluator.process([{"image_id": i}], [output])
    for name, official in OFFICIAL["panoptic"]["per_image"].items():
        for cat_id, (tp, fp, fn, iou) in official.items():
            ours = per_image[name][contiguous[int(cat_id)]]
            assert list(ours[:3]) == [tp, fp, fn], (name, cat_id)
            assert ours[3] == pytest.approx(iou, abs=1e-12)
    res = evaluator.evaluate()["panoptic_seg"]
    for group, sfx in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        official = OFFICIAL["panoptic"]["total"][group]
        for key in ("pq", "sq", "rq"):
            assert res[f"{key.upper()}{sfx}"] == pytest.approx(100 * official[key], abs=1e-9), (group, key)
        assert res[f"num_categories{sfx}"] == official["n"]
    for cat in cases.PANOPTIC_CATEGORIES:
        assert res[f"PQ-{cat['name']}"] == pytest.approx(100 * OFFICIAL["panoptic"]["per_class"][str(cat["id"])]["pq"])


def test_crowd_segments_follow_panopticapi():
    """Two crowd segments of one category: panopticapi excuses predictions on the last only."""
    case = cases.panoptic_cases()[0]
    contiguous = {c["id"]: k for k, c in enumerate(cases.PANOPTIC_CATEGORIES)}
    official_fp = OFFICIAL["panoptic"]["per_image"]["crowd_twice_iou_half"]["3"][1]
    assert official_fp == 1

    def stats(gt_info):
        gt_info = [{**s, "category_id": contiguous[s["category_id"]]} for s in gt_info]
        pred_info = [{**s, "category_id": contiguous[s["category_id"]]} for s in case["pred_info"]]
        return pq_image_stats(case["gt"], gt_info, case["pred"], pred_info, 3)

    assert stats(case["gt_info"])[1, 1] == official_fp
    swapped = [case["gt_info"][i] for i in (0, 2, 1, 3)]  # the prediction's crowd segment now last
    assert stats(swapped)[1, 1] == 0


# ---------------------------------------------------------------------------- Detectron2 sem seg
def test_semantic_segmentation_equals_detectron2(tmp_path):
    dicts = []
    for i, case in enumerate(cases.sem_seg_cases()):
        path = tmp_path / f"label{i}.png"
        cv2.imwrite(str(path), case["gt"].astype(np.uint8))
        dicts.append(
            {"image_id": i, "file_name": f"img{i}.jpg", "sem_seg_file_name": str(path), "height": 12, "width": 12}
        )
    DatasetCatalog.register("parity_sem_seg", lambda: dicts)
    k = cases.SEM_SEG_NUM_CLASSES
    MetadataCatalog.get("parity_sem_seg").set(stuff_classes=[f"c{i}" for i in range(k)], ignore_label=255)
    evaluator = SemSegEvaluator("parity_sem_seg", distributed=False)
    for i, case in enumerate(cases.sem_seg_cases()):
        scores = torch.nn.functional.one_hot(torch.as_tensor(case["pred"]), k).permute(2, 0, 1).float()
        evaluator.process([{"image_id": i}], [{"sem_seg": scores}])
    res = evaluator.evaluate()["sem_seg"]
    official = OFFICIAL["sem_seg"]
    assert set(official) <= set(res)
    for key, value in official.items():
        np.testing.assert_allclose(res[key], _nan_or(value), rtol=0, atol=1e-9, err_msg=key)


# ---------------------------------------------------------------------------- DAVIS 2017 toolkit
def _object_masks(labels):
    ids = list(range(1, int(labels[0].max()) + 1))  # the toolkit's objects: those of frame 0
    return ids, np.stack([labels == k for k in ids], axis=1)  # [T, N, H, W]


def test_video_metrics_equal_the_davis_toolkit(tmp_path):
    evaluator = VideoEvaluator(None, distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    for case in cases.davis_cases():
        ids, gt = _object_masks(case["gt"])
        pred = {"pred_masks": np.stack([case["pred"] == k for k in ids], axis=1), "obj_ids": ids}  # [T, N, H, W]
        evaluator.process([{"video_id": case["name"], "gt_masks": gt, "gt_obj_ids": ids}], [pred])
    res = evaluator.evaluate()["video"]
    per_object = json.load(open(tmp_path / "video_metrics.json"))["per_object"]
    rows = {f"{r['video_id']}_{r['obj_id']}": r for r in per_object}
    official = OFFICIAL["davis"]["per_object"]
    assert sorted(rows) == sorted(official)
    for name, values in official.items():
        for key, value in values.items():
            assert rows[name][key] == pytest.approx(value, abs=1e-12), (name, key)
    assert res["J&F"] == pytest.approx(100 * OFFICIAL["davis"]["J&F"], abs=1e-9)


def test_two_frame_video_scores_no_frame_as_the_toolkit():
    """The toolkit leaves out the first and last frames of every video; with 2 frames none is
    left (the toolkit itself then fails with an IndexError reading the results): the object is
    NaN and the overall mean is over the other objects."""
    assert OFFICIAL["davis"]["two_frames"]["error"].startswith("IndexError")
    evaluator = VideoEvaluator(None, distributed=False)
    evaluator.reset()
    for case in cases.davis_cases() + [cases.short_davis_case()]:
        ids, gt = _object_masks(case["gt"])
        pred = {"pred_masks": np.stack([case["pred"] == k for k in ids], axis=1), "obj_ids": ids}
        evaluator.process([{"video_id": case["name"], "gt_masks": gt, "gt_obj_ids": ids}], [pred])
    res = evaluator.evaluate()["video"]
    assert res["num_objects"] == 4 and res["num_objects_unscored"] == 1
    assert res["J&F"] == pytest.approx(100 * OFFICIAL["davis"]["J&F"], abs=1e-9)


# ---------------------------------------------------------------------------- pycocotools
def _coco_case(tmp_path):
    """Non-contiguous category ids {2, 5, 9}; a crowd object; a detection at IoU exactly 0.5;
    an image with no annotation (its detection is a false positive)."""

    def rle(m):
        r = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        r["counts"] = r["counts"].decode()
        return r

    def box_mask(y0, y1, x0, x1):
        m = np.zeros((20, 20), bool)
        m[y0:y1, x0:x1] = True
        return m

    gts = [
        (0, 2, box_mask(0, 10, 0, 10), 0),
        (0, 5, box_mask(10, 20, 0, 10), 0),
        (0, 5, box_mask(10, 20, 10, 20), 1),  # crowd
        (1, 9, box_mask(0, 8, 0, 10), 0),
    ]
    images = [{"id": i, "file_name": f"{i}.jpg", "height": 20, "width": 20} for i in range(3)]
    for img in images:
        cv2.imwrite(str(tmp_path / img["file_name"]), np.zeros((20, 20, 3), np.uint8))
    anns = []
    for n, (img, cat, m, crowd) in enumerate(gts):
        ys, xs = np.nonzero(m)
        box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        anns.append(
            {
                "id": n + 1,
                "image_id": img,
                "category_id": cat,
                "segmentation": rle(m),
                "area": float(m.sum()),
                "bbox": box,
                "iscrowd": crowd,
            }
        )
    cats = [{"id": c, "name": f"k{c}"} for c in (2, 5, 9)]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    dets = [  # (image, category id, mask, score)
        (0, 2, box_mask(0, 10, 0, 10), 0.9),
        (0, 5, box_mask(10, 20, 12, 20), 0.8),  # on the crowd region: ignored
        (0, 5, box_mask(10, 20, 0, 5), 0.7),  # IoU exactly 0.5 with the car
        (1, 9, box_mask(0, 8, 0, 10), 0.6),
        (2, 2, box_mask(5, 15, 5, 15), 0.95),  # an image with no annotation
    ]
    return str(path), dets, rle


def test_coco_ap_equals_pycocotools(tmp_path):
    json_file, dets, rle = _coco_case(tmp_path)
    register_coco_instances("parity_coco", {}, json_file, str(tmp_path))
    evaluator = COCOEvaluator("parity_coco", tasks=("segm",), distributed=False)  # before the dataset is read
    contiguous = {2: 0, 5: 1, 9: 2}
    for img in range(3):
        mine = [d for d in dets if d[0] == img]
        inst = Instances((20, 20))
        inst.pred_masks = torch.as_tensor(np.stack([d[2] for d in mine]))
        inst.scores = torch.tensor([d[3] for d in mine])
        inst.pred_classes = torch.tensor([contiguous[d[1]] for d in mine])
        evaluator.process([{"image_id": img}], [{"instances": inst}])
    res = evaluator.evaluate()["segm"]

    gt = COCO(json_file)
    results = [{"image_id": d[0], "category_id": d[1], "segmentation": rle(d[2]), "score": d[3]} for d in dets]
    coco_eval = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "segm")
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    for n, key in enumerate(("AP", "AP50", "AP75", "APs", "APm", "APl")):
        official = coco_eval.stats[n]
        expected = float("nan") if official < 0 else 100 * official
        np.testing.assert_allclose(res[key], expected, rtol=0, atol=1e-9, err_msg=key)
    assert 0 < res["AP"] < 100  # the cases move the number: crowd, IoU 0.5 and the empty image count


def test_void_pixels_are_left_out_as_the_davis_toolkit_does():
    case = cases.void_case()
    official = OFFICIAL["davis"]["void"]
    assert db_eval_iou(case["gt"], case["pred"], case["void"]).tolist() == pytest.approx(official["J"], abs=1e-12)
    assert db_eval_boundary(case["gt"], case["pred"], void=case["void"]).tolist() == pytest.approx(official["F"])
    assert db_eval_iou(case["gt"], case["pred"]).tolist() == pytest.approx(official["J_without_void"], abs=1e-12)
    evaluator = VideoEvaluator(None, distributed=False, skip_first_last=False)
    evaluator.reset()
    inp = {"video_id": "v", "gt_masks": case["gt"][:, None], "gt_obj_ids": [1], "gt_void": case["void"]}
    evaluator.process([inp], [{"pred_masks": case["pred"][:, None], "obj_ids": [1]}])
    assert evaluator.evaluate()["video"]["J"] == pytest.approx(100 * official["J"][0], abs=1e-9)
