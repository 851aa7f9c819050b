"""SetCriterion: values, aux keys and weights, zero-GT, equal to the per-prediction loop
(tests/reference), permutation invariance, autocast, errors, config build."""

import math

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.layers.losses import dice_loss, sigmoid_ce_loss
from segtrain.layers.point_sample import calculate_uncertainty, get_uncertain_point_coords_with_randomness, point_sample
from segtrain.modeling.criterion import CORE_LOSS_KEY, CRITERION_REGISTRY, SetCriterion, build_criterion
from segtrain.modeling.criterion import set_criterion as sc_mod
from segtrain.modeling.matcher import HungarianMatcher
from segtrain.utils.errors import ConfigError, NonFiniteLossError
from tests.reference.set_criterion import ReferenceSetCriterion

WEIGHTS = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}


def _layer(B, Q, K, h, w, g):
    return {
        "pred_logits": torch.randn(B, Q, K + 1, generator=g).requires_grad_(),
        "pred_masks": (3 * torch.randn(B, Q, h, w, generator=g)).requires_grad_(),
    }


def _outputs(B=2, Q=6, K=3, h=8, w=8, n_aux=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = _layer(B, Q, K, h, w, g)
    out["aux_outputs"] = [_layer(B, Q, K, h, w, g) for _ in range(n_aux)]
    return out


def _targets(sizes, K=3, H=16, W=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [
        {"labels": torch.randint(0, K, (n,), generator=g), "masks": torch.rand(n, H, W, generator=g) > 0.5}
        for n in sizes
    ]


def _crit(K=3, num_points=20, **kw):
    return SetCriterion(
        K,
        HungarianMatcher(2, 5, 5, num_points=15),
        dict(WEIGHTS),
        0.1,
        ["labels", "masks"],
        num_points,
        3.0,
        0.75,
        **kw,
    )


def _run(crit, out, tgt, seed=0, reference=False):
    torch.manual_seed(seed)
    return ReferenceSetCriterion.of(crit)(out, tgt) if reference else crit(out, tgt)


def test_keys_weights_and_core_loss():
    crit = _crit()
    out, tgt = _outputs(n_aux=3), _targets([2, 3])
    losses = _run(crit, out, tgt)
    base = ["loss_ce", "loss_mask", "loss_dice"]
    expected = base + [f"{k}_{i}" for i in range(3) for k in base]
    assert set(expected) <= set(losses)
    assert set(losses) - set(expected) == {CORE_LOSS_KEY, "core_loss_final", "core_loss_aux", "class_error"}
    final = sum(WEIGHTS[k] * losses[k] for k in base)
    aux = sum(WEIGHTS[k] * losses[f"{k}_{i}"] for i in range(3) for k in base)
    torch.testing.assert_close(losses["core_loss_final"], final.detach())
    torch.testing.assert_close(losses["core_loss_aux"], aux.detach())
    torch.testing.assert_close(losses[CORE_LOSS_KEY], final + aux)
    assert not losses["core_loss_final"].requires_grad and losses[CORE_LOSS_KEY].requires_grad
    losses[CORE_LOSS_KEY].backward()
    assert torch.isfinite(out["aux_outputs"][2]["pred_masks"].grad).all()
    assert out["aux_outputs"][2]["pred_masks"].grad.abs().sum() > 0


def test_class_error_is_detrs_metric_on_the_final_prediction():
    """class_error = 100 - top-1 accuracy (over K+1 classes) of the final prediction's matched
    queries; no weight, no gradient; both paths agree; 100 with no GT (DETR)."""
    crit = _crit()
    out, tgt = _outputs(n_aux=2), _targets([2, 3])
    losses = _run(crit, out, tgt)
    torch.manual_seed(0)
    indices = crit.matcher(out, tgt)
    logits = out["pred_logits"].detach()
    hits = [
        bool(logits[b, i].argmax() == tgt[b]["labels"][j])
        for b, (ii, jj) in enumerate(indices)
        for i, j in zip(ii.tolist(), jj.tolist())
    ]
    assert losses["class_error"].item() == pytest.approx(100.0 - 100.0 * sum(hits) / len(hits))
    assert not losses["class_error"].requires_grad and "class_error_0" not in losses
    ref = _run(crit, out, tgt, reference=True)
    torch.testing.assert_close(ref["class_error"], losses["class_error"])
    # make every matched query right: logits put a large margin on the GT class
    right = {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in out.items()}
    for b, (ii, jj) in enumerate(indices):
        right["pred_logits"][b, ii, tgt[b]["labels"][jj]] += 100.0
    assert _run(crit, right, tgt)["class_error"].item() == 0.0
    assert _run(crit, out, _targets([0, 0]))["class_error"].item() == 100.0
    # the total does not depend on it
    total = sum(crit.weight_of(k) * v for k, v in losses.items() if k != CORE_LOSS_KEY and not k.startswith("core"))
    torch.testing.assert_close(losses[CORE_LOSS_KEY], total)


def test_explicit_aux_weight_and_zero_weight():
    crit = SetCriterion(
        3,
        HungarianMatcher(2, 5, 5, num_points=15),
        {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 0.0, "loss_ce_1": 0.5},
        0.1,
        ["labels", "masks"],
        20,
        3.0,
        0.75,
    )
    out, tgt = _outputs(n_aux=2), _targets([2, 1])
    losses = _run(crit, out, tgt)
    total = (
        2 * losses["loss_ce"]
        + 5 * losses["loss_mask"]
        + 2 * losses["loss_ce_0"]
        + 5 * losses["loss_mask_0"]
        + 0.5 * losses["loss_ce_1"]
        + 5 * losses["loss_mask_1"]
    )
    torch.testing.assert_close(losses[CORE_LOSS_KEY], total)
    assert "loss_dice_1" in losses  # logged even with weight 0


def test_unknown_weight_key_errors():
    with pytest.raises(ConfigError, match="loss_bbox") as e:
        SetCriterion(3, HungarianMatcher(), {"loss_bbox": 1.0}, 0.1, ["labels", "masks"], 10, 3.0, 0.75)
    assert "loss_ce" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="loss_mask"):  # computed only with the 'masks' loss
        SetCriterion(3, HungarianMatcher(), {"loss_mask": 1.0}, 0.1, ["labels"], 10, 3.0, 0.75)
    crit = SetCriterion(3, HungarianMatcher(), {"loss_ce": 1.0, "loss_ce_5": 1.0}, 0.1, ["labels"], 10, 3.0, 0.75)
    with pytest.raises(ConfigError, match="loss_ce_5") as e:
        crit(_outputs(n_aux=2), _targets([1, 1]))
    assert "loss_ce_1" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="unknown loss 'boxes'"):
        SetCriterion(3, HungarianMatcher(), {}, 0.1, ["labels", "boxes"], 10, 3.0, 0.75)


