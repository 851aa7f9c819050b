"""Sam3LossWrapper: output visiting and suffixes, o2m, normalization, stage scaling, config."""

import math

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.modeling.criterion import CORE_LOSS_KEY, Boxes, IABCEMdetr, Masks, Sam3LossWrapper, build_criterion
from segtrain.modeling.criterion.inspection import inspect_loss_dict
from segtrain.modeling.matcher import BinaryHungarianMatcherV2, BinaryOneToManyMatcher
from segtrain.structures.boxes import box_cxcywh_to_xyxy
from segtrain.utils.errors import ConfigError


def _boxes(shape, gen):
    c = torch.rand(*shape, 2, generator=gen) * 0.5 + 0.25
    wh = torch.rand(*shape, 2, generator=gen) * 0.3 + 0.1
    return torch.cat([c, wh], -1)


def _pred(B, Q, h, gen, presence=True):
    boxes = _boxes((B, Q), gen)
    out = {
        "pred_logits": torch.randn(B, Q, 1, generator=gen),
        "pred_boxes": boxes,
        "pred_boxes_xyxy": box_cxcywh_to_xyxy(boxes),
        "pred_masks": torch.randn(B, Q, h, h, generator=gen),
    }
    if presence:
        out["presence_logit_dec"] = torch.randn(B, 1, generator=gen)
    return out


