"""``projects/sam3/tiny.yaml``: the official ``Sam3Image`` at small sizes (the same config keys as
``sam3_image.yaml``, only sizes differ), the official loss settings but one documented
exception, finds of the built-in shapes prompted with their class names; trained through the
real loader, with the documented exception shown not to change training under the official
gradient clipping; a box-only dataset trains and evaluates."""

import json
import math
import os

import cv2
import numpy as np
import pytest
import torch

from segtrain.config import get_cfg
from segtrain.data import (
    build_test_loader,
    build_train_loader,
    register_coco_instances,
)
from segtrain.data.datasets import SHAPES_CLASSES
from segtrain.evaluation import build_evaluator
from segtrain.evaluation.evaluator import inference_on_dataset
from segtrain.modeling import build_model
from segtrain.modeling.criterion import CORE_LOSS_KEY
from segtrain.modeling.sam3 import Sam3Image
from segtrain.solver import build_gradient_clipper, build_optimizer

PROJECT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "projects", "sam3")

# MODEL.SAM3 keys a preset may set to other values than sam3_image.yaml: sizes, and the
# regularisation / recomputation switches that a from-scratch CPU run turns off
SIZE_KEYS = {
    "IMAGE_SIZE", "PATCH_SIZE", "VIT.EMBED_DIM", "VIT.DEPTH", "VIT.NUM_HEADS", "VIT.MLP_RATIO",
    "VIT.GLOBAL_ATT_BLOCKS", "VIT.WINDOW_SIZE", "VIT.PRETRAIN_IMG_SIZE", "VIT.DROP_PATH_RATE", "TEXT.WIDTH",
    "TEXT.HEADS", "TEXT.LAYERS", "TEXT.CONTEXT_LENGTH", "D_MODEL", "NUM_HEADS", "DIM_FEEDFORWARD", "DROPOUT",
    "ENCODER.NUM_LAYERS", "DECODER.NUM_LAYERS", "DECODER.NUM_QUERIES", "GEOMETRY.NUM_LAYERS",
    "USE_ACT_CHECKPOINT",
}  # fmt: skip


def _leaves(node, prefix=""):
    out = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _project(name):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(PROJECT, name))
    return cfg


def test_tiny_preset_is_sam3_image_at_other_sizes_with_the_official_loss():
    tiny, full = _project("tiny.yaml"), _project("sam3_image.yaml")
    assert tiny.MODEL.META_ARCHITECTURE == full.MODEL.META_ARCHITECTURE == "Sam3Image"
    differ = {k for k, v in _leaves(tiny.MODEL.SAM3).items() if _leaves(full.MODEL.SAM3)[k] != v}
    assert differ and differ <= SIZE_KEYS, differ - SIZE_KEYS
    assert tiny.MODEL.MATCHER == full.MODEL.MATCHER
    loss_differ = {k for k, v in _leaves(tiny.MODEL.CRITERION).items() if _leaves(full.MODEL.CRITERION)[k] != v}
    assert loss_differ == {"SAM3.SCALE_BY_FIND_BATCH_SIZE"}  # the one exception tiny.yaml documents
    assert (tiny.MODEL.PIXEL_MEAN, tiny.MODEL.PIXEL_STD) == (full.MODEL.PIXEL_MEAN, full.MODEL.PIXEL_STD)
    assert tiny.INPUT.DATASET_MAPPER_NAME == "FindDatasetMapper" and tiny.TEST.EVALUATOR == ("FindEvaluator",)
    # every category a find of every image, as the official training builds them
    assert tiny.INPUT.FIND.NUM_NEGATIVES == -1 and tiny.INPUT.FIND.NUM_CONCEPTS == 0
    s = tiny.MODEL.SAM3
    assert 8 <= s.IMAGE_SIZE // s.PATCH_SIZE <= 16  # the token map


