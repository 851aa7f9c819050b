"""A tiny ConceptDetector trained on a box-only COCO dataset (no segmentation anywhere) through
the real pipeline: load_coco_json -> FindDatasetMapper -> collate -> Sam3LossWrapper. The mask
terms are exactly zero, the box / classification terms train, and FindEvaluator reports bbox
AP and presence without segm."""

import json
import math
import os

import cv2
import numpy as np
import torch

from segtrain.config import load_config
from segtrain.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_test_loader,
    build_train_loader,
    register_coco_instances,
)
from segtrain.evaluation import build_evaluator
from segtrain.evaluation.evaluator import inference_on_dataset
from segtrain.modeling import build_model
from segtrain.modeling.criterion import CORE_LOSS_KEY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TINY = os.path.join(ROOT, "projects", "sam3", "tiny.yaml")
S = 64
NAME = "_test_concept_box_only"
COLORS = {3: (20, 20, 240), 7: (20, 240, 20), 11: (240, 20, 20)}  # BGR, by dataset category id


def _write_box_only_coco(root):
    """6 images of 64x64 with 1-2 coloured rectangles; annotations are boxes only
    ("segmentation" absent or [], as detection datasets write them)."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(6):
        img = np.full((S, S, 3), 128, np.uint8)
        for k, cat in enumerate(rng.choice(list(COLORS), size=1 + i % 2, replace=False)):
            x0, y0 = int(rng.integers(2, 26)) + 30 * k, int(rng.integers(2, 30))
            w, h = int(rng.integers(10, 30)), int(rng.integers(10, 30))
            x1, y1 = min(x0 + w, S), min(y0 + h, S)
            img[y0:y1, x0:x1] = COLORS[int(cat)]
            ann = {
                "id": len(annotations) + 1,
                "image_id": i + 1,
                "category_id": int(cat),
                "iscrowd": 0,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
            }
            if len(annotations) % 2:
                ann["segmentation"] = []
            annotations.append(ann)
        cv2.imwrite(os.path.join(root, f"{i}.png"), img)
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": S, "width": S})
    cats = [{"id": c, "name": n} for c, n in zip(COLORS, ("red", "green", "blue"))]
    path = os.path.join(root, "boxes.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": cats}, f)
    return path


def _cfg(tmp_path):
    return load_config(
        TINY,
        [
            "MODEL.CONCEPT.NUM_CONCEPTS",
            "3",
            "MODEL.CONCEPT.HIDDEN_DIM",
            "32",
            "MODEL.CONCEPT.NHEADS",
            "2",
            "MODEL.CONCEPT.DIM_FEEDFORWARD",
            "64",
            "MODEL.CONCEPT.DEC_LAYERS",
            "2",
            "MODEL.CONCEPT.NUM_QUERIES",
            "5",
            "MODEL.CONCEPT.NUM_O2M_QUERIES",
            "4",
            "MODEL.CONCEPT.CONVS_DIM",
            "32",
            "MODEL.CONCEPT.MASK_DIM",
            "32",
            "MODEL.CONCEPT.ENCODER_STRIDE",
            "16",
            "DATASETS.TRAIN",
            f"('{NAME}',)",
            "DATASETS.TEST",
            f"('{NAME}',)",
            "SOLVER.IMS_PER_BATCH",
            "2",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ],
    )


def test_box_only_dataset_trains_and_evaluates(tmp_path):
    json_file = _write_box_only_coco(str(tmp_path))
    register_coco_instances(NAME, {}, json_file, str(tmp_path))
    try:
        cfg = _cfg(tmp_path)
        torch.manual_seed(0)
        model = build_model(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loader = iter(build_train_loader(cfg))
        core = []
        for _ in range(3):
            batch = next(loader)
            assert all(not x["instances"].has("gt_masks") for x in batch)
            losses = model(batch)
            for k in ("loss_mask", "loss_dice", "loss_mask_o2m", "loss_dice_o2m"):
                assert float(losses[k].detach()) == 0.0, k
            for k in ("loss_bbox", "loss_giou", "loss_ce", "presence_loss"):
                assert math.isfinite(float(losses[k].detach())) and float(losses[k].detach()) > 0, k
            assert torch.isfinite(losses[CORE_LOSS_KEY])
            core.append(float(losses[CORE_LOSS_KEY].detach()))
            opt.zero_grad()
            losses[CORE_LOSS_KEY].backward()
            grad = model.backbone.stem.conv1.weight.grad
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
            opt.step()
        assert len(core) == 3 and all(math.isfinite(c) for c in core)

        evaluator = build_evaluator(cfg, NAME, str(tmp_path / "inference"))
        res = inference_on_dataset(model, build_test_loader(cfg, NAME), evaluator)
        # box-only ground truth: the box and presence metrics, nothing computed on masks
        assert set(res) == {"bbox", "bbox_positive", "cgF1_bbox", "presence"}
        assert 0.0 <= res["bbox"]["AP"] <= 100.0 and res["presence"]["num_finds"] == 6 * 3
    finally:
        DatasetCatalog.remove(NAME)
        MetadataCatalog.remove(NAME)
