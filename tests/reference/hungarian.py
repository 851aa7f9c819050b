"""Mask2Former's Hungarian matching as the official code writes it: one image at a time,
the binary cross-entropy cost as two elementwise passes. Compared with
``segtrain.modeling.matcher.HungarianMatcher`` (same RNG consumption, same assignments).
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from segtrain.layers.losses import batch_dice_loss
from segtrain.layers.point_sample import point_sample
from segtrain.utils.errors import NonFiniteLossError

__all__ = ["batch_sigmoid_ce_loss_two_pass", "hungarian_match_per_image"]


def batch_sigmoid_ce_loss_two_pass(inputs: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy between every prediction and every target, as the formula is
    written: ``(bce(x, 1) @ t.T + bce(x, 0) @ (1 - t).T) / P``.

    inputs: [..., Nq, P] logits; targets: [..., Nt, P] in [0, 1]. Returns [..., Nq, Nt].
    """
    hw = inputs.shape[-1]
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    loss = pos @ targets.transpose(-1, -2) + neg @ (1 - targets).transpose(-1, -2)
    return loss / hw


@torch.no_grad()
def hungarian_match_per_image(
    matcher,
    outputs: Dict[str, Tensor],
    targets: Sequence[Dict[str, Tensor]],
    point_coords: Optional[Tensor] = None,
    layer_name: str = "outputs",
) -> List[Tuple[Tensor, Tensor]]:
    """The official per-image matching loop with ``matcher``'s settings (``cost_class``,
    ``cost_mask``, ``cost_dice``, ``num_points``).

    outputs: ``pred_logits`` [B, Q, K+1], ``pred_masks`` [B, Q, h, w] logits; targets: B dicts
    ``labels`` [n_b] int64, ``masks`` [n_b, H, W]; point_coords: [B, num_points, 2] in [0, 1]
    (None: ``torch.rand(1, num_points, 2)`` per image, in image order). Returns B
    ``(query_idx, target_idx)`` int64 CPU pairs (empty for an image without GT). A non-finite
    cost raises ``NonFiniteLossError`` naming the term, the image and ``layer_name``.
    """
    B = outputs["pred_logits"].shape[0]
    device = outputs["pred_logits"].device
    dev_type = device.type if device.type in ("cuda", "cpu", "xpu", "mps") else "cpu"
    num_points = matcher.num_points
    indices = []
    for b in range(B):
        t = targets[b]
        coords = None
        if num_points > 0:
            coords = (
                point_coords[b : b + 1] if point_coords is not None else torch.rand(1, num_points, 2, device=device)
            )
        labels = torch.as_tensor(t["labels"]).to(device).long()
        if labels.numel() == 0:
            indices.append((torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64)))
            continue
        with torch.autocast(device_type=dev_type, enabled=False):
            prob = outputs["pred_logits"][b].float().softmax(-1)  # [Q, K+1]
            cost_class = -prob[:, labels]
            out_mask = outputs["pred_masks"][b].float()  # [Q, h, w]
            tgt_mask = torch.as_tensor(t["masks"]).to(device).float()  # [n, H, W]
            if num_points > 0:
                out_pts = point_sample(out_mask[:, None], coords.repeat(out_mask.shape[0], 1, 1)).squeeze(1)
                tgt_pts = point_sample(tgt_mask[:, None], coords.repeat(tgt_mask.shape[0], 1, 1)).squeeze(1)
            else:
                out_pts = F.interpolate(
                    out_mask[:, None], size=tgt_mask.shape[-2:], mode="bilinear", align_corners=False
                ).flatten(1)
                tgt_pts = tgt_mask.flatten(1)
            cost_mask = batch_sigmoid_ce_loss_two_pass(out_pts, tgt_pts)
            cost_dice = batch_dice_loss(out_pts, tgt_pts)
            C = matcher.cost_mask * cost_mask + matcher.cost_class * cost_class + matcher.cost_dice * cost_dice
        c = C.cpu()
        if not torch.isfinite(c).all():
            term = next(
                (
                    n
                    for n, v in (("class", cost_class), ("mask", cost_mask), ("dice", cost_dice))
                    if not torch.isfinite(v).all()
                ),
                "total",
            )
            raise NonFiniteLossError(f"reference matcher: non-finite {term} cost for image {b} of {layer_name}")
        i, j = linear_sum_assignment(c.numpy())
        indices.append((torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)))
    return indices
