"""projects/m2f/tiny.yaml end to end with the real backbone, pixel decoder and criterion:
build, training steps that reduce the loss on a fixed batch, eval outputs."""

import os

import pytest
import torch

from segtrain.config import load_config
from segtrain.modeling import build_model
from segtrain.modeling.criterion import CORE_LOSS_KEY
from segtrain.structures.instances import Instances

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TINY = os.path.join(ROOT, "projects", "m2f", "tiny.yaml")
S = 64  # image side: divisible by 32, small for speed


def _batch(n=2):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        img = torch.randint(0, 256, (3, S, S), generator=g, dtype=torch.uint8)
        masks = torch.zeros(2, S, S, dtype=torch.bool)
        masks[0, 5:30, 8:40] = True
        masks[1, 34:60, 20:58] = True
        img[:, masks[0]] = torch.tensor([250, 20, 20], dtype=torch.uint8)[:, None]  # make objects visible
        img[:, masks[1]] = torch.tensor([20, 20, 250], dtype=torch.uint8)[:, None]
        inst = Instances((S, S))
        inst.gt_classes = torch.tensor([1, 4])
        inst.gt_masks = masks
        inst.gt_boxes = torch.tensor([[8, 5, 40, 30], [20, 34, 58, 60]], dtype=torch.float32)
        out.append({"image": img, "instances": inst, "height": S, "width": S, "image_id": i})
    return out


@pytest.fixture(scope="module")
def cfg():
    return load_config(TINY)


def test_tiny_config_keys(cfg):
    assert cfg.MODEL.META_ARCHITECTURE == "MaskFormer" and cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 6
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == 4 and cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON


def test_training_steps_reduce_the_loss(cfg):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert len(model.sem_seg_head.predictor.transformer_cross_attention_layers) == 3
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.SOLVER.BASE_LR)
    batch = _batch()
    losses = []
    for _ in range(5):
        torch.manual_seed(1)  # same sampled points each step: only the weights change
        out = model(batch)
        opt.zero_grad()
        out[CORE_LOSS_KEY].backward()
        opt.step()
        losses.append(float(out[CORE_LOSS_KEY].detach()))
    assert {"loss_ce", "loss_mask", "loss_dice", "loss_ce_2"} <= set(out) and "loss_ce_3" not in out
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.9 * losses[0], losses


def test_eval_output_contract(cfg):
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    batch = _batch(1)
    batch[0]["height"], batch[0]["width"] = 100, 80
    with torch.no_grad():
        (res,) = model(batch)
    inst = res["instances"]
    k = cfg.TEST.DETECTIONS_PER_IMAGE
    assert inst.image_size == (100, 80) and inst.pred_masks.shape == (k, 100, 80)
    assert inst.pred_masks.dtype == torch.bool and inst.pred_boxes.shape == (k, 4)
    assert inst.scores.shape == (k,) and inst.pred_classes.dtype == torch.int64
    assert ((inst.scores >= 0) & (inst.scores <= 1)).all()
    assert int(inst.pred_classes.max()) < 6


def test_old_official_key_layouts_are_renamed_on_load(cfg):
    torch.manual_seed(0)
    model = build_model(cfg)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    # pre-release decoder name and the MaskFormer-v1 head layout (pixel decoder at the head's root)
    state["sem_seg_head.predictor.static_query.weight"] = state.pop("sem_seg_head.predictor.query_feat.weight") + 1
    for k in [k for k in state if k.startswith("sem_seg_head.pixel_decoder.")]:
        state[k.replace("sem_seg_head.pixel_decoder.", "sem_seg_head.")] = state.pop(k)
    fresh = build_model(cfg)
    result = fresh.load_state_dict(state, strict=True)  # a plain dict: no version metadata
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(
        fresh.sem_seg_head.predictor.query_feat.weight, model.sem_seg_head.predictor.query_feat.weight + 1
    )
    torch.testing.assert_close(
        fresh.sem_seg_head.pixel_decoder.mask_features.weight, model.sem_seg_head.pixel_decoder.mask_features.weight
    )
