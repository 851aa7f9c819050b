"""Functional mask losses and pairwise matching costs (docs/losses.md, "Functional pieces").

Notation: ``x`` logits, ``p = sigmoid(x)``, ``t`` targets in [0, 1], ``n`` the
normalizer (number of objects, already clamped to >= 1 by the caller). "Per mask"
means over the flattened spatial (or sampled-point) axis ``P`` of one mask.

Every binary cross-entropy goes through the logits form
(``binary_cross_entropy_with_logits`` / ``softplus``), never ``log(sigmoid(x))``,
so large logits do not produce ``inf`` or ``nan``.
"""

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .bilinear_upsampling import upsample_adjoint, upsample_bilinear
from .binary_mask_losses import upsampled_binary_focal_dice_loss

__all__ = [
    "sigmoid_ce_loss",
    "dice_loss",
    "sigmoid_focal_loss",
    "iou_loss",
    "mask_ious",
    "batch_sigmoid_ce_loss",
    "batch_dice_loss",
    "batch_sigmoid_focal_class_cost",
    "upsampled_focal_dice_loss",
]

Number = Union[float, int, Tensor]


def sigmoid_ce_loss(inputs: Tensor, targets: Tensor, num_masks: Number) -> Tensor:
    """Binary cross-entropy with logits, mean per mask, summed over masks, divided by ``n``.

    inputs: [N, P] (or [N, *spatial], flattened from dim 1) logits; targets: same shape, in [0, 1].
    Returns a scalar: ``sum_i mean_P bce(x_i, t_i) / n`` with
    ``bce(x, t) = max(x, 0) - x*t + log(1 + exp(-|x|))``.
    """
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.flatten(1).mean(1).sum() / num_masks


def dice_loss(inputs: Tensor, targets: Tensor, num_masks: Number, loss_on_multimask: bool = False) -> Tensor:
    """Dice loss per mask: ``1 - (2*sum(p*t) + 1) / (sum(p) + sum(t) + 1)``.

    inputs: [N, P] (or [N, *spatial]) logits; targets: same shape, in [0, 1].
    Returns the scalar ``sum over masks / n``. With ``loss_on_multimask=True``,
    inputs and targets are [N, M, H, W] and the result is the [N, M] per-(object,
    mask) loss divided by ``n`` (not summed).
    """
    p = inputs.sigmoid()
    if loss_on_multimask:
        if inputs.dim() != 4:
            raise ValueError(
                f"dice_loss(loss_on_multimask=True) expects [N, M, H, W] inputs, got shape {tuple(inputs.shape)}"
            )
        p, t = p.flatten(2), targets.flatten(2)
    else:
        p, t = p.flatten(1), targets.flatten(1)
    numerator = 2 * (p * t).sum(-1)
    denominator = p.sum(-1) + t.sum(-1)
    loss = 1 - (numerator + 1) / (denominator + 1)
    if loss_on_multimask:
        return loss / num_masks
    return loss.sum() / num_masks


def sigmoid_focal_loss(
    inputs: Tensor,
    targets: Tensor,
    num_masks: Number,
    alpha: float = 0.25,
    gamma: float = 2,
    loss_on_multimask: bool = False,
) -> Tensor:
    """Focal loss (RetinaNet): ``bce(x, t) * (1 - p_t)**gamma``, ``p_t = p*t + (1-p)*(1-t)``;
    if ``alpha >= 0`` also times ``alpha*t + (1-alpha)*(1-t)``.

    inputs: [N, P] (or [N, *spatial]) logits; targets: same shape, in [0, 1].
    Returns ``sum over masks of (mean per mask) / n``; with ``loss_on_multimask=True``
    the inputs are [N, M, H, W] and the result is [N, M] (mean over H*W) / n.
    """
    p = inputs.sigmoid()
    ce = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    if loss_on_multimask:
        if loss.dim() != 4:
            raise ValueError(
                "sigmoid_focal_loss(loss_on_multimask=True) expects [N, M, H, W] inputs, "
                f"got shape {tuple(inputs.shape)}"
            )
        return loss.flatten(2).mean(-1) / num_masks
    return loss.flatten(1).mean(1).sum() / num_masks


