"""MultiStepMultiMasksAndIous (SAM 2) against hand-computed values."""

import math

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.modeling.criterion import CORE_LOSS_KEY, MultiStepMultiMasksAndIous, build_criterion
from segtrain.utils.errors import ConfigError

W = {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0}


def sig(x):
    return 1 / (1 + math.exp(-x))


def bce(x, t):
    return math.log1p(math.exp(x)) - x * t


def focal_mean(xs, ts, alpha=0.25, gamma=2):
    tot = 0.0
    for x, t in zip(xs, ts):
        p = sig(x)
        p_t = p * t + (1 - p) * (1 - t)
        tot += bce(x, t) * (1 - p_t) ** gamma * (alpha * t + (1 - alpha) * (1 - t))
    return tot / len(xs)


def dice(xs, ts):
    ps = [sig(x) for x in xs]
    return 1 - (2 * sum(p * t for p, t in zip(ps, ts)) + 1) / (sum(ps) + sum(ts) + 1)


def iou(xs, ts):
    a = [x > 0 for x in xs]
    b = [t > 0 for t in ts]
    inter = sum(x and y for x, y in zip(a, b))
    union = sum(x or y for x, y in zip(a, b))
    return inter / max(union, 1)


GT0 = [1.0, 0.0, 0.0, 1.0]
M0 = [2.0, -2.0, -2.0, 2.0]  # close to GT0, IoU 1
M1 = [0.5, 0.5, -0.3, -1.0]  # IoU 1/3 with GT0
GT1 = [0.0, 0.0, 0.0, 0.0]  # absent object


def _frame(masks, ious, obj):
    return {
        "multistep_pred_multimasks_high_res": [torch.tensor(masks).view(len(masks), -1, 2, 2)],
        "multistep_pred_ious": [torch.tensor(ious)],
        "multistep_object_score_logits": [torch.tensor(obj)],
    }


def _expected(supervise_all_iou, l1, pred_obj_scores, ious=((0.9, 0.2), (0.4, 0.6)), obj=(1.5, -0.5)):
    n = 2
    out = {"loss_mask": 0.0, "loss_dice": 0.0, "loss_iou": 0.0, "loss_class": 0.0}
    target_sum = target_count = 0.0
    for i, gt in enumerate((GT0, GT1)):
        o = (1.0 if any(g > 0 for g in gt) else 0.0) if pred_obj_scores else 1.0
        F = [focal_mean(m, gt) / n for m in (M0, M1)]
        D = [dice(m, gt) / n for m in (M0, M1)]
        err = [(p - iou(m, gt)) for p, m in zip(ious[i], (M0, M1))]
        I = [(abs(e) if l1 else e * e) / n for e in err]
        best = min(range(2), key=lambda k: W["loss_mask"] * F[k] + W["loss_dice"] * D[k])
        out["loss_mask"] += o * F[best]
        out["loss_dice"] += o * D[best]
        out["loss_iou"] += o * (sum(I) / 2 if supervise_all_iou else I[best])
        actual = [iou(m, gt) for m in (M0, M1)]
        target_sum += o * (sum(actual) / 2 if supervise_all_iou else actual[best])
        target_count += o
        if pred_obj_scores:
            t = 1.0 if any(g > 0 for g in gt) else 0.0
            out["loss_class"] += bce(obj[i], t) / n  # alpha -1, gamma 0: plain BCE
    out[CORE_LOSS_KEY] = sum(W[k] * out[k] for k in W)
    # the metric: the mean IoU target of loss_iou over the objects it supervises
    out["iou_target_mean"] = target_sum / max(target_count, 1)
    return out


