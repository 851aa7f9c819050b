"""The fused binary-target mask losses equal the general formulas, in value and gradient."""

import pytest
import torch
import torch.nn.functional as F

from segtrain.layers import binary_mask_losses
from segtrain.layers.binary_mask_losses import (
    BinaryTargets,
    is_binary,
    multimask_focal_dice_iou,
    upsampled_binary_focal_dice_loss,
)
from segtrain.layers.losses import dice_loss, mask_ious, sigmoid_focal_loss


def _reference(x, t, n, alpha, gamma):
    te = t[:, None].expand_as(x)
    return (
        sigmoid_focal_loss(x, te, n, alpha, gamma, loss_on_multimask=True),
        dice_loss(x, te, n, loss_on_multimask=True),
        mask_ious(x, te, 2, x.dtype),
    )


@pytest.mark.parametrize("chunk_elements", [None, 100])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.4, 1.5)])
def test_multimask_equals_general_formulas(dtype, alpha, gamma, chunk_elements, monkeypatch):
    """One chunk, or many (chunk_elements=100: pixel chunks of 11, the last one short)."""
    if chunk_elements:
        monkeypatch.setattr(binary_mask_losses, "CHUNK_ELEMENTS", chunk_elements)
        monkeypatch.setattr(binary_mask_losses, "CHUNK_ELEMENTS_THREADED", chunk_elements)
    g = torch.Generator().manual_seed(3)
    N, M, H, W = 3, 3, 37, 41  # H*W not a multiple of the chunk
    x = (3 * torch.randn(N, M, H, W, generator=g)).to(dtype).requires_grad_()
    t = (torch.rand(N, H, W, generator=g) > 0.5).to(dtype)
    t[1] = 0  # an absent object
    got = multimask_focal_dice_iou(x, BinaryTargets(t.flatten(1), alpha, dtype), 3.0, gamma=gamma)
    ref = _reference(x, t, 3.0, alpha, gamma)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-7)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, **tol)
    # the gradient of a weighted sum; row (0, 1) gets none, as SAM 2's unselected masks
    wf = torch.randn(N, M, generator=g).to(dtype)
    wd = torch.randn(N, M, generator=g).to(dtype)
    wf[0, 1] = wd[0, 1] = 0
    g1 = torch.autograd.grad((got[0] * wf).sum() + (got[1] * wd).sum(), x)[0]
    g0 = torch.autograd.grad((ref[0] * wf).sum() + (ref[1] * wd).sum(), x)[0]
    assert g0.abs().max() > 1e-5
    torch.testing.assert_close(g1, g0, **tol)
    assert not g1[0, 1].any()


@pytest.mark.parametrize("alpha,gamma", [(0.25, 2.0), (-1.0, 0.0), (0.3, 1.5)])
def test_multimask_gradcheck(alpha, gamma):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, generator=g, requires_grad=True)
    tg = BinaryTargets((torch.rand(2, 25, generator=g) > 0.5).double(), alpha, torch.float64)
    assert torch.autograd.gradcheck(lambda a: multimask_focal_dice_iou(a, tg, 2.0, gamma=gamma)[:2], (x,))


def test_multimask_shape_error_and_is_binary():
    tg = BinaryTargets(torch.zeros(2, 16), 0.25)
    with pytest.raises(ValueError, match=r"\(2, 3, 5, 5\)"):
        multimask_focal_dice_iou(torch.zeros(2, 3, 5, 5), tg, 1.0)
    assert BinaryTargets.of(torch.tensor([[0.0, 0.5]]), 0.25) is None
    assert BinaryTargets.of(torch.tensor([[0.0, 1.0]]), 0.25).t_sum.tolist() == [1.0]
    assert is_binary(torch.tensor([0.0, 1.0, 1.0]))
    assert is_binary(torch.tensor([True, False]))
    assert not is_binary(torch.tensor([0.0, 0.5]))


@pytest.mark.parametrize("chunk_elements", [None, 150])
@pytest.mark.parametrize("low,high", [((5, 5), (20, 20)), ((4, 5), (12, 10)), ((5, 5), (17, 19)), ((6, 6), (6, 6))])
def test_upsampled_binary_focal_dice_rows_and_errors(chunk_elements, low, high, monkeypatch):
    """Whole chunks of masks, or mask by mask in bands of rows (chunk_elements=150); integer
    factors (the row adjoint taken band by band), another factor, and no upsampling."""
    if chunk_elements:
        monkeypatch.setattr(binary_mask_losses, "CHUNK_ELEMENTS", chunk_elements)
        monkeypatch.setattr(binary_mask_losses, "CHUNK_ELEMENTS_THREADED", chunk_elements)
    g = torch.Generator().manual_seed(1)
    src = torch.randn(3, *low, dtype=torch.float64, generator=g, requires_grad=True)
    pool = torch.rand(6, *high, generator=g) > 0.5
    rows = torch.tensor([4, 0, 4])
    a, b = upsampled_binary_focal_dice_loss(src, pool, rows, 2.0, 0.25, 2.0, chunk=2)
    up = F.interpolate(src[:, None], size=high, mode="bilinear", align_corners=False)[:, 0].flatten(1)
    t = pool[rows].flatten(1).double()
    torch.testing.assert_close(a, sigmoid_focal_loss(up, t, 2.0, 0.25, 2.0))
    torch.testing.assert_close(b, dice_loss(up, t, 2.0))
    assert torch.autograd.gradcheck(
        lambda s: upsampled_binary_focal_dice_loss(s, pool, rows, 2.0, 0.25, 2.0, chunk=2), (src,)
    )
    with pytest.raises(ValueError, match="bool"):
        upsampled_binary_focal_dice_loss(src, pool.float(), rows, 2.0, 0.25, 2.0, chunk=2)
