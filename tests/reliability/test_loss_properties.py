"""Property-based tests (hypothesis) of every criterion and matcher: over random shapes
including images / finds / clips with zero objects (so zero queries matched), all-empty GT
masks and extreme logits (+-1e4), every loss value and every gradient is finite, and every
matcher returns a valid assignment without raising.

Few examples per property (the suite is time-boxed), derandomized so that a run is
reproducible; each example builds its tensors from a drawn seed."""

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from segtrain.modeling.criterion import (
    CORE_LOSS_KEY,
    Boxes,
    IABCEMdetr,
    Masks,
    MultiStepMultiMasksAndIous,
    Sam3LossWrapper,
    SetCriterion,
)
from segtrain.modeling.matcher import BinaryHungarianMatcherV2, BinaryOneToManyMatcher, HungarianMatcher
from segtrain.structures.boxes import box_cxcywh_to_xyxy
from segtrain.structures.targets import targets_to_find_packed

PROPERTY = settings(
    max_examples=10, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# logit scales: ordinary, saturated, the extreme +-1e4 with random signs (1e4) or all -1e4
scales = st.sampled_from([1.0, 30.0, 1e4, -1e4])
# per-image object counts, zero included (and whole batches of zeros)
counts = st.lists(st.integers(0, 3), min_size=1, max_size=3)
mask_kinds = st.sampled_from(["random", "empty", "full"])


def _logits(shape, scale, gen):
    """Logits of magnitude ``|scale|``: at +-1e4 all of sign ``scale`` or (``1e4``) random signs;
    Gaussian otherwise."""
    if scale == -1e4:
        return torch.full(shape, scale)
    if scale >= 1e4:
        return torch.where(torch.rand(*shape, generator=gen) > 0.5, scale, -scale)
    return scale * torch.randn(*shape, generator=gen)


def _gt_masks(n, h, w, kind, gen):
    if kind == "empty":
        return torch.zeros(n, h, w, dtype=torch.bool)
    if kind == "full":
        return torch.ones(n, h, w, dtype=torch.bool)
    return torch.rand(n, h, w, generator=gen) > 0.5


def _assert_finite_with_finite_grads(losses, leaves):
    for k, v in losses.items():
        assert torch.isfinite(torch.as_tensor(v)).all(), f"{k}={v}"
    losses[CORE_LOSS_KEY].backward()
    for name, t in leaves.items():
        assert t.grad is None or torch.isfinite(t.grad).all(), f"non-finite gradient of {name}"


def _assert_valid_pairs(i, j, Q, n):
    assert len(i) == len(j) == min(Q, n)
    assert len(set(i.tolist())) == len(i) and len(set(j.tolist())) == len(j)
    assert all(0 <= q < Q for q in i.tolist()) and all(0 <= t < n for t in j.tolist())


# ---------------------------------------------------------------------------- Mask2Former
@PROPERTY
@given(
    sizes=counts,
    Q=st.integers(1, 5),
    K=st.integers(1, 3),
    scale=scales,
    kind=mask_kinds,
    n_aux=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
@example(sizes=[0, 0], Q=3, K=2, scale=1e4, kind="empty", n_aux=1, seed=0)  # nothing to match, saturated
@example(sizes=[3, 1], Q=2, K=2, scale=-1e4, kind="empty", n_aux=1, seed=1)  # more GT than queries, empty masks
def test_set_criterion_and_hungarian_matcher_are_finite(sizes, Q, K, scale, kind, n_aux, seed):
    gen = torch.Generator().manual_seed(seed)
    h = w = 4
    H = W = 8

    def layer():
        return {
            "pred_logits": _logits((len(sizes), Q, K + 1), scale, gen).requires_grad_(),
            "pred_masks": _logits((len(sizes), Q, h, w), scale, gen).requires_grad_(),
        }

    out = layer()
    out["aux_outputs"] = [layer() for _ in range(n_aux)]
    targets = [
        {"labels": torch.randint(0, K, (n,), generator=gen), "masks": _gt_masks(n, H, W, kind, gen)} for n in sizes
    ]
    matcher = HungarianMatcher(2, 5, 5, num_points=12)
    torch.manual_seed(seed)
    for (i, j), n in zip(matcher(out, targets), sizes):
        _assert_valid_pairs(i, j, Q, n)
    crit = SetCriterion(
        K, matcher, {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}, 0.1, ["labels", "masks"], 12, 3.0, 0.75
    )
    losses = crit(out, targets)
    leaves = {"pred_logits": out["pred_logits"], "pred_masks": out["pred_masks"]}
    leaves.update({f"aux{i}.pred_masks": a["pred_masks"] for i, a in enumerate(out["aux_outputs"])})
    _assert_finite_with_finite_grads(losses, leaves)
    assert out["pred_logits"].grad is not None  # the no-object class is always supervised


# ---------------------------------------------------------------------------- SAM 3
def _find_batch(sizes, Q, scale, kind, gen, o2m):
    """Predictions (main, one aux, o2m copies) and packed find targets for finds of ``sizes`` GT."""
    h = 4
    H = W = 8

    def pred(presence):
        boxes = torch.cat(
            [
                torch.rand(len(sizes), Q, 2, generator=gen) * 0.6 + 0.2,
                torch.rand(len(sizes), Q, 2, generator=gen) * 0.3 + 0.05,
            ],
            -1,
        ).requires_grad_()
        out = {
            "pred_logits": _logits((len(sizes), Q, 1), scale, gen).requires_grad_(),
            "pred_boxes": boxes,
            "pred_masks": _logits((len(sizes), Q, h, h), scale, gen).requires_grad_(),
        }
        out["pred_boxes_xyxy"] = box_cxcywh_to_xyxy(boxes)
        if presence:
            out["presence_logit_dec"] = _logits((len(sizes), 1), scale, gen).requires_grad_()
        return out

    out = pred(True)
    out["aux_outputs"] = [pred(False)]
    if o2m:
        for d in [out] + out["aux_outputs"]:
            d.update({f"{k}_o2m": v for k, v in pred(False).items()})
    per_image = []
    for n in sizes:
        masks = _gt_masks(n, H, W, kind, gen)
        xy = torch.rand(n, 2, generator=gen) * 4
        boxes = torch.cat([xy, xy + 1 + torch.rand(n, 2, generator=gen) * 3], 1)  # absolute XYXY in the 8x8 image
        per_image.append({"labels": torch.zeros(n, dtype=torch.int64), "masks": masks, "boxes": boxes})
    targets = targets_to_find_packed(per_image, [(H, W)] * len(sizes))
    return out, targets


def _sam3_wrapper():
    pieces = [
        Boxes(weight_dict={"loss_bbox": 5.0, "loss_giou": 2.0}),
        IABCEMdetr(
            pos_weight=10.0,
            weight_dict={"loss_ce": 20.0, "presence_loss": 20.0},
            pos_focal=False,
            alpha=0.25,
            gamma=2,
            use_presence=True,
            pad_n_queries=200,
            weak_loss=False,
        ),
        Masks(weight_dict={"loss_mask": 200.0, "loss_dice": 10.0}, focal_alpha=0.25, focal_gamma=2.0, compute_aux=True),
    ]
    return Sam3LossWrapper(
        loss_fns_find=pieces,
        normalization="global",
        matcher=BinaryHungarianMatcherV2(focal=True, cost_class=2.0, cost_bbox=5.0, cost_giou=2.0),
        o2m_matcher=BinaryOneToManyMatcher(alpha=0.3, threshold=0.4, topk=4),
        o2m_weight=2.0,
        use_o2m_matcher_on_o2m_aux=False,
        scale_by_find_batch_size=True,
    )


@PROPERTY
@given(sizes=counts, Q=st.integers(1, 5), scale=scales, kind=mask_kinds, o2m=st.booleans(), seed=st.integers(0, 2**16))
@example(sizes=[0, 0], Q=3, scale=1e4, kind="empty", o2m=True, seed=0)
@example(sizes=[3, 2], Q=2, scale=1e4, kind="empty", o2m=True, seed=1)
def test_sam3_loss_wrapper_and_pieces_are_finite(sizes, Q, scale, kind, o2m, seed):
    gen = torch.Generator().manual_seed(seed)
    out, targets = _find_batch(sizes, Q, scale, kind, gen, o2m)
    losses = _sam3_wrapper()(out, targets)
    leaves = {k: v for k, v in out.items() if torch.is_tensor(v) and v.requires_grad and v.is_leaf}
    leaves.update({f"aux.{k}": v for k, v in out["aux_outputs"][0].items() if torch.is_tensor(v) and v.is_leaf})
    _assert_finite_with_finite_grads(losses, leaves)


@PROPERTY
@given(
    sizes=counts,
    Q=st.integers(1, 5),
    scale=scales,
    focal=st.booleans(),
    stable=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(sizes=[0, 0], Q=2, scale=1e4, focal=True, stable=True, seed=0)
@example(sizes=[3, 0], Q=2, scale=1e4, focal=True, stable=True, seed=1)
def test_find_matchers_return_valid_assignments(sizes, Q, scale, focal, stable, seed):
    gen = torch.Generator().manual_seed(seed)
    out, targets = _find_batch(sizes, Q, scale, "random", gen, o2m=False)
    b, src, tgt = BinaryHungarianMatcherV2(focal=focal, stable=stable, cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)(
        out, targets
    )
    offsets = torch.cumsum(torch.tensor([0] + sizes), 0)
    for k, n in enumerate(sizes):
        sel = b == k
        _assert_valid_pairs(src[sel], tgt[sel] - offsets[k], Q, n)
    b, src, tgt = BinaryOneToManyMatcher(alpha=0.3, threshold=0.4, topk=4)(out, targets)
    assert len(b) == len(src) == len(tgt)
    for k in b.unique().tolist():
        sel = b == k
        assert sizes[k] > 0  # finds without GT get nothing
        assert ((src[sel] >= 0) & (src[sel] < Q)).all()
        assert ((tgt[sel] >= offsets[k]) & (tgt[sel] < offsets[k + 1])).all()


# ---------------------------------------------------------------------------- SAM 2
@PROPERTY
@given(
    T=st.integers(1, 3),
    N=st.integers(0, 3),
    M=st.sampled_from([1, 3]),
    steps=st.integers(1, 2),
    scale=scales,
    kind=mask_kinds,
    obj_scores=st.booleans(),
    all_iou=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(T=2, N=0, M=3, steps=2, scale=1e4, kind="empty", obj_scores=True, all_iou=True, seed=0)
@example(T=2, N=2, M=3, steps=2, scale=1e4, kind="empty", obj_scores=True, all_iou=False, seed=1)
def test_multistep_multimask_is_finite(T, N, M, steps, scale, kind, obj_scores, all_iou, seed):
    gen = torch.Generator().manual_seed(seed)
    H = W = 8
    leaves = {}
    outs = []
    for t in range(T):
        frame = {
            "multistep_pred_multimasks_high_res": [],
            "multistep_pred_ious": [],
            "multistep_object_score_logits": [],
        }
        for s in range(steps):
            masks = _logits((N, M, H, W), scale, gen).requires_grad_()
            ious = torch.rand(N, M, generator=gen).requires_grad_()
            obj = _logits((N, 1), scale, gen).requires_grad_()
            leaves.update({f"masks{t}.{s}": masks, f"ious{t}.{s}": ious, f"obj{t}.{s}": obj})
            frame["multistep_pred_multimasks_high_res"].append(masks)
            frame["multistep_pred_ious"].append(ious)
            frame["multistep_object_score_logits"].append(obj)
        outs.append(frame)
    targets = torch.stack([_gt_masks(N, H, W, kind, gen) for _ in range(T)]).float()
    crit = MultiStepMultiMasksAndIous(
        {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0},
        supervise_all_iou=all_iou,
        iou_use_l1_loss=True,
        pred_obj_scores=obj_scores,
    )
    losses = crit(outs, targets)
    if N == 0:
        assert losses[CORE_LOSS_KEY].item() == 0.0
    _assert_finite_with_finite_grads(losses, leaves)


def test_hypothesis_settings_are_reproducible():
    """The settings the properties above run with (a failure must replay on any machine)."""
    assert PROPERTY.derandomize and PROPERTY.deadline is None and PROPERTY.max_examples <= 10
    with pytest.raises(AssertionError):
        _assert_finite_with_finite_grads({CORE_LOSS_KEY: torch.tensor(float("nan"), requires_grad=True)}, {})
