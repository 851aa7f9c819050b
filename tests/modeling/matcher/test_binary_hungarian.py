"""BinaryHungarianMatcherV2: optimal vs brute force, packed triple, validity masks, errors."""

import itertools
import math

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.modeling.matcher import MATCHER_REGISTRY, BinaryHungarianMatcherV2
from segtrain.utils.errors import ConfigError, NonFiniteLossError


def _targets(boxes_per_find):
    """Packed + padded find targets from a list of [n_b, 4] cxcywh tensors."""
    nb = torch.tensor([len(b) for b in boxes_per_find], dtype=torch.long)
    maxn = max(int(nb.max()), 1)
    padded = torch.zeros(len(boxes_per_find), maxn, 4)
    for i, b in enumerate(boxes_per_find):
        padded[i, : len(b)] = b
    return {"boxes": torch.cat(list(boxes_per_find)), "num_boxes": nb, "boxes_padded": padded}


def _rand_boxes(n, gen):
    c = torch.rand(n, 2, generator=gen) * 0.6 + 0.2
    wh = torch.rand(n, 2, generator=gen) * 0.3 + 0.05
    return torch.cat([c, wh], 1)


def _ref_cost(logit, pbox, gbox, m):
    """Scalar float64 cost of one (query, GT) pair, written out from the formulas."""

    def xyxy(b):
        cx, cy, w, h = b
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2

    a, g = xyxy(pbox), xyxy(gbox)
    inter = max(0.0, min(a[2], g[2]) - max(a[0], g[0])) * max(0.0, min(a[3], g[3]) - max(a[1], g[1]))
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_g = (g[2] - g[0]) * (g[3] - g[1])
    union = area_a + area_g - inter
    encl = (max(a[2], g[2]) - min(a[0], g[0])) * (max(a[3], g[3]) - min(a[1], g[1]))
    giou = inter / union - (encl - union) / encl
    l1 = sum(abs(x - y) for x, y in zip(pbox, gbox))
    p = 1 / (1 + math.exp(-logit))
    if not m.focal:
        c = -p
    else:
        if m.stable:
            p = p * (giou + 1) / 2
        c = -m.alpha * (1 - p) ** m.gamma * math.log(p) + (1 - m.alpha) * p**m.gamma * math.log(1 - p)
    return m.cost_bbox * l1 - m.cost_giou * giou + m.cost_class * c


@pytest.mark.parametrize("focal,stable", [(False, False), (True, False), (True, True)])
def test_optimal_vs_brute_force(focal, stable):
    gen = torch.Generator().manual_seed(0)
    m = BinaryHungarianMatcherV2(cost_class=2, cost_bbox=5, cost_giou=2, focal=focal, stable=stable)
    for trial in range(4):
        Q = 4
        per_find = [_rand_boxes(n, gen) for n in (2, 0, 3, 1)]
        targets = _targets(per_find)
        B = len(per_find)
        out = {
            "pred_logits": torch.randn(B, Q, 1, generator=gen) * 2,
            "pred_boxes": _rand_boxes(B * Q, gen).view(B, Q, 4),
        }
        b_idx, s_idx, t_idx = m(out, targets)
        offsets = torch.cumsum(targets["num_boxes"], 0) - targets["num_boxes"]
        for b, boxes in enumerate(per_find):
            sel = b_idx == b
            n = len(boxes)
            assert int(sel.sum()) == n  # every GT matched once; finds without GT skipped
            C = [
                [
                    _ref_cost(
                        float(out["pred_logits"][b, q, 0]), out["pred_boxes"][b, q].tolist(), boxes[j].tolist(), m
                    )
                    for j in range(n)
                ]
                for q in range(Q)
            ]
            got = sum(C[int(q)][int(t) - int(offsets[b])] for q, t in zip(s_idx[sel], t_idx[sel]))
            best = (
                min(sum(C[q][j] for j, q in enumerate(perm)) for perm in itertools.permutations(range(Q), n))
                if n
                else 0
            )
            assert got == pytest.approx(best, rel=1e-5, abs=1e-5)
            # ordered by target, tgt_idx indexes packed rows of this find
            assert torch.equal(t_idx[sel], torch.arange(n) + offsets[b])


def test_empty_batch_and_dtypes():
    m = BinaryHungarianMatcherV2()
    out = {"pred_logits": torch.randn(2, 3, 1), "pred_boxes": torch.rand(2, 3, 4)}
    t = {"boxes": torch.zeros(0, 4), "num_boxes": torch.tensor([0, 0]), "boxes_padded": torch.zeros(2, 0, 4)}
    for x in m(out, t):
        assert x.dtype == torch.long and x.numel() == 0