def mask_ious(inputs: Tensor, targets: Tensor, start_dim: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """IoU of ``(inputs > 0)`` vs ``(targets > 0)`` over the axes from ``start_dim`` on:
    ``|A & B| / max(|A | B|, 1)`` (0 when both are empty). inputs/targets [N, M, H, W] with
    ``start_dim`` 2 give [N, M]. No gradient (a comparison of binarised masks)."""
    pred_mask = inputs.flatten(start_dim) > 0
    gt_mask = targets.flatten(start_dim) > 0
    area_i = (pred_mask & gt_mask).sum(-1).to(dtype)
    area_u = (pred_mask | gt_mask).sum(-1).to(dtype)
    return area_i / area_u.clamp(min=1.0)


def iou_loss(
    inputs: Tensor,
    targets: Tensor,
    pred_ious: Tensor,
    num_masks: Number,
    loss_on_multimask: bool = False,
    use_l1_loss: bool = False,
    actual_ious: Optional[Tensor] = None,
) -> Tensor:
    """Regression of the predicted IoU onto the actual IoU of ``(x > 0)`` vs ``(t > 0)``
    (``actual_ious``, shaped like ``pred_ious``, when the caller has it from :func:`mask_ious`).

    inputs: [N, M, H, W] (multimask) or [N, *spatial] logits; targets: same shape;
    pred_ious: [N, M] (multimask) or [N]; the spatial axes are the ones after
    ``pred_ious``'s. ``iou = |A & B| / max(|A | B|, 1)``; loss ``(pred - iou)**2``
    (or ``|pred - iou|`` with ``use_l1_loss``). Returns [N, M] / n with
    ``loss_on_multimask``, else the sum / n. The gradient flows into ``pred_ious`` only.
    """
    if loss_on_multimask and inputs.dim() != 4:
        raise ValueError(
            f"iou_loss(loss_on_multimask=True) expects [N, M, H, W] inputs, got shape {tuple(inputs.shape)}"
        )
    if actual_ious is None:
        actual_ious = mask_ious(
            inputs, targets, pred_ious.dim(), pred_ious.dtype if pred_ious.is_floating_point() else torch.float32
        )
    if use_l1_loss:
        loss = F.l1_loss(pred_ious, actual_ious, reduction="none")
    else:
        loss = F.mse_loss(pred_ious, actual_ious, reduction="none")
    if loss_on_multimask:
        return loss / num_masks
    return loss.sum() / num_masks


def batch_sigmoid_ce_loss(inputs: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy between every prediction and every target.

    inputs: [..., Nq, P] logits; targets: [..., Nt, P] in [0, 1] (same leading dims).
    Returns [..., Nq, Nt] = ``(bce(x, 1) @ t.T + bce(x, 0) @ (1 - t).T) / P`` with
    ``bce(x, 1) = softplus(-x)`` and ``bce(x, 0) = softplus(x)`` (stable for any x).

    Evaluated as ``(softplus(x).sum(-1)[:, None] - x @ t.T) / P``: the same value, since
    ``softplus(-x) - softplus(x) = -x`` exactly, with one softplus and one matmul.
    """
    hw = inputs.shape[-1]
    neg = F.softplus(inputs)
    loss = neg.sum(-1).unsqueeze(-1) - inputs @ targets.transpose(-1, -2)
    return loss / hw


def batch_dice_loss(inputs: Tensor, targets: Tensor) -> Tensor:
    """Dice cost between every prediction and every target.

    inputs: [..., Nq, P] logits; targets: [..., Nt, P] in [0, 1] (same leading dims).
    Returns [..., Nq, Nt] = ``1 - (2 * p @ t.T + 1) / (p.sum(-1)[:, None] + t.sum(-1)[None, :] + 1)``.
    """
    p = inputs.sigmoid()
    numerator = 2 * (p @ targets.transpose(-1, -2))
    denominator = p.sum(-1).unsqueeze(-1) + targets.sum(-1).unsqueeze(-2)
    return 1 - (numerator + 1) / (denominator + 1)


def batch_sigmoid_focal_class_cost(logits: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Focal classification cost of a positive match (DETR / SAM 3 matchers), elementwise.

    logits: any shape. Returns ``pos - neg`` of the same shape, with
    ``pos = -alpha * (1-p)**gamma * log(p)`` and ``neg = -(1-alpha) * p**gamma * log(1-p)``,
    the logs taken as ``logsigmoid(x)`` and ``logsigmoid(-x)`` (finite for any x).
    """
    p = logits.sigmoid()
    neg = -(1 - alpha) * (p**gamma) * F.logsigmoid(-logits)
    pos = -alpha * ((1 - p) ** gamma) * F.logsigmoid(logits)
    return pos - neg


def _focal_dice_terms(x: Tensor, t: Tensor, alpha: float, gamma: float, need_grad: bool):
    """Per-mask focal mean and dice sums of full-resolution logits x [c, P] vs t [c, P], and
    (``need_grad``) the elementwise pieces of the focal gradient. Same formulas as
    :func:`sigmoid_focal_loss` / :func:`dice_loss`."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    one_minus_pt = 1 - (p * t + (1 - p) * (1 - t))
    focal = ce * one_minus_pt**gamma
    a = alpha * t + (1 - alpha) * (1 - t) if alpha >= 0 else None
    if a is not None:
        focal = a * focal
    sums = (focal.mean(1), (p * t).sum(-1), p.sum(-1), t.sum(-1))
    if not need_grad:
        return sums, None
    return sums, (p, ce, one_minus_pt, a)


class _UpsampledFocalDice(torch.autograd.Function):
    """See :func:`upsampled_focal_dice_loss`. Saves only the low-resolution logits; the
    upsampled logits are recomputed chunk by chunk in the backward."""

    @staticmethod
    def forward(ctx, src, tgt, tgt_rows, num_masks, alpha, gamma, chunk):
        K = src.shape[0]
        size = tgt.shape[-2:]
        per_chunk = []  # (focal mean, sum p*t, sum p, sum t) per mask, for each chunk
        for lo in range(0, K, chunk):
            x = upsample_bilinear(src[lo : lo + chunk], size).flatten(1)
            t = _target_chunk(tgt, tgt_rows, lo, chunk, x.dtype)
            per_chunk.append(_focal_dice_terms(x, t, alpha, gamma, need_grad=False)[0])
            del x, t
        focal_rows, inter, psum, tsum = (torch.cat(v) for v in zip(*per_chunk))
        numerator = 2 * inter + 1
        denominator = psum + tsum + 1
        ctx.save_for_backward(src, tgt, tgt_rows, numerator, denominator, torch.as_tensor(num_masks, dtype=src.dtype))
        ctx.alpha, ctx.gamma, ctx.chunk = alpha, gamma, chunk
        loss_mask = focal_rows.sum() / num_masks
        loss_dice = (1 - numerator / denominator).sum() / num_masks
        return loss_mask, loss_dice

    @staticmethod
    @once_differentiable
    def backward(ctx, g_mask, g_dice):
        src, tgt, tgt_rows, numerator, denominator, num_masks = ctx.saved_tensors
        alpha, gamma, chunk = ctx.alpha, ctx.gamma, ctx.chunk
        K, h, w = src.shape
        size = tgt.shape[-2:]
        P = size[0] * size[1]
        grad = torch.empty_like(src)
        scale_mask = g_mask / (num_masks * P)  # focal: mean over P, sum over masks, / n
        scale_dice = g_dice / num_masks
        for lo in range(0, K, chunk):
            x = upsample_bilinear(src[lo : lo + chunk], size).flatten(1)
            t = _target_chunk(tgt, tgt_rows, lo, chunk, x.dtype)
            _, (p, ce, one_minus_pt, a) = _focal_dice_terms(x, t, alpha, gamma, need_grad=True)
            del x
            dp = p * (1 - p)  # d sigmoid / dx
            # d/dx of ce * (1 - p_t)**gamma: (p - t) (1-p_t)^g - g ce (1-p_t)^(g-1) dp (2t - 1)
            gx = (p - t) * one_minus_pt**gamma
            if gamma != 0:
                gx -= gamma * ce * one_minus_pt ** (gamma - 1) * dp * (2 * t - 1)
            del ce
            if a is not None:
                gx *= a
            gx *= scale_mask
            # dice_i = 1 - N_i / D_i, N_i = 2 sum(p t) + 1, D_i = sum(p) + sum(t) + 1
            n_i = numerator[lo : lo + chunk, None]
            d_i = denominator[lo : lo + chunk, None]
            gx -= scale_dice * (2 * t * d_i - n_i) / (d_i * d_i) * dp
            del p, dp, t, one_minus_pt, a
            grad[lo : lo + chunk] = upsample_adjoint(gx.view(-1, *size), (h, w))
        return grad, None, None, None, None, None, None


def _target_chunk(tgt: Tensor, rows: Tensor, lo: int, chunk: int, dtype) -> Tensor:
    """Targets of masks ``lo:lo+chunk`` as [c, H*W] in ``dtype`` (gathered by ``rows`` when
    it is not empty, so the caller never copies all K targets)."""
    t = tgt[rows[lo : lo + chunk]] if rows.numel() else tgt[lo : lo + chunk]
    return t.flatten(1).to(dtype)


def upsampled_focal_dice_loss(
    src: Tensor,
    tgt: Tensor,
    num_masks: Number,
    alpha: float = 0.25,
    gamma: float = 2,
    max_upsampled_fraction: float = 0.0625,
    tgt_rows: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """``sigmoid_focal_loss`` and ``dice_loss`` of low-resolution logits upsampled to the
    targets' size, without keeping the upsampled logits.

    src: [K, h, w] logits (float32/64); tgt: [K, H, W] in [0, 1] (any dtype), or with
    ``tgt_rows`` ([K] int64) a larger [T, H, W] whose rows ``tgt_rows`` are the K targets
    (gathered chunk by chunk: no [K, H, W] target copy either). Equal (to float round-off)
    to ``up = interpolate(src[:, None], (H, W), bilinear, align_corners=False)[:, 0]`` then
    ``sigmoid_focal_loss(up, tgt, num_masks, alpha, gamma)`` and ``dice_loss(up, tgt,
    num_masks)``, in value and in gradient. Autograd through that composition keeps about
    eight [K, H, W] tensors (the upsampled logits, sigmoid, BCE, p_t, ...); here the masks
    go through in chunks of ``ceil(max_upsampled_fraction * K)``, forward and again in the
    backward (recomputing the upsampling); the formulas need about ten chunk-sized
    temporaries at their peak, so with the default 1/16 at most about 0.6 of one [K, H, W]
    float copy exists at any time (``tools/benchmark.py masks`` measures it; the plain
    composition peaks at about 9 copies). Bool targets (SAM 3's masks) take the binary
    formulas of :func:`~segtrain.layers.binary_mask_losses.upsampled_binary_focal_dice_loss`
    (one pass, the gradient's low-resolution pieces computed in the forward; same chunks).
    Returns the two scalars.
    """
    rows = tgt_rows if tgt_rows is not None else torch.zeros(0, dtype=torch.int64, device=tgt.device)
    K = src.shape[0]
    if src.dim() != 3 or tgt.dim() != 3 or (tgt.shape[0] if tgt_rows is None else rows.numel()) != K:
        raise ValueError(
            f"upsampled_focal_dice_loss expects src [K, h, w] and tgt [K, H, W] (or tgt_rows [K]), got "
            f"shapes {tuple(src.shape)} and {tuple(tgt.shape)}"
            + ("" if tgt_rows is None else f" with {rows.numel()} tgt_rows")
        )
    chunk = max(1, math.ceil(max_upsampled_fraction * K))
    dev_type = src.device.type if src.device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    with torch.autocast(device_type=dev_type, enabled=False):  # in src's own (>= float32) precision
        if tgt.dtype == torch.bool:  # binary GT: the fused formulas of segtrain.layers.binary_mask_losses
            if not rows.numel():
                rows = torch.arange(K, device=tgt.device)
            return upsampled_binary_focal_dice_loss(src, tgt, rows.to(tgt.device), num_masks, alpha, gamma, chunk)
        return _UpsampledFocalDice.apply(src, tgt, rows.to(tgt.device), num_masks, float(alpha), float(gamma), chunk)