def test_hand_computed_values_single_layer():
    """B=1, Q=2, K=2, one GT of class 1. loss_ce = sum_i w[y_i] nll_i / sum_i w[y_i] over the
    2 queries (matched -> 1, the other -> K=2 with weight eos=0.1). Mask terms equal
    sigmoid_ce_loss / dice_loss of the points drawn after the matcher's points (same seed)."""
    g = torch.Generator().manual_seed(4)
    out = {"pred_logits": torch.randn(1, 2, 3, generator=g), "pred_masks": torch.randn(1, 2, 4, 4, generator=g)}
    tgt = [{"labels": torch.tensor([1]), "masks": torch.rand(1, 8, 8, generator=g) > 0.5}]
    matcher = HungarianMatcher(1, 1, 1, num_points=10)
    crit = SetCriterion(
        2, matcher, {"loss_ce": 1.0, "loss_mask": 1.0, "loss_dice": 1.0}, 0.1, ["labels", "masks"], 12, 2.0, 0.5
    )
    torch.manual_seed(0)
    losses = crit(out, tgt)
    torch.manual_seed(0)
    ((q, j),) = matcher(out, tgt)
    q = int(q)
    logp = out["pred_logits"][0].log_softmax(-1)
    y = [2, 2]
    y[q] = 1
    w = [0.1 if c == 2 else 1.0 for c in y]
    ce = -(w[0] * logp[0, y[0]] + w[1] * logp[1, y[1]]) / (w[0] + w[1])
    assert losses["loss_ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    src = out["pred_masks"][0, q][None, None]
    coords = get_uncertain_point_coords_with_randomness(src, calculate_uncertainty, 12, 2.0, 0.5)
    lab = point_sample(tgt[0]["masks"].float()[None], coords).squeeze(1)
    logit = point_sample(src, coords).squeeze(1)
    assert losses["loss_mask"].item() == pytest.approx(sigmoid_ce_loss(logit, lab, 1).item(), rel=1e-6)
    assert losses["loss_dice"].item() == pytest.approx(dice_loss(logit, lab, 1).item(), rel=1e-6)


@pytest.mark.parametrize("match_order", ["target", "query"])
@pytest.mark.parametrize("sizes", [[2, 0, 3], [0, 0, 0], [7, 1, 4]])
def test_batched_equals_reference(match_order, sizes):
    """Same RNG state -> batched path == per-layer per-image loop (Q=6 < 7 GT in one case)."""
    crit = _crit(match_order=match_order)
    out, tgt = _outputs(B=3, n_aux=4), _targets(sizes)
    a = _run(crit, out, tgt, seed=5)
    b = _run(crit, out, tgt, seed=5, reference=True)
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-6, msg=k)
    ga = torch.autograd.grad(a[CORE_LOSS_KEY], [out["pred_masks"], out["aux_outputs"][1]["pred_logits"]])
    gb = torch.autograd.grad(b[CORE_LOSS_KEY], [out["pred_masks"], out["aux_outputs"][1]["pred_logits"]])
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)


