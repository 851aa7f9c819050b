"""SAM 3 loss pieces (Boxes, IABCEMdetr, Masks) against hand-computed values."""

import math

import pytest
import torch
import torch.nn.functional as F

from segtrain.config import get_cfg
from segtrain.layers.losses import dice_loss, sigmoid_focal_loss
from segtrain.layers.point_sample import calculate_uncertainty, get_uncertain_point_coords_with_randomness, point_sample
from segtrain.modeling.criterion import CORE_LOSS_KEY, Boxes, IABCEMdetr, Masks
from segtrain.modeling.criterion.sam3_loss_fns import SAM3_LOSS_REGISTRY
from segtrain.structures.boxes import box_cxcywh_to_xyxy


def bce(s, t):
    return math.log1p(math.exp(s)) - s * t


def sig(s):
    return 1 / (1 + math.exp(-s))


def idx(b, q, t):
    return torch.tensor(b), torch.tensor(q), torch.tensor(t)


def _targets(boxes, num_boxes, ids=None, exhaustive=None, masks=None, valid=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).view(-1, 4)
    nb = torch.tensor(num_boxes)
    maxn = max(int(nb.max()), 1)
    padded = torch.zeros(len(num_boxes), maxn, 4)
    obj = torch.full((len(num_boxes), maxn), -1)
    k = 0
    for i, n in enumerate(num_boxes):
        padded[i, :n] = boxes[k : k + n]
        obj[i, :n] = torch.arange(n)
        k += n
    return {
        "boxes": boxes,
        "boxes_xyxy": box_cxcywh_to_xyxy(boxes),
        "num_boxes": nb,
        "boxes_padded": padded,
        "object_ids_padded": obj if ids is None else ids,
        "is_exhaustive": torch.ones(len(num_boxes), dtype=torch.bool) if exhaustive is None else exhaustive,
        "masks": masks,
        "is_valid_mask": valid,
    }


def _outputs(logits, boxes):
    boxes = torch.tensor(boxes, dtype=torch.float32)
    return {
        "pred_logits": torch.tensor(logits, dtype=torch.float32)[..., None],
        "pred_boxes": boxes,
        "pred_boxes_xyxy": box_cxcywh_to_xyxy(boxes),
    }


GT = [0.5, 0.5, 0.4, 0.2]
HALF = [0.5, 0.5, 0.2, 0.2]  # IoU 0.5 and GIoU 0.5 with GT
FAR = [0.1, 0.1, 0.05, 0.05]  # IoU 0 with GT


# ---------------------------------------------------------------- Boxes
def test_boxes_hand_values_and_weights():
    out = _outputs([[0.0, 0.0]], [[FAR, HALF]])
    t = _targets([GT], [1])
    loss = Boxes(weight_dict={"loss_bbox": 5, "loss_giou": 2})(
        outputs=out, targets=t, indices=idx([0], [1], [0]), num_boxes=2.0
    )
    assert float(loss["loss_bbox"]) == pytest.approx(0.2 / 2)
    assert float(loss["loss_giou"]) == pytest.approx((1 - 0.5) / 2)
    assert float(loss[CORE_LOSS_KEY]) == pytest.approx(5 * 0.1 + 2 * 0.25)
    # tgt_idx None = packed order; no pred_boxes_xyxy / boxes_xyxy: derived from cxcywh
    out2 = {k: v for k, v in out.items() if k != "pred_boxes_xyxy"}
    t2 = {k: v for k, v in t.items() if k != "boxes_xyxy"}
    loss2 = Boxes(weight_dict={"loss_bbox": 5, "loss_giou": 2})(
        outputs=out2, targets=t2, indices=(torch.tensor([0]), torch.tensor([1]), None), num_boxes=2.0
    )
    assert float(loss2[CORE_LOSS_KEY]) == pytest.approx(float(loss[CORE_LOSS_KEY]))


def test_aux_skipped_and_weight_errors():
    out = _outputs([[0.0]], [[HALF]])
    t = _targets([GT], [1])
    wd = {"loss_bbox": 5.0}
    b = Boxes(weight_dict=wd, compute_aux=False)
    assert b(outputs=out, targets=t, indices=idx([0], [0], [0]), num_boxes=1.0, is_aux=True) == {CORE_LOSS_KEY: 0.0}
    assert wd == {"loss_bbox": 5.0}
    with pytest.raises(ValueError) as e:
        Boxes(weight_dict={"loss_box": 5.0})
    msg = str(e.value)
    assert "'loss_box'" in msg and "loss_bbox" in msg and "loss_giou" in msg and "\n" not in msg
    with pytest.raises(ValueError, match="loss_ce"):
        Masks(weight_dict={"loss_ce": 1.0})


