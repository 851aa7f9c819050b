"""The loss inspector measures effective weights and shares exactly and warns on imbalance."""

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.modeling.criterion.inspection import inspect_loss_dict, official_weight_differences


def _loss_dict(scale_b=1.0):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3))
    a = (w**2).sum()
    b = w.sum().abs() * scale_b
    acc = torch.tensor(0.7)  # a metric: not part of core_loss
    core = 2.0 * a + 5.0 * b
    return {"loss_a": a, "loss_b": b, "acc": acc, "core_loss": core, "core_loss_final": core.detach() * 0.5}, w


def test_weights_shares_and_grad_norms_are_exact():
    d, w = _loss_dict()
    rep = inspect_loss_dict(d, [w])
    by = {c.key: c for c in rep.components}
    assert by["loss_a"].weight == pytest.approx(2.0) and by["loss_b"].weight == pytest.approx(5.0)
    assert by["acc"].weight == 0.0 and by["acc"].grad_norm is None
    assert sum(c.share for c in rep.components) == pytest.approx(1.0)
    # gradient of 2 * sum(w^2) is 4w
    assert by["loss_a"].grad_norm == pytest.approx(float((4 * w).detach().norm()), rel=1e-5)
    assert "core_loss_final" in rep.summaries
    assert "loss_a" in rep.table() and "core_loss" in rep.table()


def test_dominant_and_vanishing_warnings():
    d, w = _loss_dict(scale_b=1e-6)
    rep = inspect_loss_dict(d, None)
    text = " ".join(rep.warnings)
    assert "loss_a" in text and "dominates" in text
    assert "loss_b" in text and "barely contributes" in text


def test_official_weight_difference_warning():
    cfg = get_cfg()
    assert official_weight_differences(cfg) == []
    cfg.MODEL.CRITERION.NAME = "Sam3LossWrapper"
    cfg.MODEL.CRITERION.SAM3.MASKS.WEIGHT_DICT.loss_mask = 5.0
    (msg,) = official_weight_differences(cfg)
    assert "MASKS.WEIGHT_DICT.loss_mask = 5.0" in msg and "200.0" in msg


def test_whole_loss_scaling_option_is_reported():
    cfg = get_cfg()
    cfg.MODEL.CRITERION.NAME = "Sam3LossWrapper"
    cfg.MODEL.CRITERION.SAM3.SCALE_BY_FIND_BATCH_SIZE = False
    (msg,) = official_weight_differences(cfg)
    assert "SAM3.SCALE_BY_FIND_BATCH_SIZE = False" in msg and "True" in msg
