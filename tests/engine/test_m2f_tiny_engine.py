"""projects/m2f/tiny.yaml through DefaultTrainer on tiny built-in shapes (generated under a
temporary $SEGTRAIN_DATASETS): bf16 autocast training on CPU lowers the loss; the validation
loss (through the real test mapper, which keeps the annotations), the prediction images, the
"train/" key prefix and the evaluation progress lines in one short run; the iteration in the
real matcher's non-finite-cost error."""

import json
import logging
import math
import os

import cv2
import pytest
import torch
from torch import nn

from segtrain.config import load_config
from segtrain.engine import AMPTrainer, DefaultTrainer
from segtrain.engine.hooks import CallbackHook
from segtrain.utils.env import seed_all_rng
from segtrain.utils.errors import NonFiniteLossError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "projects", "m2f", "tiny.yaml")


@pytest.fixture
def shapes_64(tmp_path, tmp_datasets_root):
    return [
        "DATASETS.SHAPES.IMAGE_SIZE",
        "64",
        "INPUT.MIN_SIZE_TRAIN",
        "(64,)",
        "INPUT.MAX_SIZE_TRAIN",
        "64",
        "INPUT.MIN_SIZE_TEST",
        "64",
        "INPUT.MAX_SIZE_TEST",
        "64",
        "WRITERS.TENSORBOARD",
        "False",
        "SOLVER.CHECKPOINT_PERIOD",
        "1000",
        "OUTPUT_DIR",
        str(tmp_path / "out"),
    ]


def _trainer(opts):
    cfg = load_config(TINY, opts)
    cfg.freeze()
    seed_all_rng(cfg.SEED)
    t = DefaultTrainer(cfg)
    t.resume_or_load(resume=False)
    return t


@pytest.mark.slow
def test_amp_bf16_on_cpu_lowers_the_loss(shapes_64):
    """Two training images (one batch, no flip), 8 iterations under bf16 autocast."""
    t = _trainer(
        shapes_64
        + [
            "SOLVER.AMP.ENABLED",
            "True",
            "DATASETS.SHAPES.NUM_TRAIN",
            "2",
            "INPUT.RANDOM_FLIP",
            "none",
            "DATASETS.TEST",
            "()",
            "SOLVER.MAX_ITER",
            "8",
        ]
    )
    assert isinstance(t._trainer, AMPTrainer) and t._trainer.dtype == torch.bfloat16
    assert t._trainer.grad_scaler is None  # no scaler needed for bf16
    seen = {}
    # the backbone and the transformer decoder run in bf16 (the deformable pixel decoder keeps fp32)
    conv = next(m for m in t.model.backbone.modules() if isinstance(m, nn.Conv2d))
    linear = t.model.sem_seg_head.predictor.class_embed
    conv.register_forward_hook(lambda mod, inp, out: seen.setdefault("conv", set()).add(out.dtype))
    linear.register_forward_hook(lambda mod, inp, out: seen.setdefault("linear", set()).add(out.dtype))
    t.train()
    losses = [v for v, _ in t.storage.history("core_loss").values()]
    assert seen == {"conv": {torch.bfloat16}, "linear": {torch.bfloat16}}
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.75 * losses[0], losses
    assert all(p.dtype == torch.float32 for p in t.model.parameters())  # master weights stay fp32


@pytest.mark.slow
def test_val_loss_vis_prefix_and_eval_progress(shapes_64, caplog, monkeypatch):
    out = shapes_64[-1]
    monkeypatch.setattr(logging.getLogger("segtrain"), "propagate", True)
    caplog.set_level(logging.INFO, logger="segtrain")
    t = _trainer(
        shapes_64
        + [
            "DATASETS.SHAPES.NUM_TRAIN",
            "4",
            "DATASETS.SHAPES.NUM_VAL",
            "4",
            "SOLVER.MAX_ITER",
            "4",
            "TEST.EVAL_PERIOD",
            "2",
            "TEST.VAL_LOSS.ENABLED",
            "True",
            "TEST.VAL_LOSS.NUM_BATCHES",
            "1",
            "TEST.VIS.PERIOD",
            "2",
            "TEST.VIS.NUM_IMAGES",
            "2",
            "TEST.VIS.SCORE_THRESHOLD",
            "0.0",
            "WRITERS.TRAIN_PREFIX",
            "train/",
            "LOG_PERIOD",
            "1",
        ]
    )
    t.train()
    lines = [json.loads(x) for x in open(os.path.join(out, "metrics.json"))]
    val = {x["iteration"]: x for x in lines if "val/total_loss" in x}
    assert sorted(val) == [1, 3]
    for rec in val.values():  # the criterion's keys (last layer and aux copies), all finite
        assert {"val/loss_ce", "val/loss_mask", "val/loss_dice", "val/loss_ce_0", "val/core_loss"} <= set(rec)
        assert all(math.isfinite(v) for k, v in rec.items() if k.startswith("val/"))
    assert any("Validation loss at iteration 1 over 2 inputs" in r.getMessage() for r in caplog.records)
    ap = [x["iteration"] for x in lines if "segm/AP" in x]
    assert ap == [1, 3]
    train_keys = set().union(*[x for x in lines if "train/total_loss" in x])
    assert {"train/loss_ce", "train/loss_mask", "train/loss_dice", "train/core_loss"} <= train_keys
    assert "core_loss" not in train_keys
    assert sorted(os.listdir(os.path.join(out, "vis"))) == ["iter_0000001.png", "iter_0000003.png"]
    img = cv2.imread(os.path.join(out, "vis", "iter_0000003.png"))
    assert img.shape == (2 * 64, 2 * 64, 3)
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Inference done")]
    assert progress and "ETA=" in progress[0]
    assert any(r.getMessage().startswith("Total inference time") for r in caplog.records)


@pytest.mark.slow
def test_matcher_non_finite_cost_names_the_iteration(shapes_64):
    """The real matcher raises on a NaN cost inside the model; the loop adds the iteration."""
    t = _trainer(shapes_64 + ["DATASETS.SHAPES.NUM_TRAIN", "2", "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "4"])
    linear = t.model.sem_seg_head.predictor.class_embed

    def poison(trainer):
        if trainer.iter == 2:
            with torch.no_grad():
                linear.weight.fill_(float("nan"))

    t.register_hooks([CallbackHook(before_step=poison)])
    with pytest.raises(NonFiniteLossError) as e:
        t.train()
    msg = str(e.value)
    assert msg.startswith("HungarianMatcher: non-finite") and msg.endswith(" (at iteration 2)")
    assert "\n" not in msg and msg.count("iteration") == 1