# ---------------------------------------------------------------- IABCEMdetr
def test_iabce_pos_neg_terms():
    out = _outputs([[0.0, 1.0]], [[HALF, FAR]])
    t = _targets([GT], [1])
    m = IABCEMdetr(pos_weight=10, weight_dict={"loss_ce": 20}, gamma=2, weak_loss=False, alpha=0.25)
    loss = m(outputs=out, targets=t, indices=idx([0], [0], [0]), num_boxes=1.0)
    soft = 0.5**0.25 * 0.5**0.75  # p**alpha * IoU**(1-alpha) = 0.5
    expected = (10 * bce(0.0, soft) + bce(1.0, 0.0) * sig(1.0) ** 2) / 2
    assert float(loss["loss_ce"]) == pytest.approx(expected, rel=1e-6)
    assert float(loss[CORE_LOSS_KEY]) == pytest.approx(20 * expected, rel=1e-6)
    assert float(loss["ce_f1"]) == 0.0  # q0: p = 0.5 is not > 0.5; q1 is a false positive
    assert float(loss["presence_loss"]) == 0.0


def test_iabce_soft_target_clamp_and_f1():
    out = _outputs([[1.0, -2.0, 3.0]], [[FAR, FAR, HALF]])
    t = _targets([GT, GT], [2])
    m = IABCEMdetr(pos_weight=1, gamma=0, weak_loss=False, alpha=0.25)
    loss = m(outputs=out, targets=t, indices=idx([0, 0], [0, 2], [0, 1]), num_boxes=2.0)
    t0 = 0.01  # IoU 0 -> clamped
    t2 = sig(3.0) ** 0.25 * 0.5**0.75
    expected = (bce(1.0, t0) + bce(-2.0, 0.0) + bce(3.0, t2)) / 3
    assert float(loss["loss_ce"]) == pytest.approx(expected, rel=1e-6)
    assert float(loss["ce_f1"]) == pytest.approx(1.0)  # predictions {0, 2} == positives {0, 2}


def test_iabce_pad_n_queries_and_scale_pos():
    out = _outputs([[0.5, -1.0]], [[HALF, FAR]])
    t = _targets([GT], [1])
    m = IABCEMdetr(pos_weight=3, gamma=2, weak_loss=False, pad_n_queries=5, pad_scale_pos=2.0)
    loss = m(outputs=out, targets=t, indices=idx([0], [0], [0]), num_boxes=1.0)
    soft = sig(0.5) ** 0.25 * 0.5**0.75
    expected = (2 * 3 * bce(0.5, soft) + bce(-1.0, 0.0) * sig(-1.0) ** 2) / (5 * 1)
    assert float(loss["loss_ce"]) == pytest.approx(expected, rel=1e-6)
    # pad_n_queries <= Q: plain mean, no pos scaling
    m2 = IABCEMdetr(pos_weight=3, gamma=2, weak_loss=False, pad_n_queries=2, pad_scale_pos=2.0)
    loss2 = m2(outputs=out, targets=t, indices=idx([0], [0], [0]), num_boxes=1.0)
    assert float(loss2["loss_ce"]) == pytest.approx(
        (3 * bce(0.5, soft) + bce(-1.0, 0.0) * sig(-1.0) ** 2) / 2, rel=1e-6
    )


def test_iabce_weak_loss_masks_non_exhaustive_negatives():
    out = _outputs([[0.0, 1.0], [2.0, -1.0]], [[HALF, FAR], [HALF, FAR]])
    t = _targets([GT, GT], [1, 1], exhaustive=torch.tensor([True, False]))
    m = IABCEMdetr(pos_weight=1, gamma=0, weak_loss=True)
    loss = m(outputs=out, targets=t, indices=idx([0, 1], [0, 0], [0, 1]), num_boxes=2.0)
    s0 = 0.5**0.25 * 0.5**0.75
    s1 = sig(2.0) ** 0.25 * 0.5**0.75
    # find 1's negative (query 1) is masked: 3 terms remain
    expected = (bce(0.0, s0) + bce(1.0, 0.0) + bce(2.0, s1)) / (3 + 1e-6)
    assert float(loss["loss_ce"]) == pytest.approx(expected, rel=1e-6)