def make_batch(B=3, Q=8, h=4, H=8, num_boxes=(2, 0, 3), n_aux=2, fs=True, o2m=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = _pred(B, Q, h, gen)
    if n_aux:
        out["aux_outputs"] = [_pred(B, Q, h, gen, presence=False) for _ in range(n_aux)]
    if fs:
        out["first_stage"] = _pred(B, Q, h, gen)
    if o2m:
        for d in [out] + out.get("aux_outputs", []):
            d.update({f"{k}_o2m": v for k, v in _pred(B, Q, h, gen, presence=False).items()})
    nb = torch.tensor(num_boxes)
    T, maxn = int(nb.sum()), max(int(nb.max()), 1)
    boxes = _boxes((T,), gen)
    padded = torch.zeros(B, maxn, 4)
    ids = torch.full((B, maxn), -1)
    k = 0
    for i, n in enumerate(num_boxes):
        padded[i, :n] = boxes[k : k + n]
        ids[i, :n] = torch.arange(n)
        k += n
    masks = torch.zeros(T, H, H, dtype=torch.bool)
    for i in range(T):
        masks[i, i % H : i % H + H // 2, 1 : 1 + H // 2] = True
    targets = {
        "boxes": boxes,
        "boxes_xyxy": box_cxcywh_to_xyxy(boxes),
        "num_boxes": nb,
        "boxes_padded": padded,
        "object_ids_padded": ids,
        "masks": masks,
        "is_valid_mask": torch.ones(T, dtype=torch.bool),
        "is_exhaustive": torch.ones(B, dtype=torch.bool),
    }
    return out, targets


def official_pieces():
    return [
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
        Masks(
            weight_dict={"loss_mask": 200.0, "loss_dice": 10.0}, focal_alpha=0.25, focal_gamma=2.0, compute_aux=False
        ),
    ]


def official_wrapper(**kw):
    args = dict(
        loss_fns_find=official_pieces(),
        matcher=BinaryHungarianMatcherV2(focal=True, cost_class=2.0, cost_bbox=5.0, cost_giou=2.0),
        o2m_matcher=BinaryOneToManyMatcher(alpha=0.3, threshold=0.4, topk=4),
        o2m_weight=2.0,
        use_o2m_matcher_on_o2m_aux=False,
        scale_by_find_batch_size=False,
    )
    args.update(kw)
    return Sam3LossWrapper(**args)


def _o2m(d):
    return {k[:-4]: v for k, v in d.items() if k.endswith("_o2m")}


def test_suffixes_and_core_equals_sum_of_pieces():
    out, t = make_batch()
    w = official_wrapper()
    losses = w(out, t)
    pieces, m, m2 = w.loss_fns_find, w.matcher, w.o2m_matcher
    nb = t["num_boxes"].sum().float()
    expected, final = 0.0, 0.0
    sets = (
        [(out, "", False)]
        + [(a, f"_aux_{i}", True) for i, a in enumerate(out["aux_outputs"])]
        + [(out["first_stage"], "_fs", True)]
    )
    for o, suffix, is_aux in sets:
        ind = m(o, t)
        for f in pieces:
            d = f(outputs=o, targets=t, indices=ind, num_boxes=nb, is_aux=is_aux)
            expected = expected + d[CORE_LOSS_KEY]
            final = final + (d[CORE_LOSS_KEY] if suffix == "" else 0.0)
            for k, v in d.items():
                if k != CORE_LOSS_KEY:
                    assert torch.equal(losses[k + suffix], v)
        if "pred_logits_o2m" in o:
            o2 = _o2m(o)
            ind2 = (m if is_aux else m2)(o2, t)  # use_o2m_matcher_on_o2m_aux=False
            for f in pieces:
                d = f(outputs=o2, targets=t, indices=ind2, num_boxes=nb, is_aux=is_aux)
                expected = expected + 2.0 * d[CORE_LOSS_KEY]
                for k, v in d.items():
                    if k != CORE_LOSS_KEY:
                        assert torch.allclose(losses[k + suffix + "_o2m"], 2.0 * v)  # times o2m_weight
    assert float(losses[CORE_LOSS_KEY]) == pytest.approx(float(expected), rel=1e-6)
    assert float(losses["core_loss_final"]) == pytest.approx(float(final), rel=1e-6)
    assert float(losses["core_loss_aux"]) == pytest.approx(float(expected - final), rel=1e-5)
    for key in [
        "loss_ce",
        "loss_bbox_aux_1",
        "loss_giou_fs",
        "loss_mask_o2m",
        "loss_ce_aux_0_o2m",
        "presence_loss_fs",
        "ce_f1",
        "presence_dec_acc",
    ]:
        assert key in losses
    # Masks has compute_aux=False: no aux / fs mask keys
    assert not any(k.startswith("loss_mask_aux") or k == "loss_mask_fs" for k in losses)


class _Recorder(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, *a, **k):
        self.calls += 1
        return self.inner(*a, **k)


@pytest.mark.parametrize("use_on_aux", [True, False])
def test_o2m_matcher_choice_for_aux(use_on_aux):
    out, t = make_batch(n_aux=2, fs=False)
    m = _Recorder(BinaryHungarianMatcherV2(focal=True))
    m2 = _Recorder(BinaryOneToManyMatcher())
    official_wrapper(matcher=m, o2m_matcher=m2, use_o2m_matcher_on_o2m_aux=use_on_aux)(out, t)
    # o2o: main + 2 aux by the matcher; o2m: main by o2m_matcher, the 2 aux o2m by either
    assert m2.calls == (3 if use_on_aux else 1)
    assert m.calls == (3 if use_on_aux else 5)


def test_o2m_matches_per_box_metric():
    out, t = make_batch(n_aux=1, fs=False)
    w = official_wrapper()
    losses = w(out, t)
    nb = t["num_boxes"].sum().float()
    n_main = w.o2m_matcher(_o2m(out), t)[0].numel()
    n_aux = w.matcher(_o2m(out["aux_outputs"][0]), t)[0].numel()  # use_o2m_matcher_on_o2m_aux=False
    assert n_main > 0
    assert float(losses["o2m_matches_per_box"]) == pytest.approx(n_main / float(nb))
    assert float(losses["o2m_matches_per_box_aux_0"]) == pytest.approx(n_aux / float(nb))
    out_no, t_no = make_batch(n_aux=1, fs=False, o2m=False)
    assert not any(k.startswith("o2m_matches") for k in w(out_no, t_no))


def test_o2m_weight_scales_only_o2m_part():
    out, t = make_batch(n_aux=0, fs=False)
    l1 = official_wrapper(o2m_weight=1.0)(out, t)
    l3 = official_wrapper(o2m_weight=3.0)(out, t)
    out_no = {k: v for k, v in out.items() if not k.endswith("_o2m")}
    l0 = official_wrapper()(out_no, t)
    o2m_part = l1[CORE_LOSS_KEY] - l0[CORE_LOSS_KEY]
    assert float(l3[CORE_LOSS_KEY]) == pytest.approx(float(l0[CORE_LOSS_KEY] + 3 * o2m_part), rel=1e-5)
    # the logged o2m components carry the weight, as the official wrapper logs them
    assert torch.allclose(3 * l1["loss_bbox_o2m"], l3["loss_bbox_o2m"])


def test_precomputed_indices_and_missing_matcher():
    out, t = make_batch(n_aux=0, fs=False, o2m=False)
    ind = BinaryHungarianMatcherV2(focal=True, cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)(out, t)
    ref = official_wrapper()(out, t)
    w = official_wrapper(matcher=None)
    got = w(dict(out, indices=ind), t)
    assert float(got[CORE_LOSS_KEY]) == pytest.approx(float(ref[CORE_LOSS_KEY]), rel=1e-6)
    with pytest.raises(ConfigError, match="matcher"):
        w(out, t)


def test_normalization_modes_without_process_group():
    assert not torch.distributed.is_initialized()
    out, t = make_batch(n_aux=0, fs=False, o2m=False)
    g = official_wrapper(normalization="global")(out, t)
    loc = official_wrapper(normalization="local")(out, t)
    none = official_wrapper(normalization="none")(out, t)
    assert float(g[CORE_LOSS_KEY]) == float(loc[CORE_LOSS_KEY])
    assert float(none["loss_bbox"]) == pytest.approx(5 * float(loc["loss_bbox"]), rel=1e-6)  # 5 GT boxes
    with pytest.raises(ConfigError, match="normalization"):
        official_wrapper(normalization="globl")
    # normalize_by_valid_object_num: a zero-width box is not counted (4 instead of 5)
    t2 = dict(t, boxes=t["boxes"].clone())
    t2["boxes"][0, 2] = 0.0
    a = official_wrapper(normalization="local")(out, t2)
    b = official_wrapper(normalization="local", normalize_by_valid_object_num=True)(out, t2)
    assert float(b["loss_dice"]) == pytest.approx(5 / 4 * float(a["loss_dice"]), rel=1e-6)


def test_stages_steps_scaling():
    out_a, t_a = make_batch(seed=1, n_aux=1, fs=False, o2m=False)
    out_b, _ = make_batch(seed=2, n_aux=1, fs=False, o2m=False)
    out_c, t_c = make_batch(seed=3, n_aux=1, fs=False, o2m=False)
    plain = official_wrapper()
    per = [plain(o, t) for o, t in ((out_a, t_a), (out_b, t_a), (out_c, t_c))]
    w = official_wrapper(normalize_by_stage_num=True, scale_by_find_batch_size=True)
    got = w([[out_a, out_b], out_c], [t_a, t_c])
    B = t_a["num_boxes"].shape[0]
    expected = sum(float(p[CORE_LOSS_KEY]) for p in per) / 2 * math.sqrt(B)
    assert float(got[CORE_LOSS_KEY]) == pytest.approx(expected, rel=1e-5)
    assert float(got["loss_ce"]) == pytest.approx(sum(float(p["loss_ce"]) for p in per), rel=1e-6)
    assert float(got["core_loss_final"] + got["core_loss_aux"]) == pytest.approx(float(got[CORE_LOSS_KEY]), rel=1e-5)
    # single dict == one stage with one step
    single = official_wrapper(scale_by_find_batch_size=True)(out_a, t_a)
    assert float(single[CORE_LOSS_KEY]) == pytest.approx(float(per[0][CORE_LOSS_KEY]) * math.sqrt(B), rel=1e-6)
    with pytest.raises(ValueError, match="2 find stages but 1 find targets"):
        w([out_a, out_c], [t_a])


def test_query_permutation_invariance():
    out, t = make_batch(n_aux=1, fs=True, o2m=True)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(7))

    def permute(d):
        return {
            k: (
                v[:, perm]
                if torch.is_tensor(v) and v.dim() >= 2 and v.shape[1] == 8
                else [permute(a) for a in v]
                if k == "aux_outputs"
                else permute(v)
                if k == "first_stage"
                else v
            )
            for k, v in d.items()
        }

    w = official_wrapper()
    a, b = w(out, t), w(permute(out), t)
    assert set(a) == set(b)
    for k in a:
        assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-5, abs=1e-6), k


