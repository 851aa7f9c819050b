"""segtrain.utils.loss_trends: last-fifth / first-fifth means of the loss keys of a run."""
import math

import pytest

from segtrain.utils.loss_trends import MIN_RECORDS, format_loss_trends, is_loss_key, loss_trends, rising_keys


def _records(n=20):
    out = []
    for i in range(n):
        r = {"iteration": 20 * i, "lr": 1e-4 * (i + 1), "presence_dec_acc": i / n,
             "core_loss": 10.0 - 0.4 * i, "loss_ce": 1.0, "loss_ce_0": 1.0 + 0.1 * i, "loss_mask": 4.0 / (1 + i)}
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