def test_iabce_presence_zeroing_and_presence_loss():
    out = _outputs([[0.0, 1.0], [2.0, -1.0]], [[HALF, FAR], [HALF, FAR]])
    out["presence_logit_dec"] = torch.tensor([[0.7], [0.3]])
    # find 1 has an object slot but it is invisible (w = 0): no GT for presence
    t = _targets([GT, [0.5, 0.5, 0.0, 0.2]], [1, 1])
    m = IABCEMdetr(
        pos_weight=1,
        weight_dict={"loss_ce": 20, "presence_loss": 20},
        gamma=0,
        weak_loss=False,
        use_presence=True,
        presence_alpha=0.5,
        presence_gamma=0.0,
    )
    loss = m(outputs=out, targets=t, indices=idx([0], [0], [0]), num_boxes=1.0)
    s0 = 0.5**0.25 * 0.5**0.75
    expected_ce = (bce(0.0, s0) + bce(1.0, 0.0)) / 4  # find 1's terms zeroed, mean over B*Q
    assert float(loss["loss_ce"]) == pytest.approx(expected_ce, rel=1e-6)
    expected_presence = (0.5 * bce(0.7, 1.0) + 0.5 * bce(0.3, 0.0)) / 2
    assert float(loss["presence_loss"]) == pytest.approx(expected_presence, rel=1e-6)
    assert float(loss["presence_dec_acc"]) == pytest.approx(0.5)  # find 0 right (0.67 > .5), find 1 wrong
    assert float(loss[CORE_LOSS_KEY]) == pytest.approx(20 * expected_ce + 20 * expected_presence, rel=1e-6)


def test_iabce_pos_focal():
    out = _outputs([[1.5, -0.5]], [[HALF, FAR]])
    t = _targets([GT], [1])
    m = IABCEMdetr(pos_weight=2, gamma=2, weak_loss=False, pos_focal=True)
    loss = m(outputs=out, targets=t, indices=idx([0], [0], [0]), num_boxes=1.0)
    p = sig(1.5)
    soft = p**0.25 * 0.5**0.75
    p_t = p * soft + (1 - p) * (1 - soft)
    focal = bce(1.5, soft) * (1 - p_t) ** 2 * (0.5 * soft + 0.5 * (1 - soft))
    expected = (2 * focal + bce(-0.5, 0.0) * sig(-0.5) ** 2) / 2
    assert float(loss["loss_ce"]) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("pos_focal", [False, True])
def test_iabce_gradcheck(pos_focal):
    torch.manual_seed(0)
    boxes = torch.tensor([[HALF, FAR, [0.45, 0.5, 0.3, 0.2]]], dtype=torch.float64)
    t = _targets([GT, HALF], [2])
    t = {k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in t.items()}
    # alpha=0: the (detached) soft target IoU**1 does not move with the logits, so the
    # numerical Jacobian sees the same function the analytical one differentiates
    m = IABCEMdetr(
        pos_weight=10,
        weight_dict={"loss_ce": 20, "presence_loss": 20},
        gamma=2,
        weak_loss=False,
        alpha=0.0,
        pad_n_queries=8,
        use_presence=True,
        pos_focal=pos_focal,
    )

    def f(logits, presence):
        out = {"pred_logits": logits, "pred_boxes": boxes, "presence_logit_dec": presence}
        return m(outputs=out, targets=t, indices=idx([0, 0], [0, 2], [0, 1]), num_boxes=2.0)[CORE_LOSS_KEY]

    logits = torch.randn(1, 3, 1, dtype=torch.float64, requires_grad=True)
    presence = torch.randn(1, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (logits, presence))


# ---------------------------------------------------------------- Masks
def _focal_ref(x, t, alpha=0.25, gamma=2):
    p = sig(x)
    p_t = p * t + (1 - p) * (1 - t)
    return bce(x, t) * (1 - p_t) ** gamma * (alpha * t + (1 - alpha) * (1 - t))


def test_masks_full_resolution_hand_values():
    logits = [[0.0, 1.0], [-1.0, 2.0]]
    gt = [[1.0, 0.0], [0.0, 1.0]]
    out = {"pred_masks": torch.tensor([[[[5.0] * 2] * 2, logits]])}  # [B=1, Q=2, 2, 2]
    t = {"masks": torch.tensor([gt]).bool(), "is_valid_mask": torch.tensor([True])}
    loss = Masks(weight_dict={"loss_mask": 200, "loss_dice": 10})(
        outputs=out, targets=t, indices=idx([0], [1], [0]), num_boxes=2.0
    )
    xs = [v for row in logits for v in row]
    ts = [v for row in gt for v in row]
    focal = sum(_focal_ref(x, y) for x, y in zip(xs, ts)) / 4 / 2
    ps = [sig(x) for x in xs]
    dice = (1 - (2 * sum(p * y for p, y in zip(ps, ts)) + 1) / (sum(ps) + sum(ts) + 1)) / 2
    assert float(loss["loss_mask"]) == pytest.approx(focal, rel=1e-6)
    assert float(loss["loss_dice"]) == pytest.approx(dice, rel=1e-6)
    assert float(loss[CORE_LOSS_KEY]) == pytest.approx(200 * focal + 10 * dice, rel=1e-6)


