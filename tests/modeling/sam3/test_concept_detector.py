"""ConceptDetector end to end on a tiny model: the SAM 3 outputs Sam3LossWrapper needs,
training steps that reduce the loss, eval results per find, config checks."""

import math
import os

import pytest
import torch

from segtrain.config import load_config
from segtrain.modeling import build_model
from segtrain.modeling.criterion import CORE_LOSS_KEY
from segtrain.structures import Instances
from segtrain.utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TINY = os.path.join(ROOT, "projects", "sam3", "tiny.yaml")
S = 64
TINY_MODEL = [
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
    "MODEL.CONCEPT.TWO_STAGE",
    "True",
]


def _cfg(*extra):
    return load_config(TINY, TINY_MODEL + list(extra))


def _batch(masks=True):
    """Two 64x64 images: a red box (concept 0) and a blue box (concept 2); finds 0, 2 and 1
    (absent) on the first image, 1 (absent) on the second, which has no object."""
    img = torch.full((3, S, S), 128, dtype=torch.uint8)
    m = torch.zeros(2, S, S, dtype=torch.bool)
    m[0, 5:30, 8:40] = True
    m[1, 34:60, 20:58] = True
    img[:, m[0]] = torch.tensor([250, 20, 20], dtype=torch.uint8)[:, None]
    img[:, m[1]] = torch.tensor([20, 20, 250], dtype=torch.uint8)[:, None]
    inst = Instances(
        (S, S), gt_classes=torch.tensor([0, 2]), gt_boxes=torch.tensor([[8.0, 5, 40, 30], [20, 34, 58, 60]])
    )
    if masks:
        inst.gt_masks = m
        inst.gt_mask_valid = torch.ones(2, dtype=torch.bool)
    empty = Instances((S, S), gt_classes=torch.zeros(0, dtype=torch.int64), gt_boxes=torch.zeros(0, 4))
    if masks:
        empty.gt_masks = torch.zeros(0, S, S, dtype=torch.bool)
    return [
        {
            "image": img,
            "instances": inst,
            "height": S,
            "width": S,
            "image_id": 1,
            "find_categories": torch.tensor([0, 2, 1]),
        },
        {
            "image": torch.full((3, S, S), 90, dtype=torch.uint8),
            "instances": empty,
            "height": S,
            "width": S,
            "image_id": 2,
            "find_categories": torch.tensor([1]),
        },
    ]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(_cfg())


def test_project_config_has_the_official_loss_settings():
    cfg = load_config(TINY)
    c = cfg.MODEL.CRITERION.SAM3
    assert cfg.MODEL.META_ARCHITECTURE == "ConceptDetector" and cfg.MODEL.CRITERION.NAME == "Sam3LossWrapper"
    assert dict(c.BOXES.WEIGHT_DICT) == {"loss_bbox": 5.0, "loss_giou": 2.0}
    assert dict(c.IABCE.WEIGHT_DICT) == {"loss_ce": 20.0, "presence_loss": 20.0}
    assert dict(c.MASKS.WEIGHT_DICT) == {"loss_mask": 200.0, "loss_dice": 10.0}
    assert (c.IABCE.POS_WEIGHT, c.IABCE.PAD_N_QUERIES, c.O2M_WEIGHT) == (10.0, 200, 2.0)
    m = cfg.MODEL.MATCHER
    assert m.NAME == "BinaryHungarianMatcherV2" and m.BINARY_HUNGARIAN.FOCAL
    assert (m.BINARY_HUNGARIAN.COST_CLASS, m.BINARY_HUNGARIAN.COST_BBOX, m.BINARY_HUNGARIAN.COST_GIOU) == (
        2.0,
        5.0,
        2.0,
    )
    assert cfg.INPUT.DATASET_MAPPER_NAME == "FindDatasetMapper" and cfg.TEST.EVALUATOR == ("FindEvaluator",)