def test_packed_boxes_without_padding_and_remove_flag():
    gen = torch.Generator().manual_seed(1)
    per_find = [_rand_boxes(1, gen), _rand_boxes(0, gen), _rand_boxes(2, gen)]
    t = _targets(per_find)
    out = {"pred_logits": torch.randn(3, 5, 1, generator=gen), "pred_boxes": _rand_boxes(15, gen).view(3, 5, 4)}
    ref = BinaryHungarianMatcherV2(focal=True)(out, t)
    t2 = {k: v for k, v in t.items() if k != "boxes_padded"}
    for res in (
        BinaryHungarianMatcherV2(focal=True)(out, t2),
        BinaryHungarianMatcherV2(focal=True, remove_samples_with_0_gt=False)(out, t),
    ):
        for a, b in zip(ref, res):
            assert torch.equal(a, b)
    assert ref[0].tolist() == [0, 2, 2] and ref[2].tolist() == [0, 1, 2]


def test_validity_masks_exclude_entries():
    # find 0: 2 GT, 3 queries. Query 0 is perfect for GT 0 but invalid; GT 1 invalid.
    gt = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])
    t = _targets([gt])
    pred = torch.tensor([[[0.3, 0.3, 0.2, 0.2], [0.32, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]])
    out = {"pred_logits": torch.zeros(1, 3, 1), "pred_boxes": pred}
    b, s, j = BinaryHungarianMatcherV2()(out, t)
    assert s.tolist() == [0, 2] and j.tolist() == [0, 1]
    b, s, j = BinaryHungarianMatcherV2()(
        out, t, out_is_valid=torch.tensor([[False, True, True]]), target_is_valid_padded=torch.tensor([[True, False]])
    )
    assert b.tolist() == [0] and s.tolist() == [1] and j.tolist() == [0]
    # everything invalid: nothing matched
    b, s, j = BinaryHungarianMatcherV2()(out, t, out_is_valid=torch.zeros(1, 3, dtype=torch.bool))
    assert b.numel() == s.numel() == j.numel() == 0


def test_query_permutation_is_followed():
    gen = torch.Generator().manual_seed(2)
    t = _targets([_rand_boxes(3, gen), _rand_boxes(2, gen)])
    out = {"pred_logits": torch.randn(2, 6, 1, generator=gen), "pred_boxes": _rand_boxes(12, gen).view(2, 6, 4)}
    perm = torch.randperm(6, generator=gen)
    out_p = {k: v[:, perm] for k, v in out.items()}
    m = BinaryHungarianMatcherV2(cost_class=2, cost_bbox=5, cost_giou=2, focal=True)
    b, s, j = m(out, t)
    bp, sp, jp = m(out_p, t)
    assert torch.equal(b, bp) and torch.equal(j, jp)
    assert torch.equal(perm[sp], s)


def test_float32_costs_under_autocast():
    gen = torch.Generator().manual_seed(3)
    t = _targets([_rand_boxes(3, gen)])
    out = {"pred_logits": torch.randn(1, 8, 1, generator=gen), "pred_boxes": _rand_boxes(8, gen).view(1, 8, 4)}
    m = BinaryHungarianMatcherV2(focal=True)
    ref = m(out, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        res = m(out, t)
    for a, b in zip(ref, res):
        assert torch.equal(a, b)


def test_non_finite_cost_names_term_and_find():
    gen = torch.Generator().manual_seed(4)
    t = _targets([_rand_boxes(1, gen), _rand_boxes(2, gen)])
    out = {"pred_logits": torch.randn(2, 3, 1, generator=gen), "pred_boxes": _rand_boxes(6, gen).view(2, 3, 4)}
    bad = {k: v.clone() for k, v in out.items()}
    bad["pred_boxes"][1, 2, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"bbox cost for find 1"):
        BinaryHungarianMatcherV2()(bad, t)
    with pytest.raises(NonFiniteLossError, match=r"giou cost for find 1"):
        BinaryHungarianMatcherV2(cost_bbox=0)(bad, t)
    bad = {k: v.clone() for k, v in out.items()}
    bad["pred_logits"][0, 1, 0] = float("nan")
    with pytest.raises(NonFiniteLossError) as e:
        BinaryHungarianMatcherV2(focal=True)(bad, t)
    assert "class cost for find 0" in str(e.value) and "\n" not in str(e.value)
    # NaN in an excluded query does not matter
    BinaryHungarianMatcherV2(focal=True)(bad, t, out_is_valid=torch.tensor([[True, False, True], [True, True, True]]))


def test_config_and_registry():
    with pytest.raises(ConfigError):
        BinaryHungarianMatcherV2(cost_class=0, cost_bbox=0, cost_giou=0)
    cfg = get_cfg()
    m = MATCHER_REGISTRY.get("BinaryHungarianMatcherV2")(cfg)
    assert (m.cost_class, m.cost_bbox, m.cost_giou, m.focal, m.alpha, m.gamma, m.stable) == (
        2.0,
        5.0,
        2.0,
        True,
        0.25,
        2.0,
        False,
    )