def test_masks_upsampling_and_validity_filter():
    torch.manual_seed(0)
    pred = torch.randn(2, 3, 4, 4)
    gt = torch.rand(3, 8, 8) > 0.5
    valid = torch.tensor([True, False, True])
    m = Masks(weight_dict={"loss_mask": 1, "loss_dice": 1})
    loss = m(
        outputs={"pred_masks": pred},
        targets={"masks": gt, "is_valid_mask": valid},
        indices=idx([0, 1, 1], [2, 0, 1], [0, 1, 2]),
        num_boxes=3.0,
    )
    kept = torch.stack([pred[0, 2], pred[1, 1]])
    up = F.interpolate(kept[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0].flatten(1)
    g = gt[[0, 2]].float().flatten(1)
    assert float(loss["loss_mask"]) == pytest.approx(float(sigmoid_focal_loss(up, g, 3.0)), rel=1e-6)
    assert float(loss["loss_dice"]) == pytest.approx(float(dice_loss(up, g, 3.0)), rel=1e-6)


def test_masks_sampled_path_matches_manual_sampling():
    torch.manual_seed(0)
    pred = torch.randn(1, 3, 6, 6)
    gt = torch.rand(2, 12, 12) > 0.5
    m = Masks(
        weight_dict={"loss_mask": 1, "loss_dice": 1},
        num_sample_points=20,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )
    t = {"masks": gt, "is_valid_mask": torch.tensor([True, True])}
    torch.manual_seed(5)
    loss = m(outputs={"pred_masks": pred}, targets=t, indices=idx([0, 0], [2, 0], [0, 1]), num_boxes=2.0)
    torch.manual_seed(5)
    src = pred[0, [2, 0]][:, None]
    coords = get_uncertain_point_coords_with_randomness(src, calculate_uncertainty, 20, 3.0, 0.75)
    sp = point_sample(src, coords, align_corners=False).squeeze(1)
    tp = point_sample(gt[[0, 1]].float()[:, None], coords, align_corners=False).squeeze(1)
    assert float(loss["loss_mask"]) == pytest.approx(float(sigmoid_focal_loss(sp, tp, 2.0)), rel=1e-6)
    assert float(loss["loss_dice"]) == pytest.approx(float(dice_loss(sp, tp, 2.0)), rel=1e-6)


def test_masks_none_and_empty():
    pred = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = Masks(weight_dict={"loss_mask": 200, "loss_dice": 10})(
        outputs={"pred_masks": pred}, targets={"masks": None}, indices=idx([0], [0], [0]), num_boxes=1.0
    )
    assert float(loss["loss_mask"]) == 0 and float(loss["loss_dice"]) == 0 and float(loss[CORE_LOSS_KEY]) == 0
    loss = Masks(weight_dict={"loss_mask": 200, "loss_dice": 10})(
        outputs={"pred_masks": pred},
        targets={"masks": torch.zeros(1, 8, 8, dtype=torch.bool), "is_valid_mask": torch.tensor([False])},
        indices=idx([0], [0], [0]),
        num_boxes=1.0,
    )
    assert float(loss[CORE_LOSS_KEY].detach()) == 0
    loss[CORE_LOSS_KEY].backward()  # still attached to the graph


def test_from_config_defaults():
    cfg = get_cfg()
    boxes, iabce, masks = (SAM3_LOSS_REGISTRY.get(n)(cfg) for n in cfg.MODEL.CRITERION.SAM3.LOSS_FNS)
    assert boxes.weight_dict == {"loss_bbox": 5.0, "loss_giou": 2.0} and boxes.compute_aux
    assert iabce.weight_dict == {"loss_ce": 20.0, "presence_loss": 20.0}
    assert (
        iabce.pos_weight,
        iabce.alpha,
        iabce.gamma,
        iabce.use_presence,
        iabce.pos_focal,
        iabce.pad_n_queries,
        iabce.weak_loss,
    ) == (10.0, 0.25, 2.0, True, False, 200, False)
    assert masks.weight_dict == {"loss_mask": 200.0, "loss_dice": 10.0} and not masks.compute_aux
    assert masks.num_sample_points is None
    cfg.MODEL.CRITERION.SAM3.IABCE.PAD_N_QUERIES = 0
    cfg.MODEL.CRITERION.SAM3.MASKS.NUM_SAMPLE_POINTS = 100
    assert IABCEMdetr(cfg).pad_n_queries is None
    assert Masks(cfg).num_sample_points == 100
