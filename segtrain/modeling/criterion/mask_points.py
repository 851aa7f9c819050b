"""The random points and the point-sampled mask losses of ``SetCriterion``, for all
predictions at once (docs/losses.md, "Mask2Former").

A prediction's matches are M (query, GT) pairs; with L predictions the matched masks are
handled as one [L*M, ...] batch. The random numbers are drawn in the official
per-prediction loop's order (:func:`draw_in_loop_order`), so the losses equal the loop's
to float32 round-off under the same RNG state.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from segtrain.layers.point_sample import select_uncertain_grid_points
from segtrain.structures.packed_instances import PackedInstanceTargets

__all__ = ["draw_in_loop_order", "matched_mask_losses", "sample_gt_grouped"]

Pairs = Tuple[Tensor, Tensor, Tensor]


def draw_in_loop_order(
    matcher, num_predictions: int, batch_size: int, M: int, S: int, R: int, device
) -> Tuple[List[Optional[Tensor]], List[Tensor], List[Optional[Tensor]]]:
    """Every random number of one criterion call, in the per-prediction loop's order: per
    prediction, the matcher's points (``matcher.draw_point_coords``: [B, P_match, 2] or None),
    then, when M > 0, the loop's ``torch.rand(M, S, 2)`` oversampled and ``torch.rand(M, R, 2)``
    random mask points (None when R = 0). Returns (matcher points, oversampled, random), one
    entry per prediction (the last two empty when M = 0).

    Kept per prediction (a few MB each) rather than in one [L*M, S, 2] buffer: tensors above
    glibc's mmap threshold (32 MB at most) are returned to the OS when freed and page-faulted
    back in on every step (measured 50-80 ms of the step, docs/benchmarks.md).
    """
    coords: List[Optional[Tensor]] = []
    overs: List[Tensor] = []
    extras: List[Optional[Tensor]] = []
    for _ in range(num_predictions):
        coords.append(matcher.draw_point_coords(batch_size, device))
        if M > 0:
            overs.append(torch.rand(M, S, 2, device=device))
            extras.append(torch.rand(M, R, 2, device=device) if R > 0 else None)
    return coords, overs, extras


def _autocast_off(device: torch.device):
    dev_type = device.type if device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    return torch.autocast(device_type=dev_type, enabled=False)


def matched_mask_losses(
    pred_masks: Sequence[Tensor],
    packed: PackedInstanceTargets,
    pairs: Sequence[Pairs],
    num_masks: Tensor,
    overs: List[Tensor],
    extras: List[Optional[Tensor]],
    num_uncertain: int,
) -> List[Dict[str, Tensor]]:
    """``loss_mask`` (``sigmoid_ce_loss``) and ``loss_dice`` (``dice_loss``) of every prediction
    at its matches' importance-sampled points.

    pred_masks[l]: [B, Q, h, w] logits of prediction l; pairs[l]: (image [M], query [M],
    packed GT row [M]) int64; num_masks: scalar normalizer; overs[l] / extras[l]: prediction
    l's oversampled [M, S, 2] and random [M, R, 2] points in [0, 1]^2 (turned into grid
    coordinates in place). Returns one ``{"loss_mask", "loss_dice"}`` dict of float32 scalars
    per prediction (zero, attached to the graph, when M = 0).
    """
    L = len(pred_masks)
    dev = pred_masks[0].device
    M = int(pairs[0][0].numel())
    if M == 0:
        out = []
        for masks in pred_masks:
            z = masks.sum().float() * 0.0
            out.append({"loss_mask": z, "loss_dice": z.clone()})
        return out
    with _autocast_off(dev):
        # matched predictions of every layer: [L*M, 1, h, w] (one gather per layer, batched over images)
        src_masks = torch.cat([masks[p[0].to(dev), p[1].to(dev)] for masks, p in zip(pred_masks, pairs)]).float()
        src_masks = src_masks[:, None]
        with torch.no_grad():
            # grid coordinates (2 * xy - 1, as point_sample computes them) of every match's
            # points: the same points as the loop's, not in topk's sorted order (the losses
            # average over them); selected prediction by prediction, so that no temporary is
            # L times the size of one prediction's
            grid = select_uncertain_grid_points(src_masks.detach(), overs, num_uncertain, extras)  # [L*M, P, 2]
            tgt_rows = torch.cat([p[2] for p in pairs])  # [L*M] packed GT row of each match (host)
            point_labels = sample_gt_grouped(packed, tgt_rows, grid, L, M)  # [L*M, P]
        point_logits = F.grid_sample(src_masks, grid.unsqueeze(2), align_corners=False).view(L * M, -1)  # [L*M, P]
        # per-mask values, then summed per layer in the same order as the loop
        bce, dice = _PointCeDice.apply(point_logits, point_labels)
        return [
            {"loss_mask": ce.sum() / num_masks, "loss_dice": d.sum() / num_masks}
            for ce, d in zip(bce.split(M), dice.split(M))
        ]


class _PointCeDice(torch.autograd.Function):
    """Per-mask mean BCE and dice of point logits x [R, P] against soft labels t [R, P]:
    ``bce_r = mean_P bce(x, t)``, ``dice_r = 1 - (2 sum p t + 1) / (sum p + sum t + 1)``, the
    same operations as ``sigmoid_ce_loss`` / ``dice_loss`` per row (the same values). The
    backward is the closed form, from the saved sigmoid: ``g_bce / P * (p - t) + g_dice *
    (N / D**2 - 2 t / D) * p (1 - p)`` (N = 2 sum p t + 1, D = sum p + sum t + 1), instead of
    autograd's chain through the BCE, sigmoid, product and sums (about 3x fewer passes)."""

    @staticmethod
    def forward(ctx, x: Tensor, t: Tensor):
        bce = F.binary_cross_entropy_with_logits(x, t, reduction="none").mean(1)
        p = x.sigmoid()
        numerator = 2 * (p * t).sum(-1) + 1
        denominator = p.sum(-1) + t.sum(-1) + 1
        ctx.save_for_backward(p, t, numerator, denominator)
        return bce, 1 - numerator / denominator

    @staticmethod
    def backward(ctx, g_bce: Tensor, g_dice: Tensor):
        p, t, numerator, denominator = ctx.saved_tensors
        grad = torch.sub(p, t).mul_((g_bce / p.shape[1])[:, None])
        dice_a = (g_dice * numerator / (denominator * denominator))[:, None]
        dice_b = (-2.0 * g_dice / denominator)[:, None]
        return grad.add_(torch.addcmul(dice_a, t, dice_b).mul_(p).mul_(1 - p)), None