@pytest.mark.parametrize("supervise_all_iou", [False, True])
@pytest.mark.parametrize("l1", [False, True])
@pytest.mark.parametrize("pred_obj_scores", [False, True])
def test_hand_values(supervise_all_iou, l1, pred_obj_scores):
    crit = MultiStepMultiMasksAndIous(
        W, supervise_all_iou=supervise_all_iou, iou_use_l1_loss=l1, pred_obj_scores=pred_obj_scores
    )
    frame = _frame([[M0, M1], [M0, M1]], [[0.9, 0.2], [0.4, 0.6]], [[1.5], [-0.5]])
    targets = torch.tensor([GT0, GT1]).view(1, 2, 2, 2)
    got = crit([frame], targets)
    exp = _expected(supervise_all_iou, l1, pred_obj_scores)
    for k, v in exp.items():
        assert float(got[k]) == pytest.approx(v, rel=1e-5, abs=1e-7), k


def test_best_of_m_pick_and_absent_object():
    crit = MultiStepMultiMasksAndIous(W, pred_obj_scores=True)
    # object 0 with the worse mask first: the pick must be M0 (index 1 here)
    frame = _frame([[M1, M0]], [[0.0, 0.0]], [[0.0]])
    got = crit([frame], torch.tensor([GT0]).view(1, 1, 2, 2))
    assert float(got["loss_mask"]) == pytest.approx(focal_mean(M0, GT0), rel=1e-5)
    assert float(got["loss_iou"]) == pytest.approx(1.0, rel=1e-5)  # IoU 1 predicted as 0, MSE
    # the same object absent: mask / dice / iou zeroed, loss_class = BCE(0, 0)
    got = crit([frame], torch.zeros(1, 1, 2, 2))
    assert float(got["loss_mask"]) == 0 and float(got["loss_dice"]) == 0 and float(got["loss_iou"]) == 0
    assert float(got["loss_class"]) == pytest.approx(math.log(2), rel=1e-6)


def test_steps_and_frames_add_up():
    torch.manual_seed(0)
    crit = MultiStepMultiMasksAndIous(W, supervise_all_iou=True, iou_use_l1_loss=True, pred_obj_scores=True)

    def rand_frame(steps):
        return {
            "multistep_pred_multimasks_high_res": [torch.randn(3, 3, 8, 8) for _ in range(steps)],
            "multistep_pred_ious": [torch.rand(3, 3) for _ in range(steps)],
            "multistep_object_score_logits": [torch.randn(3, 1) for _ in range(steps)],
        }

    frames = [rand_frame(2), rand_frame(1)]
    targets = (torch.rand(2, 3, 8, 8) > 0.6).float()
    targets[1, 2] = 0
    total = crit(frames, targets)
    parts = []
    for f, t in zip(frames, targets):
        for s in range(len(f["multistep_pred_ious"])):
            one = {k: [v[s]] for k, v in f.items()}
            parts.append(crit([one], t[None]))
    for k in ("loss_mask", "loss_dice", "loss_iou", "loss_class", CORE_LOSS_KEY):
        assert float(total[k]) == pytest.approx(sum(float(p[k]) for p in parts), rel=1e-5)


def test_weight_dict_handling():
    wd = {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0}
    crit = MultiStepMultiMasksAndIous(wd)
    assert wd == {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0}  # not mutated
    assert crit.weight_dict["loss_class"] == 0.0
    with pytest.raises(ConfigError) as e:
        MultiStepMultiMasksAndIous({"loss_mask": 1.0, "loss_dice": 1.0})
    assert "'loss_iou'" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="'loss_ce'"):
        MultiStepMultiMasksAndIous(dict(wd, loss_ce=1.0))


def test_shape_errors_name_both_shapes():
    crit = MultiStepMultiMasksAndIous(W, pred_obj_scores=True)
    frame = {
        "multistep_pred_multimasks_high_res": [torch.zeros(2, 3, 8, 8)],
        "multistep_pred_ious": [torch.zeros(2, 3)],
        "multistep_object_score_logits": [torch.zeros(2, 1)],
    }
    with pytest.raises(ValueError) as e:
        crit([frame], torch.zeros(1, 2, 16, 16))
    msg = str(e.value)
    assert "(2, 3, 8, 8)" in msg and "16, 16" in msg and "\n" not in msg
    with pytest.raises(ValueError, match="2 frames of outputs but targets_batch has T=1"):
        crit([frame, frame], torch.zeros(1, 2, 8, 8))
    bad = dict(frame, multistep_pred_ious=[torch.zeros(2, 2)])
    with pytest.raises(ValueError, match=r"ious \(2, 2\)"):
        crit([bad], torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="targets_batch must be"):
        crit([frame], torch.zeros(2, 8, 8))


