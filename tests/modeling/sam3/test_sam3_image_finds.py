"""``Sam3Image`` on segtrain's find inputs (``FindDatasetMapper`` dicts): training returns
``Sam3LossWrapper``'s losses on the official outputs (DAC one-to-many, aux, presence), the
gradients reach the ViT, the text encoder and the decoder, a few AdamW steps lower the loss;
eval returns each image's detections with its finds' presence scores."""

import math

import pytest
import torch

from segtrain.modeling import build_model
from segtrain.modeling.criterion import CORE_LOSS_KEY
from segtrain.structures.instances import Instances
from segtrain.utils.errors import ConfigError

S = 64
NAMES = ["red box", "green box", "blue box"]


def find_batch(masks=True):
    """A 64x48 image with a red box (concept 0) and a blue box (concept 2), finds 0, 2 and 1
    (absent); a 56x64 image with nothing, find 1 (absent)."""
    img = torch.full((3, S, 48), 128, dtype=torch.uint8)
    m = torch.zeros(2, S, 48, dtype=torch.bool)
    m[0, 5:30, 8:40] = True
    m[1, 34:60, 20:44] = True
    img[:, m[0]] = torch.tensor([250, 20, 20], dtype=torch.uint8)[:, None]
    img[:, m[1]] = torch.tensor([20, 20, 250], dtype=torch.uint8)[:, None]
    inst = Instances(
        (S, 48), gt_classes=torch.tensor([0, 2]), gt_boxes=torch.tensor([[8.0, 5, 40, 30], [20, 34, 44, 60]])
    )
    empty = Instances((56, S), gt_classes=torch.zeros(0, dtype=torch.int64), gt_boxes=torch.zeros(0, 4))
    if masks:
        inst.gt_masks, inst.gt_mask_valid = m, torch.ones(2, dtype=torch.bool)
        empty.gt_masks = torch.zeros(0, 56, S, dtype=torch.bool)
    first = {"image": img, "instances": inst, "height": S, "width": 48, "image_id": 1}
    second = {"image": torch.full((3, 56, S), 90, dtype=torch.uint8), "instances": empty, "height": 112, "width": 128}
    first["find_categories"] = torch.tensor([0, 2, 1])
    second.update(image_id=2, find_categories=torch.tensor([1]))
    return [first, second]


@pytest.fixture
def model(tiny_sam3_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_sam3_cfg("MODEL.SAM3.DROPOUT", 0.0, "MODEL.SAM3.VIT.DROP_PATH_RATE", 0.0))
    model.class_names = list(NAMES)
    return model


def test_training_losses_gradients_and_steps(model):
    model.train()
    losses = model(find_batch())
    core = losses[CORE_LOSS_KEY]
    assert math.isfinite(float(core.detach())) and float(core.detach()) > 0
    for key in ("loss_ce", "presence_loss", "loss_bbox", "loss_giou", "loss_mask", "loss_dice"):
        assert key in losses and math.isfinite(float(losses[key].detach())), key
    assert "loss_ce_o2m" in losses and "loss_bbox_aux_0" in losses and "presence_loss_aux_0" in losses
    core.backward()
    for module in (
        model.backbone.vision_backbone.trunk.blocks[0].attn.qkv,
        model.backbone.language_backbone.resizer,
        model.transformer.decoder.layers[0].linear1,
        model.segmentation_head.instance_seg_head,
        model.dot_prod_scoring.hs_proj,
    ):
        assert module.weight.grad is not None and module.weight.grad.abs().sum() > 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = float(core.detach())
    for _ in range(4):
        optimizer.step()
        optimizer.zero_grad()
        core = model(find_batch())[CORE_LOSS_KEY]
        core.backward()
    assert float(core.detach()) < first


def test_box_only_finds_train_with_zero_mask_terms(model):
    model.train()
    losses = model(find_batch(masks=False))
    assert float(losses["loss_mask"].detach()) == 0.0 and float(losses["loss_bbox"].detach()) > 0


def test_eval_detections_per_image(model):
    model.eval()
    with torch.no_grad():
        results = model(find_batch())
    assert [r["finds"]["categories"].tolist() for r in results] == [[0, 2, 1], [1]]
    first, second = results[0]["instances"], results[1]["instances"]
    assert first.image_size == (S, 48) and second.image_size == (112, 128)
    assert len(first) == 3 * 8 and len(second) == 8  # score threshold 0: every query of every find
    assert first.pred_masks.shape == (24, S, 48) and second.pred_masks.shape == (8, 112, 128)
    assert first.pred_boxes[:, 0::2].max() <= 48 and second.pred_boxes[:, 0::2].max() <= 128
    presence = results[0]["finds"]["presence_scores"]
    assert presence.shape == (3,) and ((presence > 0) & (presence < 1)).all()
    assert 0 <= float(first.scores.min()) and float(first.scores.max()) <= 1


def test_prompts_come_from_class_names_or_find_texts(model):
    model.eval()
    batch = find_batch()
    batch[0]["find_texts"] = ["a red square", "a blue square", "a green square"]
    batch[1]["find_texts"] = ["a green square"]
    with torch.no_grad():
        with_texts = model(batch)[0]["instances"].scores
        with_names = model(find_batch())[0]["instances"].scores
    assert not torch.allclose(with_texts, with_names)
    model.class_names = None
    with pytest.raises(ConfigError, match="no class names"):
        model(find_batch())


def test_a_non_find_criterion_is_refused(tiny_sam3_cfg):
    cfg = tiny_sam3_cfg("MODEL.CRITERION.NAME", "SetCriterion", "MODEL.MATCHER.NAME", "HungarianMatcher")
    with pytest.raises(ConfigError, match="trains on finds"):
        build_model(cfg)


def test_official_state_dict_is_unchanged_by_the_training_parts(model):
    assert not any(k.startswith(("criterion", "_pixel")) for k in model.state_dict())
