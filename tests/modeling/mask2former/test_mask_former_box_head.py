"""MaskFormer's optional box head (MODEL.MASK_FORMER.BOX_HEAD) and Sam3LossWrapper on MaskFormer."""

import os

import pytest
import torch

from segtrain.config import load_config
from segtrain.modeling import build_model
from segtrain.modeling.criterion import CORE_LOSS_KEY
from segtrain.modeling.mask2former.transformer_decoder import MultiScaleMaskedTransformerDecoder
from segtrain.structures.instances import Instances
from segtrain.utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TINY = os.path.join(ROOT, "projects", "m2f", "tiny.yaml")
TINY_SAM3 = os.path.join(ROOT, "projects", "m2f", "tiny_sam3loss.yaml")
S = 64


def _decoder(box_head):
    torch.manual_seed(0)
    return MultiScaleMaskedTransformerDecoder(
        16,
        num_classes=3,
        hidden_dim=16,
        num_queries=5,
        nheads=2,
        dim_feedforward=32,
        dec_layers=2,
        pre_norm=False,
        mask_dim=16,
        enforce_input_project=False,
        box_head=box_head,
    )


def test_box_head_outputs_in_every_prediction():
    x = [torch.randn(2, 16, s, s) for s in (2, 4, 8)]
    mask_features = torch.randn(2, 16, 16, 16)
    out = _decoder(True)(x, mask_features)
    for o in [out] + out["aux_outputs"]:
        assert o["pred_boxes"].shape == (2, 5, 4) and ((o["pred_boxes"] > 0) & (o["pred_boxes"] < 1)).all()
        b = o["pred_boxes"]
        xyxy = torch.cat([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], -1)
        torch.testing.assert_close(o["pred_boxes_xyxy"], xyxy)
    assert len(out["aux_outputs"]) == 2


def test_box_head_off_changes_nothing():
    plain, boxed = _decoder(False), _decoder(True)
    assert not any("bbox_embed" in k for k in plain.state_dict())
    assert {k for k in boxed.state_dict() if "bbox_embed" in k} == {
        f"bbox_embed.layers.{i}.{p}" for i in range(3) for p in ("weight", "bias")
    }
    x = [torch.randn(1, 16, s, s) for s in (2, 4, 8)]
    out = plain(x, torch.randn(1, 16, 16, 16))
    assert set(out) == {"pred_logits", "pred_masks", "aux_outputs"}
    assert set(out["aux_outputs"][0]) == {"pred_logits", "pred_masks"}


def _batch():
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(2):
        img = torch.randint(0, 256, (3, S, S), generator=g, dtype=torch.uint8)
        masks = torch.zeros(2, S, S, dtype=torch.bool)
        masks[0, 5:30, 8:40] = True
        masks[1, 34:60, 20:58] = True
        img[:, masks[0]] = torch.tensor([250, 20, 20], dtype=torch.uint8)[:, None]
        img[:, masks[1]] = torch.tensor([20, 20, 250], dtype=torch.uint8)[:, None]
        inst = Instances(
            (S, S),
            gt_classes=torch.tensor([1, 4]),
            gt_masks=masks,
            gt_boxes=torch.tensor([[8, 5, 40, 30], [20, 34, 58, 60]], dtype=torch.float32),
        )
        out.append({"image": img, "instances": inst, "height": S, "width": S, "image_id": i})
    return out


def test_sam3_loss_trains_mask_former_with_box_head():
    cfg = load_config(TINY_SAM3)
    assert cfg.MODEL.CRITERION.NAME == "Sam3LossWrapper" and cfg.MODEL.MASK_FORMER.BOX_HEAD
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert {"pred_boxes", "pred_boxes_xyxy"} <= model.output_keys
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.SOLVER.BASE_LR)
    batch = _batch()
    losses = []
    for _ in range(5):
        out = model(batch)
        opt.zero_grad()
        out[CORE_LOSS_KEY].backward()
        opt.step()
        losses.append(float(out[CORE_LOSS_KEY].detach()))
    assert {"loss_bbox", "loss_giou", "loss_ce", "loss_mask", "loss_dice", "loss_bbox_aux_0"} <= set(out)
    assert float(out["presence_loss"]) == 0.0  # no presence token in Mask2Former
    assert losses[-1] < 0.9 * losses[0], losses


def test_box_criterion_without_box_head_is_a_clear_error():
    cfg = load_config(TINY_SAM3, ["MODEL.MASK_FORMER.BOX_HEAD", "False"])
    with pytest.raises(ConfigError, match="needs 'pred_boxes'.*MODEL.MASK_FORMER.BOX_HEAD True"):
        build_model(cfg)


def test_set_criterion_default_has_no_box_head():
    cfg = load_config(TINY)
    assert cfg.MODEL.CRITERION.NAME == "SetCriterion" and not cfg.MODEL.MASK_FORMER.BOX_HEAD
    model = build_model(cfg)
    assert model.output_keys == {"pred_logits", "pred_masks", "aux_outputs"}
    assert not any("bbox_embed" in k for k in model.state_dict())