def test_official_weights_magnitude_sanity():
    """At the official weights, random-init-like predictions give a total in the single or
    low double digits per output (not thousands, as with unnormalized mask sums)."""
    out, t = make_batch(B=2, Q=200, h=16, H=64, num_boxes=(3, 1), n_aux=0, fs=False, o2m=False)
    out["pred_masks"] = out["pred_masks"] - 2.0  # mask heads start mostly "background"
    losses = official_wrapper(scale_by_find_batch_size=True)(out, t)
    assert 1.0 < float(losses[CORE_LOSS_KEY]) < 100.0, float(losses[CORE_LOSS_KEY])
    for k in ("loss_bbox", "loss_giou", "loss_ce", "loss_mask", "loss_dice", "presence_loss"):
        assert 0.0 <= float(losses[k]) < 5.0, (k, float(losses[k]))


def test_from_config_and_inspector_weights():
    cfg = get_cfg()
    cfg.MODEL.CRITERION.NAME = "Sam3LossWrapper"
    with pytest.raises(ConfigError) as e:  # the Mask2Former matcher cannot match finds
        build_criterion(cfg)
    assert "MODEL.MATCHER.NAME" in str(e.value) and "BinaryHungarianMatcherV2" in str(e.value)
    cfg.MODEL.MATCHER.NAME = "BinaryHungarianMatcherV2"
    w = build_criterion(cfg)
    assert isinstance(w, Sam3LossWrapper) and w.normalization == "global" and w.o2m_weight == 2.0
    assert w.scale_by_find_batch_size and not w.use_o2m_matcher_on_o2m_aux
    assert isinstance(w.matcher, BinaryHungarianMatcherV2) and w.matcher.focal
    assert isinstance(w.o2m_matcher, BinaryOneToManyMatcher) and w.o2m_matcher.topk == 4
    assert [type(f).__name__ for f in w.loss_fns_find] == ["Boxes", "IABCEMdetr", "Masks"]
    assert set(w.required_output_keys) == {"pred_logits", "pred_boxes", "pred_masks"}
    assert w.target_format == "find_packed"
    out, t = make_batch(B=4, n_aux=0, fs=False, num_boxes=(1, 2, 0, 1))
    for v in out.values():
        v.requires_grad_(True)
    report = inspect_loss_dict(w(out, t))
    weights = {c.key: c.weight for c in report.components}
    assert weights["loss_bbox"] == pytest.approx(5.0 * 2)  # times sqrt(B) = 2
    assert weights["loss_mask_o2m"] == pytest.approx(200.0 * 2)  # o2m_weight is in the logged value
    assert weights["ce_f1"] == 0.0


def test_bf16_autocast_close_to_float32():
    out, t = make_batch(n_aux=1, fs=False, o2m=True)
    ref = official_wrapper()(out, t)

    def to_bf16(d):
        return {
            k: (
                v.bfloat16()
                if torch.is_tensor(v) and v.is_floating_point()
                else [to_bf16(a) for a in v]
                if isinstance(v, list)
                else v
            )
            for k, v in d.items()
        }

    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = official_wrapper()(to_bf16(out), t)
    assert torch.isfinite(got[CORE_LOSS_KEY]) and got[CORE_LOSS_KEY].dtype == torch.float32
    assert float(got[CORE_LOSS_KEY]) == pytest.approx(float(ref[CORE_LOSS_KEY]), rel=5e-2)
