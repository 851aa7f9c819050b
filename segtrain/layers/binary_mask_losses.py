"""Focal, dice and IoU of mask logits against BINARY targets, in one chunked pass with an
analytic gradient (the formulas of docs/losses.md, "Functional pieces").

With ``t`` in {0, 1} the focal loss needs no ``p_t``: ``1 - p_t = |p - t|`` and
``bce(x, t) = softplus(sgn * x)`` with ``sgn = 1 - 2t``, so a pixel costs a sigmoid, a
softplus and a few products instead of the general formula's ~20 passes (and ~20 more in
autograd's backward). Sums run over chunks of pixels that stay in the core's cache. The
multimask backward (SAM 2) recomputes the pixel terms, only for the (object, mask) rows whose
losses received a gradient (SAM 2 back-propagates one mask of M per object); the upsampled
form (SAM 3) computes its gradient's low-resolution pieces in the forward, with the bilinear
adjoint of :mod:`~segtrain.layers.bilinear_upsampling`. The gradients:

* focal ``a * ce * q**gamma`` (``q = |p - t|``, ``a = alpha*t + (1-alpha)*(1-t)``):
  ``d/dx = a * sgn * q**gamma * (q + gamma * ce * (1 - q))``;
* dice ``1 - (2 I + 1) / D`` (``I = sum p t``, ``D = sum p + sum t + 1``):
  ``d/dx = (N / D**2 - 2 t / D) * p (1 - p)`` with ``N = 2 I + 1``, and ``p (1 - p) = q (1 - q)``.

Values equal :func:`~segtrain.layers.losses.sigmoid_focal_loss`, ``dice_loss`` and
``mask_ious`` (multimask form) to float round-off; the IoU counts are exact.
"""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .bilinear_upsampling import add_row_adjoint, upsample_adjoint, upsample_bilinear

__all__ = [
    "BinaryTargets",
    "is_binary",
    "multimask_focal_dice_iou",
    "upsampled_binary_focal_dice_loss",
]

#: pixels x rows per chunk with one torch thread: a few [rows, chunk] float temporaries fit a
#: core's L2 cache
CHUNK_ELEMENTS = 1 << 16
#: the same with several threads: every op is an OpenMP parallel region, which stalls whenever
#: another process holds a core (on a shared 2-core machine 64k-element chunks made a SAM 2
#: step 2x slower than the plain formulas, 4M-element ones 1.5x slower than 16M), so far
#: fewer, larger ops
CHUNK_ELEMENTS_THREADED = 1 << 24


def is_binary(t: Tensor) -> bool:
    """Whether every value of ``t`` is 0 or 1 (bool tensors always are)."""
    if t.dtype == torch.bool:
        return True
    return bool(torch.equal(t, (t > 0.5).to(t.dtype)))


class BinaryTargets:
    """Per-pixel constants of binary targets, computed once and shared by every prediction
    against them. t: [N, P] in {0, 1}. Holds ``t`` (float, the predictions' dtype), ``pos``
    (bool), ``sgn = 1 - 2t``, ``sa = a * sgn`` (``a = alpha*t + (1-alpha)*(1-t)``, or 1 when
    ``alpha < 0``), all [N, P], and ``t_sum`` [N]."""

    def __init__(self, t: Tensor, alpha: float, dtype: torch.dtype = torch.float32, pos: Optional[Tensor] = None):
        self.pos = pos if pos is not None else (t > 0.5 if t.dtype != torch.bool else t)
        self.t = self.pos.to(dtype)
        self.sgn = torch.add(torch.ones((), dtype=dtype, device=t.device), self.t, alpha=-2.0)
        self.a = (1 - alpha) + (2 * alpha - 1) * self.t if alpha >= 0 else None
        self.sa = self.sgn * self.a if self.a is not None else self.sgn
        self.t_sum = self.t.sum(-1)
        self.alpha = float(alpha)

    @classmethod
    def of(cls, t: Tensor, alpha: float, dtype: torch.dtype = torch.float32) -> Optional["BinaryTargets"]:
        """The constants of ``t`` [N, P], or None when some value of ``t`` is not 0 or 1 (the
        check costs one comparison with the float copy the constants need anyway)."""
        obj = cls(t, alpha, dtype)
        if t.dtype != torch.bool and not torch.equal(t.to(dtype), obj.t):
            return None
        return obj


