"""A tiny hand-made COCO dataset (json in tmp_path, non-contiguous category ids, polygons,
RLE, one crowd region) registered in the catalogs, plus helpers that turn its ground truth
into model outputs."""

import json

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from pycocotools.coco import COCO

from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
from segtrain.structures import Instances

CLASSES = ["square", "triangle", "blob"]
DATASET_IDS = [3, 7, 11]  # contiguous 0, 1, 2
H, W = 64, 80


def _poly_ann(points):
    xs, ys = points[0::2], points[1::2]
    return {
        "segmentation": [list(map(float, points))],
        "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
    }


def _rle_ann(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    bbox = [float(v) for v in mask_util.toBbox(rle)]
    rle["counts"] = rle["counts"].decode()
    return {"segmentation": rle, "bbox": bbox}


def make_coco_dict():
    """3 images of 64x80; 7 instances of 3 classes plus one crowd region."""
    blob = np.zeros((H, W), bool)
    yy, xx = np.mgrid[:H, :W]
    blob[(yy - 40) ** 2 / 150 + (xx - 50) ** 2 / 300 <= 1] = True
    crowd = np.zeros((H, W), bool)
    crowd[2:12, 60:78] = True
    anns = [
        (1, 3, _poly_ann([10, 10, 40, 10, 40, 40, 10, 40]), 0),
        (1, 7, _poly_ann([45, 60, 78, 60, 60, 20]), 0),
        (1, 11, _poly_ann([2, 50, 8, 50, 8, 56, 2, 56]), 0),  # small
        (2, 11, _rle_ann(blob), 0),
        (2, 3, _poly_ann([5, 5, 30, 5, 30, 28, 5, 28]), 0),
        (2, 7, _rle_ann(crowd), 1),
        (3, 7, _poly_ann([10, 60, 70, 60, 40, 2]), 0),
        (3, 3, _poly_ann([60, 5, 75, 5, 75, 20, 60, 20]), 0),
    ]
    annotations = []
    for i, (img, cat, geo, iscrowd) in enumerate(anns):
        a = {"id": i + 1, "image_id": img, "category_id": cat, "iscrowd": iscrowd, **geo}
        seg = a["segmentation"]
        rle = mask_util.merge(mask_util.frPyObjects(seg, H, W)) if isinstance(seg, list) else seg
        a["area"] = float(mask_util.area(rle))
        annotations.append(a)
    return {
        "images": [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in (1, 2, 3)],
        "annotations": annotations,
        "categories": [{"id": d, "name": n} for d, n in zip(DATASET_IDS, CLASSES)],
    }


def coco_to_dataset_dicts(coco_dict):
    """Detectron2-format dicts (contiguous category ids) of the json above."""
    to_contig = {d: i for i, d in enumerate(DATASET_IDS)}
    out = []
    for img in coco_dict["images"]:
        anns = [
            {
                "bbox": a["bbox"],
                "bbox_mode": 1,
                "category_id": to_contig[a["category_id"]],
                "segmentation": a["segmentation"],
                "iscrowd": a["iscrowd"],
            }
            for a in coco_dict["annotations"]
            if a["image_id"] == img["id"]
        ]
        out.append(
            {
                "file_name": img["file_name"],
                "height": img["height"],
                "width": img["width"],
                "image_id": img["id"],
                "annotations": anns,
            }
        )
    return out


def register(name, coco_dict=None, json_file=None, **meta):
    """Register ``name`` (its dicts only when ``coco_dict`` is given) with the tiny dataset's
    metadata; tests/conftest.py removes it after the test."""
    if coco_dict is not None:
        dicts = coco_to_dataset_dicts(coco_dict)
        DatasetCatalog.register(name, lambda: dicts)
    md = dict(
        thing_classes=list(CLASSES),
        thing_dataset_id_to_contiguous_id={d: i for i, d in enumerate(DATASET_IDS)},
        evaluator_type="coco",
    )
    md.update(meta)
    if json_file:
        md["json_file"] = str(json_file)
    MetadataCatalog.get(name).set(**md)


@pytest.fixture
def tiny_coco(tmp_path):
    """(dataset name, json path, coco dict) of the tiny dataset, registered with a json_file."""
    coco_dict = make_coco_dict()
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(coco_dict))
    name = "_test_tiny_coco"
    register(name, coco_dict, json_file=path)
    return name, str(path), coco_dict


def gt_as_outputs(json_file, to_contiguous, skip_crowd=True):
    """(inputs, outputs) with every GT instance as a prediction of score 1.0."""
    coco = COCO(json_file)
    inputs, outputs = [], []
    for img_id in sorted(coco.getImgIds()):
        info = coco.imgs[img_id]
        anns = [a for a in coco.imgToAnns[img_id] if not (skip_crowd and a.get("iscrowd", 0))]
        h, w = info["height"], info["width"]
        inst = Instances((h, w))
        if anns:
            inst.pred_masks = torch.as_tensor(np.stack([coco.annToMask(a).astype(bool) for a in anns]))
        else:
            inst.pred_masks = torch.zeros((0, h, w), dtype=torch.bool)
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        inst.pred_boxes = boxes
        inst.scores = torch.ones(len(anns))
        inst.pred_classes = torch.tensor([to_contiguous[a["category_id"]] for a in anns], dtype=torch.int64)
        inputs.append({"image_id": img_id, "height": h, "width": w, "file_name": info.get("file_name", "")})
        outputs.append({"instances": inst})
    return inputs, outputs


@pytest.fixture
def coco_tools():
    """The helpers of this file for tests (conftest modules are not imported by name)."""
    import types

    return types.SimpleNamespace(
        make_coco_dict=make_coco_dict,
        coco_to_dataset_dicts=coco_to_dataset_dicts,
        register=register,
        gt_as_outputs=gt_as_outputs,
        CLASSES=CLASSES,
        DATASET_IDS=DATASET_IDS,
        H=H,
        W=W,
    )
