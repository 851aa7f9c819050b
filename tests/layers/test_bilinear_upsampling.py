"""The bilinear upsampling adjoint equals ATen's ``upsample_bilinear2d_backward``, whole or band
by band."""

import pytest
import torch
import torch.nn.functional as F

from segtrain.layers.bilinear_upsampling import add_row_adjoint, upsample_adjoint


@pytest.mark.parametrize(
    "h,w,H,W",
    [
        (6, 5, 24, 20),
        (4, 3, 12, 9),
        (7, 5, 14, 10),
        (5, 7, 10, 30),
        (5, 7, 17, 30),
        (8, 8, 8, 8),
        (252, 252, 1008, 1008),
    ],
)
def test_upsample_adjoint_equals_aten_backward(h, w, H, W):
    g = torch.Generator().manual_seed(h)
    grad = torch.randn(2, H, W, generator=g, dtype=torch.float64)
    ref = torch.ops.aten.upsample_bilinear2d_backward(grad[:, None], [H, W], [2, 1, h, w], False, None, None)[:, 0]
    torch.testing.assert_close(upsample_adjoint(grad, (h, w)), ref, rtol=1e-12, atol=1e-12)
    # and it is the adjoint of F.interpolate: <up(x), g> = <x, up^T(g)>
    x = torch.randn(2, h, w, generator=g, dtype=torch.float64)
    up = F.interpolate(x[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close((up * grad).sum(), (x * upsample_adjoint(grad, (h, w))).sum())


@pytest.mark.parametrize("s,band", [(4, 8), (4, 4), (3, 6), (2, 10)])
def test_row_adjoint_band_by_band_equals_whole(s, band):
    """Bands of upsampled rows (the last one shorter) add up to the adjoint of the whole, borders
    included; a band that is not a multiple of the factor is refused."""
    g = torch.Generator().manual_seed(s)
    n, L = 7, 5
    grad = torch.randn(2, n * s, L, generator=g, dtype=torch.float64)
    whole = add_row_adjoint(grad.new_zeros(2, n, L), grad, 0, s)
    banded = grad.new_zeros(2, n, L)
    for y in range(0, n * s, band):
        add_row_adjoint(banded, grad[:, y : y + band], y // s, s)
    torch.testing.assert_close(banded, whole, rtol=1e-12, atol=1e-12)
    ref = torch.ops.aten.upsample_bilinear2d_backward(grad[:, None], [n * s, L], [2, 1, n, L], False, None, None)
    torch.testing.assert_close(whole, ref[:, 0], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="does not fit"):
        add_row_adjoint(grad.new_zeros(2, n, L), grad[:, : s + 1], 0, s)
