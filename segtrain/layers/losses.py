"""Functional mask losses and pairwise matching costs (LOSSES.md, "Functional pieces").

Notation: ``x`` logits, ``p = sigmoid(x)``, ``t`` targets in [0, 1], ``n`` the
normalizer (number of objects, already clamped to >= 1 by the caller). "Per mask"
means over the flattened spatial (or sampled-point) axis ``P`` of one mask.

Every binary cross-entropy goes through the logits form
(``binary_cross_entropy_with_logits`` / ``softplus``), never ``log(sigmoid(x))``,
so large logits do not produce ``inf`` or ``nan``.
"""
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "sigmoid_ce_loss",
    "dice_loss",
    "sigmoid_focal_loss",
    "iou_loss",
    "batch_sigmoid_ce_loss",
    "batch_dice_loss",
    "batch_sigmoid_focal_class_cost",
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
            raise ValueError(f"dice_loss(loss_on_multimask=True) expects [N, M, H, W] inputs, got shape {tuple(inputs.shape)}")
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
                f"sigmoid_focal_loss(loss_on_multimask=True) expects [N, M, H, W] inputs, got shape {tuple(inputs.shape)}"
            )
        return loss.flatten(2).mean(-1) / num_masks
    return loss.flatten(1).mean(1).sum() / num_masks


def iou_loss(
    inputs: Tensor,
    targets: Tensor,
    pred_ious: Tensor,
    num_masks: Number,
    loss_on_multimask: bool = False,
    use_l1_loss: bool = False,
) -> Tensor:
    """Regression of the predicted IoU onto the actual IoU of ``(x > 0)`` vs ``(t > 0)``.

    inputs: [N, M, H, W] (multimask) or [N, *spatial] logits; targets: same shape;
    pred_ious: [N, M] (multimask) or [N]; the spatial axes are the ones after
    ``pred_ious``'s. ``iou = |A & B| / max(|A | B|, 1)``; loss ``(pred - iou)**2``
    (or ``|pred - iou|`` with ``use_l1_loss``). Returns [N, M] / n with
    ``loss_on_multimask``, else the sum / n. The gradient flows into ``pred_ious`` only.
    """
    if loss_on_multimask and inputs.dim() != 4:
        raise ValueError(f"iou_loss(loss_on_multimask=True) expects [N, M, H, W] inputs, got shape {tuple(inputs.shape)}")
    start = pred_ious.dim()
    pred_mask = inputs.flatten(start) > 0
    gt_mask = targets.flatten(start) > 0
    area_i = (pred_mask & gt_mask).sum(-1).to(pred_ious.dtype if pred_ious.is_floating_point() else torch.float32)
    area_u = (pred_mask | gt_mask).sum(-1).to(area_i.dtype)
    actual_ious = area_i / area_u.clamp(min=1.0)
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
    neg = -(1 - alpha) * (p ** gamma) * F.logsigmoid(-logits)
    pos = -alpha * ((1 - p) ** gamma) * F.logsigmoid(logits)
    return pos - neg
