"""SAM 3 one-to-one matcher for "finds" (one image + one concept prompt, one binary class).

A batch holds ``B`` finds; ``Q`` queries each predict a logit and a box; find ``b`` has
``num_boxes[b]`` ground-truth boxes, packed over the batch into ``T = sum(num_boxes)`` rows
and also given padded as ``boxes_padded [B, maxn, 4]``. The matcher returns the triple
``(batch_idx [M], src_idx [M], tgt_idx [M])`` that every SAM 3 loss piece consumes:
prediction ``(batch_idx[i], src_idx[i])`` is matched to packed target row ``tgt_idx[i]``.
"""

from typing import Dict, Optional, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from segtrain.config import configurable
from segtrain.layers.losses import batch_sigmoid_focal_class_cost
from segtrain.structures.boxes import box_cxcywh_to_xyxy, generalized_box_iou_paired
from segtrain.utils.errors import ConfigError, NonFiniteLossError

from .build import MATCHER_REGISTRY

__all__ = ["BinaryHungarianMatcherV2", "padded_target_boxes", "empty_match", "INVALID_COST"]


# Cost given to excluded (query, GT) pairs; assignments at or above INVALID_COST / 10 are dropped.
INVALID_COST = 1e9
_INVALID_THRESH = 1e8


def padded_target_boxes(targets: Dict[str, Tensor]) -> Tensor:
    """``targets["boxes_padded"]`` [B, maxn, 4] cxcywh, or built from the packed
    ``boxes [T, 4]`` and ``num_boxes [B]`` when absent (zeros as padding)."""
    if targets.get("boxes_padded") is not None:
        return targets["boxes_padded"]
    num_boxes = targets["num_boxes"]
    boxes = targets["boxes"]
    bsz = int(num_boxes.shape[0])
    maxn = int(num_boxes.max()) if bsz > 0 else 0
    out = boxes.new_zeros(bsz, maxn, 4)
    if boxes.shape[0] > 0:
        batch = torch.repeat_interleave(torch.arange(bsz, device=boxes.device), num_boxes.to(boxes.device))
        starts = torch.cumsum(num_boxes, 0) - num_boxes
        col = torch.arange(boxes.shape[0], device=boxes.device) - starts.to(boxes.device)[batch]
        out[batch, col] = boxes
    return out


def empty_match(device: torch.device) -> Tuple[Tensor, Tensor, Tensor]:
    """The triple for "nothing matched": three empty int64 tensors."""
    e = torch.empty(0, dtype=torch.long, device=device)
    return e, e.clone(), e.clone()


def _check_finite(term: Tensor, name: str, valid: Tensor, keep_idx: Tensor, matcher: str) -> None:
    """Raise a one-line error naming the cost term and the first find whose valid entries
    (``valid`` [B', Q, maxn] bool) hold NaN/Inf in ``term`` [B', Q, maxn] (or broadcastable)."""
    bad = (~torch.isfinite(term)) & valid
    if bool(bad.any()):
        row = int(bad.flatten(1).any(1).nonzero()[0, 0])
        find = int(keep_idx[row])
        raise NonFiniteLossError(
            f"{matcher}: non-finite {name} cost for find {find} (NaN/Inf in pred_logits, pred_boxes or the "
            f"target boxes of that find); valid cost terms: class, bbox, giou"
        )


