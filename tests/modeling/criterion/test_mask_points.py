"""SetCriterion's point loss (per-mask BCE + dice with a closed-form backward) against the
functional losses, in value and gradient."""

import torch

from segtrain.layers.losses import dice_loss, sigmoid_ce_loss
from segtrain.modeling.criterion.mask_points import _PointCeDice


def test_point_ce_dice_equals_functional_losses_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(5, 37, generator=g, dtype=torch.float64)).requires_grad_()
    t = torch.rand(5, 37, generator=g, dtype=torch.float64)  # soft labels (bilinear GT samples)
    t[1] = 0
    bce, dice = _PointCeDice.apply(x, t)
    for r in range(5):
        torch.testing.assert_close(bce[r], sigmoid_ce_loss(x[r : r + 1], t[r : r + 1], 1.0), rtol=0, atol=0)
        torch.testing.assert_close(dice[r], dice_loss(x[r : r + 1], t[r : r + 1], 1.0), rtol=1e-15, atol=1e-15)
    w1, w2 = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    g_fused = torch.autograd.grad((bce * w1).sum() + (dice * w2).sum(), x)[0]
    ref = sum(w1[r] * sigmoid_ce_loss(x[r : r + 1], t[r : r + 1], 1.0) for r in range(5)) + sum(
        w2[r] * dice_loss(x[r : r + 1], t[r : r + 1], 1.0) for r in range(5)
    )
    g_ref = torch.autograd.grad(ref, x)[0]
    assert g_ref.abs().max() > 1e-3
    torch.testing.assert_close(g_fused, g_ref, rtol=1e-12, atol=1e-14)
    small = x.detach()[:, :9].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: _PointCeDice.apply(a, t[:, :9]), (small,))
