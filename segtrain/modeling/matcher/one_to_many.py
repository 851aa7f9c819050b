"""SAM 3 one-to-many matcher (DAC-DETR style) for the ``_o2m`` queries of a find batch."""

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from segtrain.config import configurable
from segtrain.structures.boxes import box_cxcywh_to_xyxy, box_iou_paired
from segtrain.utils.errors import ConfigError

from .binary_hungarian import empty_match, padded_target_boxes
from .build import MATCHER_REGISTRY

__all__ = ["BinaryOneToManyMatcher"]


@MATCHER_REGISTRY.register()
class BinaryOneToManyMatcher(nn.Module):
    """Greedy one-to-many assignment: each GT takes its best-scoring queries.

    With ``p = sigmoid(logit) [B, Q]`` and ``IoU [B, Q, maxn]`` between predicted and GT
    boxes (xyxy from cxcywh), the score of (query q, GT j) of find b is
    ``S = alpha * p + (1 - alpha) * IoU`` (higher is better). Excluded entries
    (``out_is_valid`` / ``target_is_valid_padded`` False) get ``S = -1e9``. A pair matches when

    - ``S > torch.quantile(S[b, :, j], 1 - topk / Q)`` (linear interpolation over the Q
      queries of that GT, strict ``>``; so roughly the top ``topk`` queries, fewer on ties),
    - ``S > threshold``,
    - the query and GT are valid and ``j < num_boxes[b]`` (padding removed).

    The quantile level is clamped to [0, 1] (the official code errors when ``topk > Q``;
    here every query above the minimum then qualifies). A query may match several GTs.
    Scores are computed in float32 (autocast disabled), without gradient.

    Returns ``(batch_idx, src_idx, tgt_idx)`` int64, ordered by (find, query, GT), with
    ``tgt_idx`` indexing packed target rows.
    """

    target_format = "find_packed"
    required_output_keys = ("pred_logits", "pred_boxes")

    @configurable
    def __init__(self, alpha: float = 0.3, threshold: float = 0.4, topk: int = 6):
        super().__init__()
        if int(topk) < 1:
            raise ConfigError(f"BinaryOneToManyMatcher: topk must be >= 1, got {topk!r}")
        self.alpha = float(alpha)
        self.threshold = float(threshold)
        self.topk = int(topk)

    @classmethod
    def from_config(cls, cfg) -> dict:
        m = cfg.MODEL.MATCHER.ONE_TO_MANY
        return {"alpha": m.ALPHA, "threshold": m.THRESHOLD, "topk": m.TOPK}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, threshold={self.threshold}, topk={self.topk}"

    @torch.no_grad()
    def forward(
        self,
        outputs: Dict[str, Tensor],
        batched_targets: Dict[str, Tensor],
        out_is_valid: Optional[Tensor] = None,
        target_is_valid_padded: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """outputs: ``pred_logits [B, Q, 1]``, ``pred_boxes [B, Q, 4]`` cxcywh;
        batched_targets: ``num_boxes [B]``, ``boxes_padded [B, maxn, 4]`` cxcywh (or packed ``boxes``);
        out_is_valid: optional bool [B, Q]; target_is_valid_padded: optional bool [B, maxn].
        Returns ``(batch_idx [M], src_idx [M], tgt_idx [M])``."""
        logits = outputs["pred_logits"]
        device = logits.device
        bsz, num_queries = logits.shape[:2]
        num_boxes = batched_targets["num_boxes"].to(device=device, dtype=torch.long)
        tgt_bbox = padded_target_boxes(batched_targets).to(device)
        if num_boxes.shape[0] != bsz or tgt_bbox.shape[0] != bsz:
            raise ValueError(
                f"BinaryOneToManyMatcher: pred_logits has {bsz} finds but targets have num_boxes "
                f"{tuple(num_boxes.shape)} and boxes_padded {tuple(tgt_bbox.shape)}"
            )
        num_targets = tgt_bbox.shape[1]
        if num_targets == 0 or num_queries == 0:
            return empty_match(device)
        with torch.autocast(device_type=device.type, enabled=False):
            prob = logits.squeeze(-1).float().sigmoid()  # [B, Q]
            iou, _ = box_iou_paired(
                box_cxcywh_to_xyxy(outputs["pred_boxes"].float())[:, :, None, :],
                box_cxcywh_to_xyxy(tgt_bbox.float())[:, None, :, :],
            )  # [B, Q, maxn]
            score = self.alpha * prob[:, :, None] + (1 - self.alpha) * iou
            if out_is_valid is not None:
                out_is_valid = out_is_valid.to(device=device, dtype=torch.bool)
                score = torch.where(out_is_valid[:, :, None], score, torch.full_like(score, -1e9))
            if target_is_valid_padded is not None:
                target_is_valid_padded = target_is_valid_padded.to(device=device, dtype=torch.bool)
                score = torch.where(target_is_valid_padded[:, None, :], score, torch.full_like(score, -1e9))
            level = min(max(1.0 - self.topk / num_queries, 0.0), 1.0)
            matches = score > torch.quantile(score, level, dim=1, keepdim=True)
            matches &= score > self.threshold
        if out_is_valid is not None:
            matches &= out_is_valid[:, :, None]
        if target_is_valid_padded is not None:
            matches &= target_is_valid_padded[:, None, :]
        matches &= (torch.arange(num_targets, device=device)[None, :] < num_boxes[:, None])[:, None, :]
        batch_idx, src_idx, tgt_idx = torch.nonzero(matches, as_tuple=True)
        offsets = torch.cumsum(num_boxes, 0) - num_boxes
        return batch_idx, src_idx, tgt_idx + offsets[batch_idx]
