"""Functional losses against hand-computed values (arithmetic in each docstring) and gradcheck."""

import math

import pytest
import torch
import torch.nn.functional as F

from segtrain.layers.losses import (
    batch_dice_loss,
    batch_sigmoid_ce_loss,
    batch_sigmoid_focal_class_cost,
    dice_loss,
    iou_loss,
    sigmoid_ce_loss,
    sigmoid_focal_loss,
    upsampled_focal_dice_loss,
)
from tests.reference.hungarian import batch_sigmoid_ce_loss_two_pass

LN2, LN3 = math.log(2.0), math.log(3.0)


def test_sigmoid_ce_loss_hand():
    """x=[[0,0],[ln3,ln3]], t=[[1,0],[1,1]], n=2.
    bce(0, t) = ln 2 for any t; bce(ln3, 1) = ln(1 + e^-ln3) = ln(4/3).
    mask means: ln2, ln(4/3); sum / 2 = (ln2 + ln(4/3)) / 2."""
    x = torch.tensor([[0.0, 0.0], [LN3, LN3]])
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert sigmoid_ce_loss(x, t, 2).item() == pytest.approx((LN2 + math.log(4 / 3)) / 2, rel=1e-6)


def test_sigmoid_ce_loss_stable_for_large_logits():
    """x=+-1000 against the right target: bce = ln(1 + e^-1000) ~ 0, not nan/inf; wrong target: 1000."""
    x = torch.tensor([[1000.0, -1000.0]])
    assert sigmoid_ce_loss(x, torch.tensor([[1.0, 0.0]]), 1).item() == pytest.approx(0.0, abs=1e-6)
    assert sigmoid_ce_loss(x, torch.tensor([[0.0, 1.0]]), 1).item() == pytest.approx(1000.0)


def test_dice_loss_hand():
    """x=[[0,0]] -> p=[.5,.5], t=[1,0]: 1 - (2*.5 + 1) / (1 + 1 + 1) = 1/3; n=1.
    A perfect large-logit prediction: 1 - (2*2 + 1)/(2 + 2 + 1) = 0."""
    assert dice_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), 1).item() == pytest.approx(1 / 3)
    assert dice_loss(torch.full((1, 2), 50.0), torch.ones(1, 2), 1).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_loss_multimask_hand():
    """[N=1, M=2, 1, 2] zero logits, t=[1,0] in both: each 1/3; not summed, / n=2 -> [[1/6, 1/6]]."""
    x = torch.zeros(1, 2, 1, 2)
    t = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2).expand(1, 2, 1, 2)
    out = dice_loss(x, t, 2, loss_on_multimask=True)
    assert out.shape == (1, 2)
    torch.testing.assert_close(out, torch.full((1, 2), 1 / 6))


def test_sigmoid_focal_loss_hand():
    """x=0 -> p=.5, bce=ln2, p_t=.5, (1-p_t)^2=.25. alpha_t = .25 (t=1) / .75 (t=0).
    t=[1,0]: (.25*.25*ln2 + .75*.25*ln2)/2 = ln2/8; alpha=-1: .25*ln2 each -> ln2/4; gamma=0, alpha=-1: ln2."""
    x, t = torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])
    assert sigmoid_focal_loss(x, t, 1).item() == pytest.approx(LN2 / 8)
    assert sigmoid_focal_loss(x, t, 1, alpha=-1).item() == pytest.approx(LN2 / 4)
    assert sigmoid_focal_loss(x, t, 1, alpha=-1, gamma=0).item() == pytest.approx(LN2)
    mm = sigmoid_focal_loss(torch.zeros(2, 3, 1, 2), t.view(1, 1, 1, 2).expand(2, 3, 1, 2), 2, loss_on_multimask=True)
    torch.testing.assert_close(mm, torch.full((2, 3), LN2 / 16))