def test_trains_on_shapes_finds_prompted_with_class_names(tiny_preset_cfg, tmp_datasets_root):
    cfg = tiny_preset_cfg("MODEL.SAM3.DROPOUT", 0.0)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert isinstance(model, Sam3Image) and model.class_names == list(SHAPES_CLASSES)
    batch = next(iter(build_train_loader(cfg)))
    assert all(len(x["find_categories"]) == len(SHAPES_CLASSES) for x in batch)
    losses = model(batch)
    assert set(model.criterion.required_output_keys) <= model.output_keys
    for key in ("loss_ce", "presence_loss", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss_dice_o2m"):
        assert math.isfinite(float(losses[key].detach())), key
    losses[CORE_LOSS_KEY].backward()
    embed = model.backbone.language_backbone.encoder.token_embedding.weight.grad
    assert embed is not None and embed.abs().sum() > 0  # the class names reach the loss


def _train_three_steps(cfg, batch):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt, clip = build_optimizer(cfg, model), build_gradient_clipper(cfg)
    norms = []
    for _ in range(3):
        out = model(batch)
        opt.zero_grad()
        out[CORE_LOSS_KEY].backward()
        norms.append(float(clip([p for p in model.parameters() if p.grad is not None])))
        opt.step()
    return model, out, norms


def test_sqrt_find_batch_scale_does_not_change_training_under_full_model_clipping(tiny_preset_cfg, tmp_datasets_root):
    """tiny.yaml turns SCALE_BY_FIND_BATCH_SIZE off so the logged total stays readable. With the
    official full-model gradient clipping (0.1) the gradient is rescaled to norm 0.1 either
    way, so the AdamW updates, and the trained weights, are the same."""
    base = ["MODEL.SAM3.DROPOUT", 0.0, "MODEL.SAM3.VIT.DROP_PATH_RATE", 0.0]
    batch = next(iter(build_train_loader(tiny_preset_cfg(*base))))
    num_finds = sum(len(x["find_categories"]) for x in batch)
    on, out_on, _ = _train_three_steps(
        tiny_preset_cfg(*base, "MODEL.CRITERION.SAM3.SCALE_BY_FIND_BATCH_SIZE", True), batch
    )
    off, out_off, norms_off = _train_three_steps(tiny_preset_cfg(*base), batch)
    assert min(norms_off) > 0.1  # clipping was active in every step of both runs
    ratio = float(out_on[CORE_LOSS_KEY].detach()) / float(out_off[CORE_LOSS_KEY].detach())
    assert ratio == pytest.approx(math.sqrt(num_finds), rel=1e-3)
    # atol: float round-off in sums over many terms (the box RPB biases) reaches ~2e-5 of the
    # ~3e-3 that three steps move a weight
    for (name, a), b in zip(on.named_parameters(), off.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=5e-5, msg=name)


BOX_ONLY = "_test_sam3_tiny_box_only"
COLORS = {3: (20, 20, 240), 7: (20, 240, 20), 11: (240, 20, 20)}  # BGR, by dataset category id


def _write_box_only_coco(root):
    """6 images of 32x32 with 1-2 coloured rectangles; annotations are boxes only
    ("segmentation" absent or [], as detection datasets write them)."""
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(6):
        img = np.full((32, 32, 3), 128, np.uint8)
        for k, cat in enumerate(rng.choice(list(COLORS), size=1 + i % 2, replace=False)):
            x0, y0 = int(rng.integers(1, 12)) + 15 * k, int(rng.integers(1, 15))
            x1, y1 = min(x0 + int(rng.integers(5, 15)), 32), min(y0 + int(rng.integers(5, 15)), 32)
            img[y0:y1, x0:x1] = COLORS[int(cat)]
            ann = {"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(cat), "iscrowd": 0}
            ann.update(bbox=[x0, y0, x1 - x0, y1 - y0], area=(x1 - x0) * (y1 - y0))
            if len(annotations) % 2:
                ann["segmentation"] = []
            annotations.append(ann)
        cv2.imwrite(os.path.join(root, f"{i}.png"), img)
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": 32, "width": 32})
    cats = [{"id": c, "name": n} for c, n in zip(COLORS, ("red", "green", "blue"))]
    path = os.path.join(root, "boxes.json")
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": cats}, f)
    return path


def test_box_only_dataset_trains_and_evaluates(tiny_preset_cfg, tmp_path):
    register_coco_instances(BOX_ONLY, {}, _write_box_only_coco(str(tmp_path)), str(tmp_path))
    cfg = tiny_preset_cfg(
        "DATASETS.TRAIN", (BOX_ONLY,), "DATASETS.TEST", (BOX_ONLY,),
        "INPUT.MIN_SIZE_TRAIN", (32,), "INPUT.MAX_SIZE_TRAIN", 32, "INPUT.MIN_SIZE_TEST", 32,
        "INPUT.MAX_SIZE_TEST", 32, "OUTPUT_DIR", str(tmp_path / "out"),
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert model.class_names == ["red", "green", "blue"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = iter(build_train_loader(cfg))
    for _ in range(2):
        batch = next(loader)
        assert all(not x["instances"].has("gt_masks") for x in batch)
        losses = model(batch)
        for k in ("loss_mask", "loss_dice", "loss_mask_o2m", "loss_dice_o2m"):
            assert float(losses[k].detach()) == 0.0, k
        for k in ("loss_bbox", "loss_giou", "loss_ce", "presence_loss"):
            assert math.isfinite(float(losses[k].detach())) and float(losses[k].detach()) > 0, k
        opt.zero_grad()
        losses[CORE_LOSS_KEY].backward()
        grad = model.backbone.vision_backbone.trunk.patch_embed.proj.weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
        opt.step()
    evaluator = build_evaluator(cfg, BOX_ONLY, str(tmp_path / "inference"))
    res = inference_on_dataset(model, build_test_loader(cfg, BOX_ONLY), evaluator)
    # box-only ground truth: the box and presence metrics, nothing computed on masks
    assert set(res) == {"bbox", "bbox_positive", "cgF1_bbox", "presence"}
    assert 0.0 <= res["bbox"]["AP"] <= 100.0 and res["presence"]["num_finds"] == 6 * 3