def sample_gt_grouped(packed: PackedInstanceTargets, tgt_rows: Tensor, grid: Tensor, L: int, M: int) -> Tensor:
    """GT values at each match's points, with one ``grid_sample`` over the G GT masks.

    packed.masks: [G, H, W] float32; tgt_rows: [L*M] int64 packed GT row of each match (on
    the host); grid: [L*M, P, 2] grid coordinates in [-1, 1]^2. Returns [L*M, P] in [0, 1].
    When every GT is matched exactly once per prediction (Q >= n_b: always for a full
    rectangular assignment), GT g is sampled at the points of its L matches ([G, L*P] grid),
    and the values are handed back to the matches. Otherwise the GT masks are gathered per
    match. Values equal per-match sampling exactly.
    """
    G = packed.num_masks
    P = grid.shape[1]
    # tgt_rows come from the matcher on the host: the path is chosen there, without a sync
    layer_of = torch.arange(L).repeat_interleave(M)
    hits = torch.zeros(G, L, dtype=torch.int64)
    hits.index_put_((tgt_rows.cpu(), layer_of), torch.ones_like(tgt_rows.cpu()), accumulate=True)
    dev = grid.device
    rows_d, layer_d = tgt_rows.to(dev, non_blocking=True), layer_of.to(dev, non_blocking=True)
    if M == G and bool((hits == 1).all()):
        by_gt = grid.new_empty(G, L, P, 2)  # every (GT, prediction) entry is written once
        by_gt[rows_d, layer_d] = grid
        vals = F.grid_sample(packed.masks[:, None], by_gt.view(G, L * P, 1, 2), align_corners=False)  # [G, 1, L*P, 1]
        return vals.view(G, L, P)[rows_d, layer_d]
    return F.grid_sample(packed.masks[rows_d][:, None], grid.unsqueeze(2), align_corners=False).view(L * M, P)