def test_gradcheck_float64():
    torch.manual_seed(0)
    crit = MultiStepMultiMasksAndIous(W, supervise_all_iou=True, iou_use_l1_loss=False, pred_obj_scores=True)
    targets = torch.tensor([GT0, [0.0, 1.0, 1.0, 1.0]], dtype=torch.float64).view(1, 2, 2, 2)

    def f(masks, ious, obj):
        frame = {
            "multistep_pred_multimasks_high_res": [masks],
            "multistep_pred_ious": [ious],
            "multistep_object_score_logits": [obj],
        }
        return crit([frame], targets)[CORE_LOSS_KEY]

    masks = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    ious = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    obj = torch.randn(2, 1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (masks, ious, obj))


def test_from_config_and_official_magnitude():
    cfg = get_cfg()
    cfg.MODEL.CRITERION.NAME = "MultiStepMultiMasksAndIous"
    crit = build_criterion(cfg)
    assert crit.weight_dict == W and crit.supervise_all_iou and crit.iou_use_l1_loss and crit.pred_obj_scores
    assert crit.focal_alpha_obj_score == -1.0 and crit.focal_gamma_obj_score == 0.0 and crit.target_format == "video"
    # 8 frames, 3 objects, 3 masks, random-init-like logits: the total stays in double digits
    gen = torch.Generator().manual_seed(0)
    frames = [
        {
            "multistep_pred_multimasks_high_res": [torch.randn(3, 3, 32, 32, generator=gen)],
            "multistep_pred_ious": [torch.rand(3, 3, generator=gen)],
            "multistep_object_score_logits": [torch.randn(3, 1, generator=gen)],
        }
        for _ in range(8)
    ]
    targets = torch.zeros(8, 3, 32, 32)
    targets[:, :, 8:20, 10:24] = 1
    targets[5:, 2] = 0  # the third object leaves
    total = float(crit(frames, targets)[CORE_LOSS_KEY])
    assert 1.0 < total < 100.0, total


def test_fused_binary_path_equals_general_formulas(monkeypatch):
    """Binary GT takes the fused focal / dice / IoU pass (segtrain.layers.binary_mask_losses);
    the losses and gradients equal the general formulas (the path soft GT takes)."""
    from segtrain.layers import binary_mask_losses

    g = torch.Generator().manual_seed(0)
    T, N, M, S = 2, 3, 3, 9
    leaves, outs = [], []
    for _ in range(T):
        masks = [(3 * torch.randn(N, M, S, S, generator=g, dtype=torch.float64)).requires_grad_() for _ in range(2)]
        ious = [torch.rand(N, M, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2)]
        obj = [torch.randn(N, 1, generator=g, dtype=torch.float64).requires_grad_() for _ in range(2)]
        leaves += masks + ious + obj
        keys = ("multistep_pred_multimasks_high_res", "multistep_pred_ious", "multistep_object_score_logits")
        outs.append(dict(zip(keys, (masks, ious, obj))))
    targets = (torch.rand(T, N, S, S, generator=g) > 0.5).double()
    targets[0, 2] = 0  # an absent object
    crit = MultiStepMultiMasksAndIous(W, supervise_all_iou=True, iou_use_l1_loss=True, pred_obj_scores=True)

    def run():
        losses = crit(outs, targets)
        return losses, torch.autograd.grad(losses[CORE_LOSS_KEY], leaves)

    fused, fused_grads = run()
    calls = []
    monkeypatch.setattr(binary_mask_losses.BinaryTargets, "of", lambda *a, **k: calls.append(1))  # -> None
    general, general_grads = run()
    assert calls  # the general formulas ran
    for k in general:
        torch.testing.assert_close(fused[k], general[k], rtol=1e-12, atol=1e-14)
    assert max(float(x.abs().max()) for x in general_grads) > 1e-3
    for a, b in zip(fused_grads, general_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