def test_permutation_invariance():
    # "target" order gives each GT mask the same random rows whatever the query order
    crit = _crit(match_order="target")
    out, tgt = _outputs(Q=7, n_aux=2), _targets([3, 2])
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(9))

    def permute(layer):
        return {"pred_logits": layer["pred_logits"][:, perm], "pred_masks": layer["pred_masks"][:, perm]}

    pout = permute(out)
    pout["aux_outputs"] = [permute(a) for a in out["aux_outputs"]]
    for ref in (False, True):
        a = _run(crit, out, tgt, seed=11, reference=ref)
        b = _run(crit, pout, tgt, seed=11, reference=ref)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)


def test_zero_gt_images():
    """No GT at all: every query's target is K (weight eos), so loss_ce is the plain mean of
    -log softmax[:, K] (the weights cancel); mask terms are exactly 0 and attached."""
    crit = _crit()
    out, tgt = _outputs(n_aux=1), _targets([0, 0])
    losses = _run(crit, out, tgt)
    expected = -out["pred_logits"].log_softmax(-1)[..., 3].mean()
    torch.testing.assert_close(losses["loss_ce"], expected)
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice_0"].item() == 0.0
    assert all(torch.isfinite(v).all() for v in losses.values())
    losses[CORE_LOSS_KEY].backward()
    assert torch.isfinite(out["pred_logits"].grad).all()
    assert out["pred_masks"].grad is not None and (out["pred_masks"].grad == 0).all()


def test_num_masks_goes_through_comm(monkeypatch):
    """num_masks is averaged by comm.all_reduce_mean: a second process with no GT halves it."""
    crit = _crit()
    out, tgt = _outputs(n_aux=0), _targets([2, 2])
    a = _run(crit, out, tgt)
    monkeypatch.setattr(sc_mod.comm, "all_reduce_mean", lambda v: v / 2)
    b = _run(crit, out, tgt)
    torch.testing.assert_close(b["loss_mask"], 2 * a["loss_mask"])
    torch.testing.assert_close(b["loss_ce"], a["loss_ce"])
    monkeypatch.setattr(sc_mod.comm, "all_reduce_mean", lambda v: v * 0)  # clamped to >= 1
    c = _run(crit, out, tgt)
    torch.testing.assert_close(c["loss_mask"], 4 * a["loss_mask"])


def test_eos_weight_is_buffer():
    crit = _crit()
    assert "empty_weight" in dict(crit.named_buffers())
    torch.testing.assert_close(crit.empty_weight, torch.tensor([1.0, 1.0, 1.0, 0.1]))


