"""Bilinear upsampling of mask logits (``align_corners=False``) and its adjoint, the gradient of
the upsampling, written out so that the mask losses can form it without autograd keeping the
upsampled logits (``upsample_bilinear2d_backward`` is also 4-5x slower on the CPU at
252 -> 1008).

For an integer factor ``s`` along an axis, output row ``s*i + k`` reads input rows ``i`` and
``i - 1`` (weights ``1 + f_k`` and ``-f_k``) when ``f_k = (k + 0.5) / s - 0.5 < 0``, else rows ``i``
and ``i + 1`` (``1 - f_k`` and ``f_k``), with the sources clamped at the borders. The adjoint is
then ``2 s`` scaled adds of [..., n, L] slices: no temporaries and no scatter, and it can be
taken band by band of output rows (:func:`add_row_adjoint`) while a band is in the cache.
"""

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["add_row_adjoint", "upsample_adjoint", "upsample_bilinear"]


def upsample_bilinear(x: Tensor, size: Tuple[int, int]) -> Tensor:
    """[c, h, w] -> [c, H, W] bilinear (align_corners=False), or x itself when already H x W."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def _bilinear_taps(n_in: int, n_out: int, dtype: torch.dtype, device) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Source rows and weights of bilinear resizing n_in -> n_out (``align_corners=False``, as
    PyTorch computes them): output i = l0[i] * input[i0[i]] + l1[i] * input[i1[i]]."""
    scale = torch.tensor(n_in, dtype=dtype) / n_out  # in the data's precision, as PyTorch's kernel
    src = ((torch.arange(n_out, dtype=dtype, device=device) + 0.5) * scale.to(device) - 0.5).clamp_(min=0)
    i0 = src.floor().long().clamp_(max=n_in - 1)
    i1 = (i0 + 1).clamp_(max=n_in - 1)
    l1 = (src - i0).clamp_(0, 1)
    return i0, i1, 1 - l1, l1


def add_row_adjoint(out: Tensor, g: Tensor, i0: int, s: int) -> Tensor:
    """Adds into ``out`` [..., n, L] the adjoint of upsampling along dim -2 by the integer
    factor ``s``, for the band ``g`` [..., m*s, L] of the upsampled rows ``s*i0 .. s*(i0+m) - 1``
    (the whole gradient when ``i0 = 0`` and ``m = n``). Returns ``out``."""
    n, m = out.shape[-2], g.shape[-2] // s
    if m * s != g.shape[-2] or i0 < 0 or i0 + m > n:
        raise ValueError(f"add_row_adjoint: a band of {g.shape[-2]} rows at {i0} does not fit {n} rows x {s}")
    gv = g.unflatten(-2, (m, s))  # [..., m, s, L]
    band = out[..., i0 : i0 + m, :]
    for k in range(s):
        f = (k + 0.5) / s - 0.5
        plane = gv[..., k, :]  # [..., m, L]: upsampled rows s*(i0 + j) + k
        band.add_(plane, alpha=1 - abs(f))
        if f < 0:  # also row i - 1; row 0 keeps it (clamped source)
            if i0 > 0:
                out[..., i0 - 1 : i0 + m - 1, :].add_(plane, alpha=-f)
            else:
                out[..., : m - 1, :].add_(plane[..., 1:, :], alpha=-f)
                out[..., 0, :].add_(plane[..., 0, :], alpha=-f)
        elif f > 0:  # also row i + 1; the last row keeps it
            if i0 + m < n:
                out[..., i0 + 1 : i0 + m + 1, :].add_(plane, alpha=f)
            else:
                out[..., i0 + 1 :, :].add_(plane[..., :-1, :], alpha=f)
                out[..., n - 1, :].add_(plane[..., -1, :], alpha=f)
    return out


def upsample_adjoint(grad: Tensor, in_size: Tuple[int, int]) -> Tensor:
    """Adjoint of bilinear upsampling [c, h, w] -> [c, H, W] (``align_corners=False``): the
    gradient [c, H, W] -> [c, h, w], separably, equal to ``upsample_bilinear2d_backward`` to
    float round-off: scaled adds for integer factors, scatter-adds otherwise."""
    c, H, W = grad.shape
    h, w = int(in_size[0]), int(in_size[1])
    if (H, W) == (h, w):
        return grad
    if H % h == 0 and W % w == 0:
        rows = add_row_adjoint(grad.new_zeros(c, h, W), grad, 0, H // h)  # [c, h, W]
        cols = add_row_adjoint(grad.new_zeros(c, w, h), rows.transpose(-1, -2), 0, W // w)
        return cols.transpose(-1, -2)
    y0, y1, wy0, wy1 = _bilinear_taps(h, H, grad.dtype, grad.device)
    x0, x1, wx0, wx1 = _bilinear_taps(w, W, grad.dtype, grad.device)
    # the row weights as full [H, W] planes: a product broadcast along the last axis is
    # vectorized, one broadcast from a [H, 1] column is not (3-4x slower on the CPU)
    wy0, wy1 = (v[:, None].expand(H, W).contiguous() for v in (wy0, wy1))
    rows = grad.new_zeros(c, h, W)
    rows.index_add_(1, y0, grad * wy0).index_add_(1, y1, grad * wy1)
    out = grad.new_zeros(c, h, w)
    return out.index_add_(2, x0, rows * wx0).index_add_(2, x1, rows * wx1)
