"""VideoSimpleCriterion: BCE + dice + soft IoU + temporal terms on [B, T, N, H, W]
with per-object valid masks, against values worked out by hand."""

import math

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.modeling.criterion import CORE_LOSS_KEY, CRITERION_REGISTRY, VideoSimpleCriterion, build_criterion
from segtrain.utils.errors import ConfigError


def _sig(x):
    return 1 / (1 + math.exp(-x))


def _bce(x, t):
    return -(t * math.log(_sig(x)) + (1 - t) * math.log(1 - _sig(x)))


def test_hand_computed_values_one_pixel_masks():
    """B=1, T=2, N=1, 1x2 pixels: every term is a short sum."""
    x = torch.tensor([[[[[0.0, 2.0]]], [[[1.0, -1.0]]]]])  # [1, 2, 1, 1, 2]
    t = torch.tensor([[[[[0.0, 1.0]]], [[[1.0, 0.0]]]]])
    crit = VideoSimpleCriterion(smooth=0.0)
    out = crit({"pred_masks": x}, t)

    p = [[_sig(0.0), _sig(2.0)], [_sig(1.0), _sig(-1.0)]]
    tt = [[0.0, 1.0], [1.0, 0.0]]
    bce = [(_bce(0.0, 0) + _bce(2.0, 1)) / 2, (_bce(1.0, 1) + _bce(-1.0, 0)) / 2]
    inter = [sum(a * b for a, b in zip(p[f], tt[f])) for f in range(2)]
    psum = [sum(p[f]) for f in range(2)]
    tsum = [sum(tt[f]) for f in range(2)]
    dice = [1 - 2 * inter[f] / (psum[f] + tsum[f]) for f in range(2)]
    iou = [1 - inter[f] / (psum[f] + tsum[f] - inter[f]) for f in range(2)]
    temporal = sum(((p[1][k] - p[0][k]) - (tt[1][k] - tt[0][k])) ** 2 for k in range(2)) / 2
    assert out["loss_mask"].item() == pytest.approx(sum(bce) / 2, rel=1e-6)
    assert out["loss_dice"].item() == pytest.approx(sum(dice) / 2, rel=1e-6)
    assert out["loss_iou"].item() == pytest.approx(sum(iou) / 2, rel=1e-6)
    assert out["loss_temporal"].item() == pytest.approx(temporal, rel=1e-6)
    # seed defaults: bce 1.0, dice 1.0, iou 0.5, temporal 0.1
    expected = sum(bce) / 2 + sum(dice) / 2 + 0.5 * sum(iou) / 2 + 0.1 * temporal
    assert out[CORE_LOSS_KEY].item() == pytest.approx(expected, rel=1e-6)
    assert crit.weight_dict == {"loss_mask": 1.0, "loss_dice": 1.0, "loss_iou": 0.5, "loss_temporal": 0.1}


def test_invalid_entries_do_not_count():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 2, 6, 6)
    t = (torch.rand(2, 3, 2, 6, 6) > 0.5).float()
    valid = torch.ones(2, 3, 2, dtype=torch.bool)
    valid[1, :, 1] = False  # a padding object
    valid[0, 2, 0] = False  # an object missing on one frame
    crit = VideoSimpleCriterion()
    ref = crit({"pred_masks": x}, {"masks": t, "valid": valid})
    x2, t2 = x.clone(), t.clone()
    x2[1, :, 1] = 50.0
    t2[0, 2, 0] = 1 - t2[0, 2, 0]
    out = crit({"pred_masks": x2}, t2, valid)
    for k in ("loss_mask", "loss_dice", "loss_iou", "loss_temporal", CORE_LOSS_KEY):
        assert out[k].item() == pytest.approx(ref[k].item(), rel=1e-6), k
    # the mean runs over valid entries only: one valid entry gives that entry's value
    only = torch.zeros(2, 3, 2, dtype=torch.bool)
    only[0, 0, 0] = True
    single = crit(x, t, only)
    alone = VideoSimpleCriterion()(x[:1, :1, :1], t[:1, :1, :1])
    assert single["loss_mask"].item() == pytest.approx(alone["loss_mask"].item(), rel=1e-6)
    # a pair counts for the temporal term only when both frames are valid: none here
    assert single["loss_temporal"].item() == 0.0


def test_weights_from_dict_and_config_and_errors():
    x = torch.randn(1, 2, 1, 4, 4, requires_grad=True)
    t = torch.zeros(1, 2, 1, 4, 4)
    crit = VideoSimpleCriterion({"loss_mask": 2.0, "loss_temporal": 3.0})
    out = crit(x, t)
    assert out[CORE_LOSS_KEY].item() == pytest.approx(2 * out["loss_mask"].item() + 3 * out["loss_temporal"].item())
    out[CORE_LOSS_KEY].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="'loss_bce'.*loss_mask, loss_dice, loss_iou, loss_temporal"):
        VideoSimpleCriterion({"loss_bce": 1.0})
    with pytest.raises(ValueError, match=r"targets \(1, 2, 1, 4, 3\) do not match"):
        crit(x, torch.zeros(1, 2, 1, 4, 3))
    with pytest.raises(ValueError, match=r"valid_masks \(1, 2\) must be \[B, T, N\]"):
        crit(x, t, torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[B, T, N, H, W\]"):
        crit(torch.zeros(2, 4, 4), t)

    cfg = get_cfg()
    cfg.MODEL.CRITERION.NAME = "VideoSimpleCriterion"
    cfg.MODEL.CRITERION.VIDEO_SIMPLE.WEIGHT_DICT.loss_iou = 0.25
    built = build_criterion(cfg)
    assert isinstance(built, VideoSimpleCriterion) and "VideoSimpleCriterion" in CRITERION_REGISTRY
    assert built.weight_dict == {"loss_mask": 1.0, "loss_dice": 1.0, "loss_iou": 0.25, "loss_temporal": 0.1}
    assert built.required_output_keys == ("pred_masks",) and built.target_format == "video"


def test_single_frame_has_zero_temporal_term_and_perfect_masks_low_loss():
    t = torch.zeros(1, 1, 2, 8, 8)
    t[0, 0, 0, 2:6, 2:6] = 1
    x = (t * 2 - 1) * 30  # confident and right
    out = VideoSimpleCriterion()(x, t)
    assert out["loss_temporal"].item() == 0.0
    assert out["loss_mask"].item() < 1e-6 and out["loss_dice"].item() < 1e-4 and out["loss_iou"].item() < 1e-4