def _pixel_terms(x: Tensor, t: Tensor, sgn: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """p = sigmoid(x), q = |p - t| (= 1 - p_t) and ce = softplus(sgn * x) (= bce(x, t))."""
    p = torch.sigmoid(x)
    q = torch.sub(p, t).abs_()
    ce = F.softplus(x * sgn)
    return p, q, ce


def _focal_dice_grad(
    x: Tensor, t: Tensor, sgn: Tensor, sa: Tensor, gamma: float, cf: Tensor, dice_a: Tensor, dice_b: Tensor
) -> Tensor:
    """cf * d(focal)/dx + (dice_a + dice_b * t) * p (1 - p), elementwise over [R, c] (a new
    contiguous tensor; cf, dice_a, dice_b: [R, 1] per-row factors; sa = a * sgn; module docstring)."""
    _, q, ce = _pixel_terms(x, t, sgn)
    qq = q * q
    u = torch.sub(q, qq)  # q (1 - q) = p (1 - p)
    if gamma == 2:
        fg = torch.addcmul(qq, ce, u, value=2.0).mul_(q)  # q^2 (q + 2 ce (1 - q))
    else:
        fg = torch.addcmul(q, ce, torch.sub(1, q), value=gamma).mul_(q.pow(gamma))
    fg.mul_(sa).mul_(cf)
    return torch.addcmul(dice_a, t, dice_b).mul_(u).add_(fg)


def _chunk_elements() -> int:
    return CHUNK_ELEMENTS if torch.get_num_threads() == 1 else CHUNK_ELEMENTS_THREADED


def _rows_per_chunk(rows: int, P: int) -> int:
    return max(1, min(P, _chunk_elements() // max(rows, 1)))


class _MultimaskFocalDiceIoU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, targets: BinaryTargets, gamma: float, num_objects: float):
        N, M, P = x.shape
        c = _rows_per_chunk(N * M, P)
        focal = x.new_zeros(N, M)
        inter_pt = x.new_zeros(N, M)
        p_sum = x.new_zeros(N, M)
        area_pred = torch.zeros(N, M, dtype=torch.int64, device=x.device)
        area_inter = torch.zeros(N, M, dtype=torch.int64, device=x.device)
        for lo in range(0, P, c):
            xc = x[:, :, lo : lo + c]
            tc = targets.t[:, None, lo : lo + c]
            p, q, ce = _pixel_terms(xc, tc, targets.sgn[:, None, lo : lo + c])
            w = q.pow_(gamma) if gamma != 2 else q.mul_(q)
            if targets.a is not None:
                w.mul_(targets.a[:, None, lo : lo + c])
            focal += w.mul_(ce).sum(-1)
            inter_pt += torch.matmul(p, tc.transpose(-1, -2)).squeeze(-1)  # [N, M, c] @ [N, c, 1]
            p_sum += p.sum(-1)
            pos = xc > 0
            area_pred += pos.sum(-1)
            area_inter += pos.logical_and_(targets.pos[:, None, lo : lo + c]).sum(-1)
        t_sum = targets.t_sum[:, None]
        numerator = 2 * inter_pt + 1
        denominator = p_sum + t_sum + 1
        dice = 1 - numerator / denominator
        union = area_pred + targets.pos.sum(-1, keepdim=True) - area_inter
        ious = area_inter.to(x.dtype) / union.to(x.dtype).clamp(min=1.0)
        ctx.save_for_backward(x, numerator, denominator)
        ctx.targets, ctx.gamma, ctx.num_objects = targets, gamma, num_objects
        ctx.mark_non_differentiable(ious)
        return focal / (P * num_objects), dice / num_objects, ious

    @staticmethod
    @once_differentiable
    def backward(ctx, g_focal: Tensor, g_dice: Tensor, _g_iou):
        x, numerator, denominator = ctx.saved_tensors
        tg, gamma, n = ctx.targets, ctx.gamma, ctx.num_objects
        N, M, P = x.shape
        g_focal = torch.zeros_like(numerator) if g_focal is None else g_focal
        g_dice = torch.zeros_like(numerator) if g_dice is None else g_dice
        if x.device.type == "cpu":  # only the rows that receive a gradient (no sync on the CPU)
            live = (g_focal != 0) | (g_dice != 0)
            obj, msk = torch.nonzero(live, as_tuple=True)
        else:
            live = None
            obj = torch.arange(N, device=x.device).repeat_interleave(M)
            msk = torch.arange(M, device=x.device).repeat(N)
        # every row is written once: computed, or zero when it receives no gradient
        grad = torch.empty_like(x)
        if live is not None and not bool(live.all()):
            grad[~live] = 0
        if obj.numel() == 0:
            return grad, None, None, None
        R = obj.numel()
        g_f, g_d = g_focal[obj, msk][:, None], g_dice[obj, msk][:, None]
        d = denominator[obj, msk][:, None]
        cf = g_f / (P * n)  # focal: mean over P, / n
        dice_a = (g_d / n) * numerator[obj, msk][:, None] / (d * d)
        dice_b = (-2.0 / n) * g_d / d
        # each object's per-pixel target terms, gathered once unless the rows are the objects
        same = live is not None and R == N and bool((obj == torch.arange(N)).all())
        t, sgn, sa = (tg.t, tg.sgn, tg.sa) if same else (tg.t[obj], tg.sgn[obj], tg.sa[obj])
        xr = x[obj, msk]  # [R, P]
        c = _rows_per_chunk(R, P)
        for lo in range(0, P, c):
            sl = slice(lo, lo + c)
            g = _focal_dice_grad(xr[:, sl], t[:, sl], sgn[:, sl], sa[:, sl], gamma, cf, dice_a, dice_b)
            grad[:, :, sl][obj, msk] = g
        return grad, None, None, None


def multimask_focal_dice_iou(
    x: Tensor, targets: BinaryTargets, num_objects: float, gamma: float = 2.0
) -> Tuple[Tensor, Tensor, Tensor]:
    """Multimask focal, dice and IoU of ``x`` [N, M, H, W] (or [N, M, P]) logits against the
    binary targets [N, P] of each object (shared by its M masks).

    Returns ``focal`` [N, M] (mean over P, / num_objects), ``dice`` [N, M] (/ num_objects),
    both differentiable in ``x``, and ``ious`` [N, M] of ``x > 0`` vs ``t > 0`` (no gradient),
    equal to ``sigmoid_focal_loss(..., loss_on_multimask=True)`` with ``alpha =
    targets.alpha``, ``dice_loss(..., loss_on_multimask=True)`` and ``mask_ious``.
    """
    N, M = x.shape[:2]
    xf = x.reshape(N, M, math.prod(x.shape[2:]))
    if tuple(targets.t.shape) != (N, xf.shape[-1]):
        raise ValueError(
            f"multimask_focal_dice_iou: logits {tuple(x.shape)} do not fit targets {tuple(targets.t.shape)} "
            "(expected [N, M, H, W] and [N, H*W])"
        )
    return _MultimaskFocalDiceIoU.apply(xf.contiguous(), targets, float(gamma), float(num_objects))


def _target_terms(tb: Tensor, alpha: float, dtype: torch.dtype) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """t (float), sgn = 1 - 2t and a = alpha*t + (1-alpha)*(1-t) (None when alpha < 0) of bool tb."""
    t = tb.to(dtype)
    sgn = torch.add(torch.ones((), dtype=dtype, device=t.device), t, alpha=-2.0)
    a = (
        torch.add(torch.full((), 1 - alpha, dtype=dtype, device=t.device), t, alpha=2 * alpha - 1)
        if alpha >= 0
        else None
    )
    return t, sgn, a


class _UpsampledBinaryFocalDice(torch.autograd.Function):
    """The gradient is computed in the forward, while the upsampled logits of a chunk exist:
    per mask, the low-resolution adjoints of the three images ``a sgn q**g (q + g ce (1-q))``
    (focal), ``u = p (1 - p)`` and ``t u`` (dice), so that the backward only combines them with
    the scalars it receives (no second upsampling, sigmoid or softplus). With an integer
    factor the row half of each adjoint is taken band by band while the band is in the cache.
    Chunks are ``chunk`` masks at any thread count: at 2 threads on a quiet machine, 16-mask
    chunks at 1008 x 1008 (out of cache) made SAM 3's loss wrapper 1.3x slower than 1-3-mask
    ones. Two threads forced on a busy machine stall more on the smaller operations (1.6-2.5x
    the official wrapper's time beside a test run, 0.64x with 16-mask chunks); there the
    adaptive thread count (``segtrain.utils.cpu_share``) runs one thread."""

    @staticmethod
    def forward(ctx, src, tgt, rows, num_masks, alpha, gamma, chunk):
        K, h, w = src.shape
        size = tuple(tgt.shape[-2:])
        H, W = size
        P = H * W
        want_grad = src.requires_grad
        # integer factors: the row adjoint is taken band by band while a band's gradient images
        # are in the cache (bands of whole multiples of the factor), only the column adjoint at
        # the end of a chunk; otherwise the [3, c, H, W] images go through upsample_adjoint
        s = H // h if H % h == 0 and W % w == 0 and (H, W) != (h, w) else 0
        sums = src.new_zeros(4, K)  # focal sum, sum p t, sum p, sum t
        images = src.new_empty(3, K, h, w) if want_grad else None  # adjoints of focal grad, u, t u
        for lo in range(0, K, chunk):
            x = upsample_bilinear(src[lo : lo + chunk], size)  # [c, H, W]
            tb = tgt[rows[lo : lo + chunk]]
            c = x.shape[0]
            if want_grad:
                # rows adjoint [3, c, h, W] (integer factors) or the full images [3, c, H, W]
                acc = x.new_zeros(3, c, h, W) if s else x.new_empty(3, c, H, W)
            # mask by mask in bands of rows (every slice contiguous), or the whole chunk at once
            step = _chunk_elements()
            if step >= c * P:
                pieces = [(slice(None), 0, H)]
            else:
                band = max(1, step // W)
                band = max(s, band - band % s) if s else band
                pieces = [(slice(r, r + 1), y, min(H, y + band)) for r in range(c) for y in range(0, H, band)]
            for r, y0, y1 in pieces:
                xr = x[r, y0:y1].flatten(1)  # [c', rows * W]
                t, sgn, a = _target_terms(tb[r, y0:y1].flatten(1), alpha, x.dtype)
                p, q, ce = _pixel_terms(xr, t, sgn)
                qg = q * q if gamma == 2 else q.pow(gamma)
                wq = qg * a if a is not None else qg
                part = torch.stack([(wq * ce).sum(-1), (p * t).sum(-1), p.sum(-1), t.sum(-1)])
                sums[:, lo : lo + c][:, r] += part
                if want_grad:
                    g = x.new_empty(3, *xr.shape) if s else acc[:, r, y0:y1].view(3, *xr.shape)
                    torch.sub(q, qg if gamma == 2 else q * q, out=g[1])  # q (1 - q) = p (1 - p)
                    torch.mul(t, g[1], out=g[2])
                    # a sgn q^g (q + g ce (1 - q)) = (a sgn) q^g q + g (a sgn) q^g ce (1 - q)
                    torch.addcmul(q, ce, torch.sub(1, q), value=gamma, out=g[0]).mul_(wq).mul_(sgn)
                    if s:
                        add_row_adjoint(acc[:, r], g.view(3, -1, y1 - y0, W), y0 // s, s)
            if want_grad:
                if s:  # the column adjoint of the rows adjoint: [3c, h, W] -> [3c, h, w]
                    cols = add_row_adjoint(x.new_zeros(3 * c, w, h), acc.view(3 * c, h, W).transpose(-1, -2), 0, W // w)
                    images[:, lo : lo + c] = cols.transpose(-1, -2).view(3, c, h, w)
                else:
                    images[:, lo : lo + c] = upsample_adjoint(acc.view(3 * c, H, W), (h, w)).view(3, c, h, w)
            del x, tb
        focal_sum, inter, psum, tsum = sums.unbind(0)
        numerator = 2 * inter + 1
        denominator = psum + tsum + 1
        n = torch.as_tensor(num_masks, dtype=src.dtype, device=src.device)
        ctx.save_for_backward(images, numerator, denominator, n)
        ctx.P = P
        return focal_sum.sum() / (P * n), (1 - numerator / denominator).sum() / n

    @staticmethod
    @once_differentiable
    def backward(ctx, g_mask, g_dice):
        images, numerator, denominator, n = ctx.saved_tensors
        focal, u, tu = images.unbind(0)
        gd = g_dice / n
        # d dice_i / dx = (N_i / D_i^2 - 2 t / D_i) u
        dice_a = (gd * numerator / (denominator * denominator))[:, None, None]
        dice_b = (-2.0 * gd / denominator)[:, None, None]
        grad = focal * (g_mask / (ctx.P * n))
        grad.addcmul_(u, dice_a).addcmul_(tu, dice_b)
        return grad, None, None, None, None, None, None


def upsampled_binary_focal_dice_loss(
    src: Tensor, tgt: Tensor, rows: Tensor, num_masks, alpha: float, gamma: float, chunk: int
) -> Tuple[Tensor, Tensor]:
    """``sigmoid_focal_loss`` and ``dice_loss`` of ``src`` [K, h, w] logits bilinearly upsampled
    to the size of the bool targets ``tgt`` [T, H, W] (rows ``rows`` [K] int64), ``chunk`` masks
    at a time (the upsampled logits are never kept: the gradient's low-resolution pieces are
    computed in the forward, three [K, h, w] tensors). Returns the two
    scalars (focal: mean over H*W, summed over masks, / num_masks; dice: summed, / num_masks)."""
    if tgt.dtype != torch.bool:
        raise ValueError(f"upsampled_binary_focal_dice_loss expects bool targets, got {tgt.dtype}")
    return _UpsampledBinaryFocalDice.apply(src, tgt, rows, num_masks, float(alpha), float(gamma), int(chunk))