def test_iou_loss_hand():
    """pred (x>0) = left column of 2x2, GT = top row: inter 1, union 3 -> iou 1/3.
    pred_iou .5: mse (1/6)^2 = 1/36, l1 1/6. Empty pred and GT: union clamped to 1 -> iou 0."""
    x = torch.tensor([[1.0, -1.0], [1.0, -1.0]]).view(1, 1, 2, 2)
    t = torch.tensor([[1.0, 1.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    p = torch.tensor([[0.5]])
    assert iou_loss(x, t, p, 1, loss_on_multimask=True).item() == pytest.approx(1 / 36)
    assert iou_loss(x, t, p, 1, loss_on_multimask=True, use_l1_loss=True).item() == pytest.approx(1 / 6)
    assert iou_loss(x, t, p, 2).item() == pytest.approx(1 / 72)
    empty = iou_loss(
        -torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.tensor([[0.25]]), 1, loss_on_multimask=True
    )
    assert empty.item() == pytest.approx(0.0625)


def test_batch_sigmoid_ce_loss_hand_and_pairwise():
    """x=[[0,0],[ln3,-ln3]], t=[[1,0],[1,1]]: row 0 -> ln2 for both GT; (1,0): bce(ln3,1)=ln(4/3),
    bce(-ln3,0)=ln(4/3) -> ln(4/3); (1,1): (ln(4/3) + bce(-ln3,1)=ln4)/2."""
    x = torch.tensor([[0.0, 0.0], [LN3, -LN3]])
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    expected = torch.tensor([[LN2, LN2], [math.log(4 / 3), (math.log(4 / 3) + math.log(4)) / 2]])
    torch.testing.assert_close(batch_sigmoid_ce_loss(x, t), expected)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(4, 7, generator=g) * 30, torch.rand(3, 7, generator=g)
    pair = torch.stack(
        [torch.stack([sigmoid_ce_loss(x[i : i + 1], t[j : j + 1], 1) for j in range(3)]) for i in range(4)]
    )
    torch.testing.assert_close(batch_sigmoid_ce_loss(x, t), pair)
    assert torch.isfinite(batch_sigmoid_ce_loss(x * 1e3, t)).all()


def test_batch_sigmoid_ce_loss_two_pass_is_the_same_cost():
    """The formula as written (two BCE passes, two products; the reference matcher's form) gives
    the one-softplus form's values, batched or not, and stays finite for huge logits."""
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 6, 50, generator=g) * 8, (torch.rand(2, 3, 50, generator=g) > 0.5).float()
    torch.testing.assert_close(batch_sigmoid_ce_loss_two_pass(x, t), batch_sigmoid_ce_loss(x, t))
    torch.testing.assert_close(batch_sigmoid_ce_loss_two_pass(x[0], t[0]), batch_sigmoid_ce_loss(x[0], t[0]))
    assert torch.isfinite(batch_sigmoid_ce_loss_two_pass(x * 1e3, t)).all()


def test_batch_dice_loss_matches_pairwise_and_batches():
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(4, 6, generator=g), (torch.rand(3, 6, generator=g) > 0.5).float()
    pair = torch.stack([torch.stack([dice_loss(x[i : i + 1], t[j : j + 1], 1) for j in range(3)]) for i in range(4)])
    torch.testing.assert_close(batch_dice_loss(x, t), pair)
    assert batch_dice_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).item() == pytest.approx(1 / 3)
    xb, tb = torch.stack([x, x.flip(0)]), torch.stack([t, t])  # leading batch dims
    torch.testing.assert_close(batch_dice_loss(xb, tb)[1], batch_dice_loss(x.flip(0), t))
    torch.testing.assert_close(batch_sigmoid_ce_loss(xb, tb)[0], batch_sigmoid_ce_loss(x, t))


def test_focal_class_cost_hand():
    """x=0, alpha=.25, gamma=2: pos = -.25*.25*ln(.5) = ln2/16, neg = -.75*.25*ln(.5) = 3ln2/16 -> -ln2/8."""
    assert batch_sigmoid_focal_class_cost(torch.zeros(1)).item() == pytest.approx(-LN2 / 8)
    assert torch.isfinite(batch_sigmoid_focal_class_cost(torch.tensor([-1e4, 1e4]))).all()


def _d(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def test_gradcheck_losses():
    x = _d(3, 5).requires_grad_()
    t = torch.rand(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert torch.autograd.gradcheck(lambda a: sigmoid_ce_loss(a, t, 2.0), (x,))
    assert torch.autograd.gradcheck(lambda a: dice_loss(a, t, 2.0), (x,))
    assert torch.autograd.gradcheck(lambda a: sigmoid_focal_loss(a, t, 2.0), (x,))
    assert torch.autograd.gradcheck(lambda a: sigmoid_focal_loss(a, t, 2.0, alpha=-1, gamma=0), (x,))
    xm = _d(2, 3, 2, 2, seed=3).requires_grad_()
    tm = (torch.rand(2, 3, 2, 2, dtype=torch.float64) > 0.5).double()
    assert torch.autograd.gradcheck(lambda a: dice_loss(a, tm, 2.0, loss_on_multimask=True), (xm,))
    assert torch.autograd.gradcheck(lambda a: sigmoid_focal_loss(a, tm, 2.0, loss_on_multimask=True), (xm,))
    pi = torch.rand(2, 3, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: iou_loss(xm.detach(), tm, p, 2.0, loss_on_multimask=True), (pi,))
    assert torch.autograd.gradcheck(lambda p: iou_loss(xm.detach(), tm, p, 2.0, use_l1_loss=True), (pi + 0.01,))
    tq = torch.rand(4, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: batch_sigmoid_ce_loss(a, tq), (x,))
    assert torch.autograd.gradcheck(lambda a: batch_dice_loss(a, tq), (x,))


@pytest.mark.parametrize("bool_targets", [False, True])
@pytest.mark.parametrize(
    "K,h,H,alpha,gamma", [(5, 6, 24, 0.25, 2.0), (3, 8, 8, 0.25, 2.0), (4, 5, 17, -1.0, 0.0), (9, 7, 30, 0.4, 1.5)]
)
def test_upsampled_focal_dice_equals_interpolate_then_losses(K, h, H, alpha, gamma, bool_targets):
    """Chunked upsampled focal + dice == interpolate, then sigmoid_focal_loss / dice_loss,
    in value and gradient (upsampled or already full size; with and without alpha; float
    targets through the general formulas, bool targets through the binary ones)."""
    g = torch.Generator().manual_seed(K)
    src = torch.randn(K, h, h, dtype=torch.float64, generator=g, requires_grad=True)
    tgt = (torch.rand(K, H, H, dtype=torch.float64, generator=g) > 0.5).double()
    a, b = upsampled_focal_dice_loss(src, tgt.bool() if bool_targets else tgt, 3.0, alpha, gamma)
    ga = torch.autograd.grad(2 * a + 7 * b, src)[0]
    up = src if h == H else F.interpolate(src[:, None], size=(H, H), mode="bilinear", align_corners=False)[:, 0]
    ra = sigmoid_focal_loss(up.flatten(1), tgt.flatten(1), 3.0, alpha, gamma)
    rb = dice_loss(up.flatten(1), tgt.flatten(1), 3.0)
    gr = torch.autograd.grad(2 * ra + 7 * rb, src)[0]
    torch.testing.assert_close(a, ra, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(b, rb, rtol=1e-12, atol=1e-14)
    assert gr.abs().max() > 1e-4
    torch.testing.assert_close(ga, gr, rtol=1e-9, atol=1e-12)


def test_upsampled_focal_dice_gradcheck_and_shapes():
    g = torch.Generator().manual_seed(0)
    src = torch.randn(2, 4, 4, dtype=torch.float64, generator=g, requires_grad=True)
    tgt = torch.rand(2, 9, 9, dtype=torch.float64, generator=g)  # soft targets too
    assert torch.autograd.gradcheck(
        lambda s: upsampled_focal_dice_loss(s, tgt, 2.0, max_upsampled_fraction=0.5), (src,)
    )
    with pytest.raises(ValueError, match="src"):
        upsampled_focal_dice_loss(src[0], tgt, 2.0)


def test_upsampled_focal_dice_gathers_target_rows():
    g = torch.Generator().manual_seed(1)
    src = torch.randn(3, 5, 5, generator=g, requires_grad=True)
    pool = torch.rand(6, 20, 20, generator=g) > 0.5  # bool targets, converted chunk by chunk
    rows = torch.tensor([4, 0, 4])
    a = upsampled_focal_dice_loss(src, pool, 2.0, tgt_rows=rows, max_upsampled_fraction=0.4)
    b = upsampled_focal_dice_loss(src, pool[rows].float(), 2.0)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    ga = torch.autograd.grad(sum(a), src)[0]
    gb = torch.autograd.grad(sum(b), src)[0]
    torch.testing.assert_close(ga, gb)
    with pytest.raises(ValueError, match="tgt_rows"):
        upsampled_focal_dice_loss(src, pool, 2.0, tgt_rows=rows[:2])