def test_training_outputs_reach_every_loss(model):
    model.train()
    assert set(model.criterion.required_output_keys) <= model.output_keys
    images = model.preprocess_image(_batch())
    from segtrain.data.find import collate_find_targets

    finds = collate_find_targets(_batch(), tuple(images.tensor.shape[-2:]))
    out = model.predict(images, finds, with_o2m=True)
    B = 4
    assert out["pred_logits"].shape == (B, 5, 1) and out["pred_boxes"].shape == (B, 5, 4)
    assert out["pred_masks"].shape == (B, 5, S // 4, S // 4) and out["presence_logit_dec"].shape == (B, 1)
    assert out["pred_logits_o2m"].shape == (B, 4, 1) and out["pred_masks_o2m"].shape == (B, 4, S // 4, S // 4)
    assert len(out["aux_outputs"]) == 1 and "pred_masks" not in out["aux_outputs"][0]  # Masks: compute_aux False
    assert out["first_stage"]["pred_logits"].shape == (B, (S // 16) ** 2, 1)
    for k in ("pred_boxes", "pred_boxes_o2m"):
        assert ((out[k] >= 0) & (out[k] <= 1)).all()
    torch.testing.assert_close(
        out["pred_boxes_xyxy"][..., 2:] - out["pred_boxes_xyxy"][..., :2], out["pred_boxes"][..., 2:]
    )

    losses = model(_batch())
    for k in (
        "loss_ce",
        "presence_loss",
        "loss_bbox",
        "loss_giou",
        "loss_mask",
        "loss_dice",
        "loss_bbox_aux_0",
        "presence_loss_aux_0",
        "loss_dice_o2m",
        "loss_giou_fs",
    ):
        assert k in losses and torch.isfinite(losses[k]), k
    assert float(losses["loss_mask"].detach()) > 0 and float(losses["presence_loss"].detach()) > 0
    model.zero_grad()
    losses[CORE_LOSS_KEY].backward()
    for name in (
        "backbone.stem.conv1.weight",
        "head.presence_head.bias",
        "head.decoder.presence_token.weight",
        "head.prompt_encoder.concept_embed.weight",
        "head.mask_head.mask_bias",
    ):
        g = dict(model.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name


def test_training_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = build_model(_cfg()).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = _batch()
    first = None
    for _ in range(6):
        out = model(batch)
        opt.zero_grad()
        out[CORE_LOSS_KEY].backward()
        opt.step()
        first = first if first is not None else {k: float(v.detach()) for k, v in out.items()}
    last = {k: float(v.detach()) for k, v in out.items()}
    assert last["core_loss_final"] < 0.8 * first["core_loss_final"], (first["core_loss_final"], last["core_loss_final"])
    for k in ("presence_loss", "loss_bbox", "loss_dice"):
        assert last[k] < first[k], (k, first[k], last[k])


def test_box_only_batch_trains_with_mask_terms_off(model):
    model.train()
    losses = {k: v.detach() for k, v in model(_batch(masks=False)).items()}
    assert float(losses["loss_mask"]) == 0.0 and float(losses["loss_dice"]) == 0.0
    assert float(losses["loss_bbox"]) > 0 and torch.isfinite(losses[CORE_LOSS_KEY])


def test_eval_results_per_find(model):
    model.eval()
    model.score_threshold = 0.0
    batch = _batch()
    batch[0]["height"], batch[0]["width"] = 100, 80
    with torch.no_grad():
        res = model(batch)
        from segtrain.data.find import find_batch_from_inputs

        raw = model.predict(model.preprocess_image(batch), find_batch_from_inputs(batch), with_o2m=False)
    assert len(res) == 2 and "pred_logits_o2m" not in raw
    inst, finds = res[0]["instances"], res[0]["finds"]
    assert inst.image_size == (100, 80) and len(inst) == 3 * 5  # every query of every find kept
    assert inst.pred_masks.shape == (15, 100, 80) and inst.pred_masks.dtype == torch.bool
    assert finds["categories"].tolist() == [0, 2, 1]
    presence = raw["presence_logit_dec"].sigmoid()[:, 0]
    torch.testing.assert_close(finds["presence_scores"], presence[:3])
    expected = (raw["pred_logits"][:3, :, 0].sigmoid() * presence[:3, None]).reshape(-1)
    torch.testing.assert_close(inst.scores.sort().values, expected.sort().values)
    assert sorted(set(inst.pred_classes.tolist())) == [0, 1, 2]
    assert (inst.pred_boxes[:, 0::2] <= 80).all() and (inst.pred_boxes[:, 1::2] <= 100).all()
    assert res[1]["finds"]["categories"].tolist() == [1] and len(res[1]["instances"]) == 5
    model.score_threshold = 1.0
    with torch.no_grad():
        assert len(model(batch)[0]["instances"]) == 0


def test_set_criterion_is_refused():
    with pytest.raises(ConfigError, match="ConceptDetector trains on finds.*SetCriterion.*Sam3LossWrapper"):
        build_model(_cfg("MODEL.CRITERION.NAME", "SetCriterion", "MODEL.MATCHER.NAME", "HungarianMatcher"))


def test_bad_encoder_stride_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"ENCODER_STRIDE=4 .*valid: 32, 16, 8"):
        build_model(_cfg("MODEL.CONCEPT.ENCODER_STRIDE", "4"))


def _train_three_steps(scale_by_find_batch_size: bool):
    from segtrain.solver import build_gradient_clipper, build_optimizer

    cfg = _cfg("MODEL.CRITERION.SAM3.SCALE_BY_FIND_BATCH_SIZE", str(scale_by_find_batch_size))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    opt, clip = build_optimizer(cfg, model), build_gradient_clipper(cfg)
    norms = []
    for _ in range(3):
        torch.manual_seed(1)  # the same point draws in both runs
        out = model(_batch())
        opt.zero_grad()
        out[CORE_LOSS_KEY].backward()
        norms.append(float(clip([p for p in model.parameters() if p.grad is not None])))
        opt.step()
    return model, out, norms


def test_sqrt_find_batch_scale_does_not_change_training_under_full_model_clipping():
    """The tiny project turns SCALE_BY_FIND_BATCH_SIZE off so the logged total stays readable.
    With the official full-model gradient clipping (0.1) the gradient is rescaled to norm 0.1
    either way, so the AdamW updates -- and the trained model -- are the same."""
    on, out_on, norms_on = _train_three_steps(True)
    off, out_off, norms_off = _train_three_steps(False)
    assert min(norms_off) > 0.1  # clipping was active in every step of both runs
    ratio = float(out_on[CORE_LOSS_KEY].detach()) / float(out_off[CORE_LOSS_KEY].detach())
    assert ratio == pytest.approx(math.sqrt(4), rel=1e-3)  # 4 finds in the batch
    for (name, a), b in zip(on.named_parameters(), off.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