@MATCHER_REGISTRY.register()
class BinaryHungarianMatcherV2(nn.Module):
    """Optimal one-to-one assignment of queries to the GT boxes of each find.

    Per find ``b`` with ``n_b > 0`` GT boxes, the cost of (query q, GT j) is
    ``C = cost_bbox * |box_q - gt_j|_1 (cxcywh) + cost_giou * (-GIoU(xyxy_q, xyxy_j)) + cost_class * c``
    with ``p = sigmoid(logit_q)`` and

    - ``focal=False``: ``c = -p`` (``alpha``, ``gamma`` and ``stable`` only matter with focal);
    - ``focal=True, stable=False``: ``c = -alpha*(1-p)**gamma*log(p) + (1-alpha)*p**gamma*log(1-p)``
      (``pos - neg`` of the focal loss; logs as ``logsigmoid(+-logit)``);
    - ``focal=True, stable=True`` (the official "stable" variant, as in stable-DINO): the
      class probability is replaced, per (query, GT) pair, by the IoU-aware score
      ``q = p * (GIoU + 1) / 2`` and ``c = -alpha*(1-q)**gamma*log(q) + (1-alpha)*q**gamma*log(1-q)``,
      so a query with a high score but a poor box is not cheap to match. Computed as
      ``log q = logsigmoid(logit) + log((GIoU + 1)/2)`` and
      ``1 - q = sigmoid(-logit) + p*(1 - (GIoU + 1)/2)`` (equal to the official
      ``log(q)``, ``log(1-q)`` up to round-off, but finite when ``p`` saturates to 1).

    Costs are computed in float32 (autocast disabled) for the whole batch at once on the
    padded targets ``[B, Q, maxn]``; ``scipy.optimize.linear_sum_assignment`` then solves
    each find. Optional ``out_is_valid [B, Q]`` / ``target_is_valid_padded [B, maxn]`` set
    the cost of excluded entries to 1e9 and assignments to them are filtered out. Finds with
    no GT are skipped (``remove_samples_with_0_gt`` only decides whether they are removed
    before or after the batched cost; the result is the same). A NaN/Inf cost among the
    entries that reach scipy raises :class:`NonFiniteLossError` naming the term and find.

    Returns ``(batch_idx, src_idx, tgt_idx)`` int64 on the device of the predictions,
    ``tgt_idx`` indexing packed target rows; within a find the pairs are ordered by target.
    """

    target_format = "find_packed"
    required_output_keys = ("pred_logits", "pred_boxes")

    @configurable
    def __init__(
        self,
        cost_class: float = 1,
        cost_bbox: float = 1,
        cost_giou: float = 1,
        focal: bool = False,
        alpha: float = 0.25,
        gamma: float = 2.0,
        stable: bool = False,
        remove_samples_with_0_gt: bool = True,
    ):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ConfigError(
                "BinaryHungarianMatcherV2: cost_class, cost_bbox and cost_giou are all 0; "
                "set at least one to a non-zero value"
            )
        self.cost_class = float(cost_class)
        self.cost_bbox = float(cost_bbox)
        self.cost_giou = float(cost_giou)
        self.focal = bool(focal)
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.stable = bool(stable)
        self.remove_samples_with_0_gt = bool(remove_samples_with_0_gt)

    @classmethod
    def from_config(cls, cfg) -> dict:
        m = cfg.MODEL.MATCHER.BINARY_HUNGARIAN
        return {
            "cost_class": m.COST_CLASS,
            "cost_bbox": m.COST_BBOX,
            "cost_giou": m.COST_GIOU,
            "focal": m.FOCAL,
            "alpha": m.ALPHA,
            "gamma": m.GAMMA,
            "stable": m.STABLE,
            "remove_samples_with_0_gt": m.REMOVE_SAMPLES_WITH_0_GT,
        }

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, cost_giou={self.cost_giou}, "
            f"focal={self.focal}, alpha={self.alpha}, gamma={self.gamma}, stable={self.stable}"
        )

    def _class_cost(self, logits: Tensor, giou: Tensor) -> Tensor:
        """logits [B, Q]; giou [B, Q, maxn] -> class cost [B, Q, 1] or [B, Q, maxn]."""
        if not self.focal:
            return -logits.sigmoid()[..., None]
        if not self.stable:
            return batch_sigmoid_focal_class_cost(logits, self.alpha, self.gamma)[..., None]
        a, g = self.alpha, self.gamma
        x = logits[..., None]
        p = x.sigmoid()
        r = (giou + 1) / 2
        q = p * r
        log_q = torch.nn.functional.logsigmoid(x) + torch.log(r)
        log_1mq = torch.log(torch.sigmoid(-x) + p * (1 - r))
        return -a * (1 - q) ** g * log_q + (1 - a) * q**g * log_1mq

    @torch.no_grad()
    def forward(
        self,
        outputs: Dict[str, Tensor],
        batched_targets: Dict[str, Tensor],
        out_is_valid: Optional[Tensor] = None,
        target_is_valid_padded: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Match the queries of every find to its GT boxes.

        outputs: ``pred_logits [B, Q, 1]``, ``pred_boxes [B, Q, 4]`` (normalized cxcywh).
        batched_targets: ``num_boxes [B]`` int64 and ``boxes_padded [B, maxn, 4]`` cxcywh
            (or packed ``boxes [T, 4]``, padded here).
        out_is_valid: optional bool [B, Q]; target_is_valid_padded: optional bool [B, maxn].
        Returns ``(batch_idx [M], src_idx [M], tgt_idx [M])`` int64.
        """
        name = type(self).__name__
        logits = outputs["pred_logits"]
        device = logits.device
        bsz, num_queries = logits.shape[:2]
        num_boxes = batched_targets["num_boxes"].to(device="cpu", dtype=torch.long)
        tgt_bbox = padded_target_boxes(batched_targets)
        if num_boxes.shape[0] != bsz or tgt_bbox.shape[0] != bsz:
            raise ValueError(
                f"{name}: pred_logits has {bsz} finds but targets have num_boxes {tuple(num_boxes.shape)} and "
                f"boxes_padded {tuple(tgt_bbox.shape)}"
            )
        keep = num_boxes > 0
        keep_idx = keep.nonzero().squeeze(1)
        if keep_idx.numel() == 0 or tgt_bbox.shape[1] == 0:
            return empty_match(device)
        maxn = int(num_boxes.max())
        dev_keep = keep_idx.to(device)
        with torch.autocast(device_type=device.type, enabled=False):
            score = logits.squeeze(-1)[dev_keep].float()  # [B', Q]
            out_bbox = outputs["pred_boxes"][dev_keep].float()  # [B', Q, 4]
            tgt = tgt_bbox[keep_idx.to(tgt_bbox.device), :maxn].to(device=device, dtype=torch.float32)  # [B', maxn, 4]

            cost_bbox = (out_bbox[:, :, None, :] - tgt[:, None, :, :]).abs().sum(-1)  # [B', Q, maxn]
            giou = generalized_box_iou_paired(
                box_cxcywh_to_xyxy(out_bbox)[:, :, None, :], box_cxcywh_to_xyxy(tgt)[:, None, :, :]
            )  # [B', Q, maxn]
            cost_class = self._class_cost(score, giou)

            # entries that reach scipy: real (non-padding) targets of valid queries
            valid = (torch.arange(maxn, device=device)[None, :] < num_boxes[keep_idx].to(device)[:, None])[:, None, :]
            valid = valid.expand(-1, num_queries, -1)
            if out_is_valid is not None:
                out_valid = out_is_valid[dev_keep].to(device=device, dtype=torch.bool)[:, :, None]
                valid = valid & out_valid
            if target_is_valid_padded is not None:
                tgt_valid = target_is_valid_padded[dev_keep, :maxn].to(device=device, dtype=torch.bool)[:, None, :]
                valid = valid & tgt_valid
            # the GIoU helper maps degenerate inputs to finite values: flag NaN/Inf boxes explicitly
            boxes_ok = torch.isfinite(out_bbox).all(-1)[:, :, None] & torch.isfinite(tgt).all(-1)[:, None, :]
            giou_term = torch.where(boxes_ok, -giou, torch.full_like(giou, float("nan")))
            for term, weight, term_name in (
                (cost_class, self.cost_class, "class"),
                (cost_bbox, self.cost_bbox, "bbox"),
                (giou_term, self.cost_giou, "giou"),
            ):
                if weight != 0:
                    _check_finite(term, term_name, valid, keep_idx, name)

            C = self.cost_bbox * cost_bbox + self.cost_class * cost_class - self.cost_giou * giou
            do_filtering = out_is_valid is not None or target_is_valid_padded is not None
            if out_is_valid is not None:
                C = torch.where(out_valid, C, torch.full_like(C, INVALID_COST))
            if target_is_valid_padded is not None:
                C = torch.where(tgt_valid, C, torch.full_like(C, INVALID_COST))
            C = C.cpu().numpy()

        offsets = (torch.cumsum(num_boxes, 0) - num_boxes).tolist()
        batch_l, src_l, tgt_l = [], [], []
        for row, b in enumerate(keep_idx.tolist()):
            c = C[row, :, : int(num_boxes[b])]
            i, j = linear_sum_assignment(c)
            if do_filtering:
                ok = c[i, j] < _INVALID_THRESH
                i, j = i[ok], j[ok]
            order = np.argsort(j, kind="stable")
            i, j = i[order], j[order]
            batch_l.append(np.full(len(i), b, dtype=np.int64))
            src_l.append(i.astype(np.int64))
            tgt_l.append(j.astype(np.int64) + offsets[b])
        as_t = lambda parts: torch.from_numpy(np.concatenate(parts)).to(device)  # noqa: E731
        return as_t(batch_l), as_t(src_l), as_t(tgt_l)
