"""segtrain.utils.loss_trends: last-fifth / first-fifth means of the loss keys of a run."""

import math

import pytest

import segtrain.modeling  # noqa: F401  (the criteria register their moving-target metrics)
from segtrain.utils.loss_trends import (
    MIN_RECORDS,
    describe_rising,
    format_loss_trends,
    is_loss_key,
    loss_trends,
    moving_target_notes,
    register_moving_target,
    rising_keys,
    target_metric,
)


def _records(n=20):
    out = []
    for i in range(n):
        r = {
            "iteration": 20 * i,
            "lr": 1e-4 * (i + 1),
            "presence_dec_acc": i / n,
            "core_loss": 10.0 - 0.4 * i,
            "loss_ce": 1.0,
            "loss_ce_0": 1.0 + 0.1 * i,
            "loss_mask": 4.0 / (1 + i),
        }
        if i % 2 == 0:
            r["val/loss_mask"] = 2.0 + i  # a validation key logged every other record: 10 records
        out.append(r)
    return out


def test_means_of_first_and_last_fifth():
    trends = loss_trends(_records())
    # 20 records -> fifths of 4 records
    t = trends["core_loss"]
    assert t["first"] == pytest.approx(10.0 - 0.4 * 1.5) and t["last"] == pytest.approx(10.0 - 0.4 * 17.5)
    assert t["ratio"] == pytest.approx(t["last"] / t["first"]) and t["records"] == 20
    mask = [4.0 / (1 + i) for i in range(20)]
    assert trends["loss_mask"]["ratio"] == pytest.approx((sum(mask[-4:]) / 4) / (sum(mask[:4]) / 4))
    # the validation copy is compared among its own 10 records (fifths of 2)
    v = trends["val/loss_mask"]
    assert v["records"] == 10 and v["first"] == pytest.approx(3.0) and v["last"] == pytest.approx(19.0)


def test_only_loss_keys_and_order():
    trends = loss_trends(_records())
    assert "lr" not in trends and "presence_dec_acc" not in trends and "iteration" not in trends
    keys = list(trends)
    assert keys[0] == "core_loss"  # totals first
    assert keys.index("loss_ce_0") == keys.index("loss_ce") + 1  # aux copy right after its main key
    assert is_loss_key("train/total_loss") and is_loss_key("val/loss_iou") and is_loss_key("core_loss_aux")
    # SAM 3's presence loss and its suffixed copies are loss terms too
    assert is_loss_key("presence_loss") and is_loss_key("presence_loss_aux_0") and is_loss_key("val/presence_loss_fs")
    assert not is_loss_key("ce_f1") and not is_loss_key("train/lr") and not is_loss_key("iou_target_mean")
    assert not is_loss_key("presence_dec_acc") and not is_loss_key("lossless_ratio")


def test_rising_and_flat_keys_are_reported():
    trends = loss_trends(_records())
    # flat (ratio exactly 1) counts as "did not go down", as does a rising one
    assert rising_keys(trends) == ["loss_ce", "loss_ce_0", "val/loss_mask"]
    table = format_loss_trends(trends, "title")
    lines = table.splitlines()
    assert lines[0] == "title" and lines[1].split()[0] == "key"
    flagged = [ln.split()[0] for ln in lines[2:] if ln.endswith("UP")]
    assert flagged == ["loss_ce", "loss_ce_0", "val/loss_mask"]


def test_short_series_and_zero_start():
    recs = [{"loss_a": 1.0} for _ in range(MIN_RECORDS - 1)]
    assert loss_trends(recs) == {}
    assert "no loss key" in format_loss_trends({})
    recs = [{"loss_z": 0.0 if i < 5 else 1.0, "loss_0": 0.0} for i in range(MIN_RECORDS)]
    trends = loss_trends(recs)
    assert math.isinf(trends["loss_z"]["ratio"])
    # a term that is 0 throughout is switched off, not "flat": left out rather than flagged
    assert "loss_0" not in trends and rising_keys(trends) == ["loss_z"]


def test_target_metric_names():
    assert target_metric("train/loss_iou") == "train/iou_target_mean"
    assert target_metric("val/loss_iou") == "val/iou_target_mean"
    assert target_metric("loss_ce_o2m") == "o2m_matches_per_box"
    assert target_metric("loss_bbox_aux_0_o2m") == "o2m_matches_per_box_aux_0"
    assert target_metric("loss_ce") is None and target_metric("loss_ce_aux_0") is None
    assert target_metric("presence_loss_o2m") is None and target_metric("core_loss") is None


def test_rising_loss_with_moving_targets_is_explained():
    n = 20
    recs = [
        {
            "train/loss_iou": 0.4 + 0.05 * i,
            "train/iou_target_mean": 0.1 + 0.02 * i,
            "loss_ce_o2m": 1.0 + 0.1 * i,
            "o2m_matches_per_box": 2.0,  # flat: no note
            "loss_ce_1": 1.0 + 0.01 * i,
            "train/loss_mask": 1.0 / (1 + i),
        }
        for i in range(n)
    ]
    trends = loss_trends(recs)
    assert set(rising_keys(trends)) == {"train/loss_iou", "loss_ce_1", "loss_ce_o2m"}
    notes = moving_target_notes(trends, recs)
    first, last = (0.1 + 0.02 * 1.5), (0.1 + 0.02 * 17.5)  # means of the first / last 4 records
    assert notes == {"train/loss_iou": f"targets moved: train/iou_target_mean x{last / first:.2f}"}
    described = describe_rising(trends, recs)
    assert any(d.startswith("train/loss_iou x") and "targets moved" in d for d in described)
    assert any(d.startswith("loss_ce_1 x") and "(" not in d for d in described)
    # targets that fell do not explain a rise; a metric missing from the records neither
    falling = [dict(r, **{"train/iou_target_mean": 1.0 / (1 + i)}) for i, r in enumerate(recs)]
    assert "train/loss_iou" not in moving_target_notes(loss_trends(falling), falling)
    missing = [{k: v for k, v in r.items() if k != "train/iou_target_mean"} for r in recs]
    assert moving_target_notes(loss_trends(missing), missing) == {}
    # SAM 3: more one-to-many matches per box explain a rising _o2m sum
    o2m = [dict(r, o2m_matches_per_box=1.0 + 0.1 * i) for i, r in enumerate(recs)]
    assert moving_target_notes(loss_trends(o2m), o2m)["loss_ce_o2m"].startswith("targets moved: o2m_matches_per_box x")


def test_registered_moving_target_is_named_beside_a_rising_loss():
    from segtrain.utils import loss_trends

    register_moving_target(r"^loss_probe(?P<suffix>.*)$", "probe_target{suffix}")
    try:
        assert target_metric("train/loss_probe_aux_0") == "train/probe_target_aux_0"
        register_moving_target(r"^loss_probe(?P<suffix>.*)$", "probe_target{suffix}")  # once only
        assert sum(p.pattern == r"^loss_probe(?P<suffix>.*)$" for p, _ in loss_trends._MOVING_TARGETS) == 1
    finally:
        loss_trends._MOVING_TARGETS[:] = [
            (p, m) for p, m in loss_trends._MOVING_TARGETS if p.pattern != r"^loss_probe(?P<suffix>.*)$"
        ]
    assert target_metric("train/loss_probe") is None