def test_bf16_autocast_float32_losses():
    crit = _crit()
    out, tgt = _outputs(n_aux=1), _targets([2, 3])
    ref = _run(crit, out, tgt, seed=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = _run(crit, out, tgt, seed=3)
    for k, v in low.items():
        assert v.dtype == torch.float32, k
        torch.testing.assert_close(v, ref[k], rtol=1e-5, atol=1e-5, msg=k)


def test_non_finite_predictions_name_layer():
    crit = _crit()
    out, tgt = _outputs(n_aux=3), _targets([2, 3])
    with torch.no_grad():
        out["aux_outputs"][1]["pred_masks"][1, 0] = float("inf") * 0
    with pytest.raises(NonFiniteLossError) as e:
        _run(crit, out, tgt)
    msg = str(e.value)
    assert "aux_outputs[1]" in msg and "image 1" in msg and "\n" not in msg


def test_bad_labels_and_missing_keys():
    crit = _crit()
    with pytest.raises(ValueError, match="outside"):
        crit(_outputs(), [{"labels": torch.tensor([5]), "masks": torch.ones(1, 16, 16)}] * 2)
    with pytest.raises(ConfigError, match="pred_masks"):
        crit({"pred_logits": torch.randn(2, 4, 4)}, _targets([1, 1]))
    no_batch_matcher = SetCriterion(3, torch.nn.Identity(), dict(WEIGHTS), 0.1, ["labels", "masks"], 20, 3.0, 0.75)
    with pytest.raises(ConfigError, match="Identity has no match_many.*HungarianMatcher"):
        no_batch_matcher(_outputs(), _targets([1, 1]))


def test_build_from_config_and_swap():
    cfg = get_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 7
    crit = build_criterion(cfg)
    assert isinstance(crit, SetCriterion) and crit.num_classes == 7
    assert crit.weight_dict == WEIGHTS and crit.eos_coef == pytest.approx(0.1)
    assert (crit.num_points, crit.oversample_ratio, crit.importance_sample_ratio) == (12544, 3.0, 0.75)
    assert isinstance(crit.matcher, HungarianMatcher) and crit.matcher.num_points == 12544
    assert CRITERION_REGISTRY.get("SetCriterion") is SetCriterion
    cfg.MODEL.CRITERION.SET_CRITERION.WEIGHT_DICT.loss_ce = 1.5
    assert build_criterion(cfg).weight_dict["loss_ce"] == 1.5
    name = "_TestSwapCriterion"
    if name not in CRITERION_REGISTRY.names():

        class _TestSwapCriterion(torch.nn.Module):
            required_output_keys = ("pred_logits",)
            target_format = "instances"

            def __init__(self, cfg):
                super().__init__()

        CRITERION_REGISTRY.register(_TestSwapCriterion)
    cfg.MODEL.CRITERION.NAME = name
    assert type(build_criterion(cfg)).__name__ == name
    cfg.MODEL.CRITERION.NAME = "SetCriterion"
    del cfg.MODEL.SEM_SEG_HEAD["NUM_CLASSES"]
    with pytest.raises(ConfigError, match="NUM_CLASSES"):
        build_criterion(cfg)


def test_official_positional_order():
    m = HungarianMatcher(2, 5, 5, 12544)
    crit = SetCriterion(80, m, WEIGHTS, 0.1, ["labels", "masks"], 12544, 3.0, 0.75)
    assert crit.matcher is m and crit.losses == ["labels", "masks"]
    w = dict(WEIGHTS)
    SetCriterion(80, m, w, 0.1, ["labels", "masks"], 12544, 3.0, 0.75)
    assert w == WEIGHTS  # the caller's dict is not modified
    assert math.isclose(float(crit.empty_weight[-1]), 0.1, rel_tol=1e-6)


def test_loss_inspection_sees_effective_weights():
    """d core_loss / d component is each key's weight (aux keys: their base key's)."""
    from segtrain.modeling.criterion.inspection import inspect_loss_dict

    crit = _crit()
    losses = _run(crit, _outputs(n_aux=2), _targets([2, 1]))
    report = inspect_loss_dict(losses)
    got = {c.key: c.weight for c in report.components}
    for k, w in got.items():
        assert w == pytest.approx(crit.weight_of(k)), k
    assert set(report.summaries) == {"core_loss_final", "core_loss_aux"}
