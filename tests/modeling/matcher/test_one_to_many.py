"""BinaryOneToManyMatcher: quantile + threshold selection, padding / validity, packed tgt_idx."""

import numpy as np
import torch

from segtrain.config import get_cfg
from segtrain.modeling.matcher import MATCHER_REGISTRY, BinaryOneToManyMatcher
from segtrain.structures.boxes import box_cxcywh_to_xyxy, box_iou


def _targets(boxes_per_find):
    nb = torch.tensor([len(b) for b in boxes_per_find], dtype=torch.long)
    maxn = max(int(nb.max()), 1)
    padded = torch.zeros(len(boxes_per_find), maxn, 4)
    for i, b in enumerate(boxes_per_find):
        padded[i, : len(b)] = b
    return {"boxes": torch.cat(list(boxes_per_find)), "num_boxes": nb, "boxes_padded": padded}


def _rand_boxes(n, gen):
    c = torch.rand(n, 2, generator=gen) * 0.4 + 0.3
    wh = torch.rand(n, 2, generator=gen) * 0.3 + 0.2
    return torch.cat([c, wh], 1)


def test_hand_case_quantile_and_threshold():
    # one find, one GT, Q = 4 queries all on the GT box (IoU 1); topk 2 -> quantile level 0.5
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    p = torch.tensor([0.1, 0.5, 0.7, 0.9])
    logits = torch.log(p / (1 - p))
    out = {"pred_logits": logits.view(1, 4, 1), "pred_boxes": gt.expand(4, 4).reshape(1, 4, 4).clone()}
    m = BinaryOneToManyMatcher(alpha=0.5, threshold=0.0, topk=2)
    # scores 0.5*p + 0.5 = [0.55, 0.75, 0.85, 0.95]; median (linear) = 0.8 -> queries 2, 3
    b, s, t = m(out, _targets([gt]))
    assert s.tolist() == [2, 3] and t.tolist() == [0, 0] and b.tolist() == [0, 0]
    # threshold 0.9 keeps only query 3
    b, s, t = BinaryOneToManyMatcher(alpha=0.5, threshold=0.9, topk=2)(out, _targets([gt]))
    assert s.tolist() == [3]
    # strict '>': ties at the quantile are not matched (all equal scores -> nothing)
    out_eq = {"pred_logits": torch.zeros(1, 4, 1), "pred_boxes": out["pred_boxes"]}
    assert BinaryOneToManyMatcher(alpha=0.5, threshold=0.0, topk=2)(out_eq, _targets([gt]))[1].numel() == 0
    # topk >= Q: every query above the minimum qualifies (quantile level clamped to 0)
    assert BinaryOneToManyMatcher(alpha=0.5, threshold=0.0, topk=10)(out, _targets([gt]))[1].tolist() == [1, 2, 3]


def test_matches_reference_with_padding_and_offsets():
    gen = torch.Generator().manual_seed(0)
    per_find = [_rand_boxes(2, gen), _rand_boxes(0, gen), _rand_boxes(3, gen)]
    t = _targets(per_find)
    B, Q = 3, 10
    out = {"pred_logits": torch.randn(B, Q, 1, generator=gen), "pred_boxes": _rand_boxes(B * Q, gen).view(B, Q, 4)}
    m = BinaryOneToManyMatcher(alpha=0.3, threshold=0.4, topk=4)
    b, s, tg = m(out, t)
    got = set(zip(b.tolist(), s.tolist(), tg.tolist()))
    expected = set()
    offset = 0
    for bi, gts in enumerate(per_find):
        if len(gts):
            p = out["pred_logits"][bi, :, 0].sigmoid().double().numpy()
            iou = box_iou(box_cxcywh_to_xyxy(out["pred_boxes"][bi]), box_cxcywh_to_xyxy(gts))[0].double().numpy()
            for j in range(len(gts)):
                sc = 0.3 * p + 0.7 * iou[:, j]
                thr = np.quantile(sc, 1 - 4 / Q)  # numpy's default is linear interpolation too
                for q in range(Q):
                    if sc[q] > thr and sc[q] > 0.4:
                        expected.add((bi, q, offset + j))
        offset += len(gts)
    assert got == expected and len(got) > 0
    assert all(n <= 4 for n in np.bincount(tg.numpy()))


def test_validity_masks_and_empty():
    gen = torch.Generator().manual_seed(1)
    t = _targets([_rand_boxes(2, gen)])
    out = {"pred_logits": torch.full((1, 6, 1), 3.0), "pred_boxes": t["boxes_padded"][:, [0, 0, 0, 1, 1, 1]].clone()}
    out["pred_boxes"][0, :, 0] += torch.linspace(0, 0.05, 6)
    m = BinaryOneToManyMatcher(alpha=0.3, threshold=0.4, topk=2)
    b, s, tg = m(out, t)
    assert set(s.tolist()) <= set(range(6)) and len(s) > 0
    b, s, tg = m(out, t, target_is_valid_padded=torch.tensor([[False, True]]))
    assert set(tg.tolist()) == {1}
    b, s, tg = m(out, t, out_is_valid=torch.tensor([[True] * 5 + [False]]))
    assert 5 not in s.tolist()
    empty = {"boxes": torch.zeros(0, 4), "num_boxes": torch.tensor([0]), "boxes_padded": torch.zeros(1, 0, 4)}
    assert all(x.numel() == 0 and x.dtype == torch.long for x in m(out, empty))


def test_from_config():
    m = MATCHER_REGISTRY.get("BinaryOneToManyMatcher")(get_cfg())
    assert (m.alpha, m.threshold, m.topk) == (0.3, 0.4, 4)
    assert BinaryOneToManyMatcher().topk == 6
