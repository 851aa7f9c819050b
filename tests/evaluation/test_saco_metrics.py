"""SA-Co metrics (cgF1, IL_MCC, positive micro F1) on hand-made image-concept pairs.

Expected values are worked out by hand from the definitions in
``segtrain/evaluation/saco_metrics.py`` (those of SAM 3's ``CGF1Eval``); the small epsilons of
the official denominators (1e-4, 1e-6) are within the tolerances.
"""

import math

import numpy as np
import pytest

from segtrain.evaluation.saco_metrics import SacoAccumulator, pair_ious


def _acc(*pairs):
    acc = SacoAccumulator()
    for ious in pairs:
        acc.add_pair(np.asarray(ious, dtype=np.float64))
    return acc


def test_image_level_counts_and_cgf1():
    # 2 perfect positives, an absent concept with a detection, 2 true negatives, and a
    # present concept (2 instances) with no detection
    acc = _acc([[1.0]], [[1.0]], np.zeros((1, 0)), np.zeros((0, 0)), np.zeros((0, 0)), np.zeros((0, 2)))
    m = acc.summary()
    assert (m["IL_TP"], m["IL_FP"], m["IL_TN"], m["IL_FN"], m["num_pairs"]) == (2, 1, 2, 1, 6)
    # MCC = (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3
    assert m["IL_MCC"] == pytest.approx(1 / 3, abs=1e-5)
    assert m["IL_precision"] == pytest.approx(200 / 3, abs=1e-3) and m["IL_recall"] == pytest.approx(200 / 3, abs=1e-3)
    assert m["IL_F1"] == pytest.approx(200 / 3, abs=1e-3) and m["IL_FPR"] == pytest.approx(100 / 3, abs=1e-3)
    # instances: TP 2, FP 1 (on the absent concept: not in pmF1), FN 2
    assert m["precision"] == pytest.approx(200 / 3, abs=0.05) and m["recall"] == pytest.approx(50.0, abs=0.05)
    assert m["positive_micro_precision"] == pytest.approx(100.0, abs=0.05)
    assert m["positive_micro_F1"] == pytest.approx(200 / 3, abs=0.05)  # 2 * 1 * 0.5 / 1.5
    assert m["cgF1"] == pytest.approx(200 / 9, abs=0.05)  # pmF1 x IL_MCC
    # the missed pair adds F1 0 but is not counted by the macro average (as CGF1Eval does)
    assert m["positive_macro_F1"] == pytest.approx(100.0, abs=0.05)


def test_iou_at_the_thresholds():
    at = _acc([[0.75]]).summary()  # matched at t = 0.5 ... 0.75 (6 of the 10 thresholds)
    assert at["positive_micro_F1@0.5"] == pytest.approx(100.0, abs=0.05)
    assert at["positive_micro_F1@0.75"] == pytest.approx(100.0, abs=0.05)
    assert at["positive_micro_F1"] == pytest.approx(60.0, abs=0.05)
    below = _acc([[0.7499]]).summary()
    assert below["positive_micro_F1@0.75"] == pytest.approx(0.0, abs=1e-9)
    assert below["positive_micro_F1"] == pytest.approx(50.0, abs=0.05)
    # an exact 0.5 still counts at 0.5, a hair less does not: the pair is then a miss and a false positive
    assert _acc([[0.5]]).summary()["positive_micro_F1@0.5"] == pytest.approx(100.0, abs=0.05)
    assert _acc([[0.4999]]).summary()["positive_micro_F1@0.5"] == pytest.approx(0.0, abs=1e-9)
    # the pair is still an image-level true positive whatever the IoU
    assert _acc([[0.1]]).summary()["IL_TP"] == 1


def test_matching_maximizes_total_iou():
    # greedy (det 0 takes its best, gt 0) would give 1 match at 0.5; one-to-one by total IoU gives 2
    acc = _acc([[0.9, 0.6], [0.8, 0.0]])
    assert acc.tp[0] == 2 and acc.tp[np.isclose(acc.iou_thresholds, 0.65)][0] == 1


def test_zero_denominators():
    empty = SacoAccumulator().summary()
    assert math.isnan(empty["cgF1"]) and math.isnan(empty["IL_MCC"]) and empty["num_pairs"] == 0
    negatives = _acc(np.zeros((0, 0)), np.zeros((0, 0))).summary()
    assert negatives["IL_MCC"] == 0.0 and negatives["cgF1"] == 0.0 and negatives["positive_micro_F1"] == 0.0
    assert math.isnan(negatives["positive_macro_F1"])  # no positive pair to average


def test_pair_ious_as_pycocotools():
    ious = pair_ious([[0, 0, 20, 15], [0, 0, 20, 10], [40, 40, 5, 5]], [[0, 0, 20, 20]])
    np.testing.assert_allclose(ious[:, 0], [0.75, 0.5, 0.0])
    assert pair_ious([], [[0, 0, 1, 1]]).shape == (0, 1) and pair_ious([[0, 0, 1, 1]], []).shape == (1, 0)
