"""``EncoderProposals``: two-stage box proposals from the fused encoder memory."""

from typing import Dict, Tuple

import torch
from torch import Tensor, nn

from segtrain.layers.transformer import MLP
from segtrain.structures.boxes import box_cxcywh_to_xyxy

from .box_ops import inverse_sigmoid
from .heads import DotProductScoring

__all__ = ["EncoderProposals", "grid_anchors"]


def grid_anchors(h: int, w: int, device=None) -> Tensor:
    """One anchor per memory token: [h*w, 4] normalized cxcywh, centred on the token's cell,
    two cells wide and high (row-major, as the flattened memory)."""
    ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    wh = torch.tensor([min(2.0 / w, 1.0), min(2.0 / h, 1.0)], device=device)
    return torch.cat([cx.reshape(-1, 1), cy.reshape(-1, 1), wh.expand(h * w, 2)], dim=1)


class EncoderProposals(nn.Module):
    """Every memory token scores itself against the prompt and regresses a box around its
    anchor; the ``first_stage`` output supervises these, and the best-scored boxes become
    the decoder's reference boxes (two-stage DETR).

    forward(memory [B, S, C], prompt [B, T, C], size (h, w) with h*w = S) ->
    ``{"pred_logits" [B, S, 1], "pred_boxes" [B, S, 4] cxcywh, "pred_boxes_xyxy" [B, S, 4],
    "hs" [B, S, C]}`` (``hs`` for an optional mask head; not a loss input).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.output_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.scoring = DotProductScoring(dim)
        self.bbox_embed = MLP(dim, dim, 4, 3)
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    def forward(self, memory: Tensor, prompt: Tensor, size: Tuple[int, int]) -> Dict[str, Tensor]:
        h, w = size
        hs = self.norm(self.output_proj(memory))
        logits = self.scoring(hs, prompt)
        anchors = inverse_sigmoid(grid_anchors(h, w, memory.device)).to(hs.dtype)
        boxes = (self.bbox_embed(hs) + anchors).sigmoid()
        return {"pred_logits": logits, "pred_boxes": boxes, "pred_boxes_xyxy": box_cxcywh_to_xyxy(boxes), "hs": hs}

    @staticmethod
    def select(first_stage: Dict[str, Tensor], k: int) -> Tensor:
        """The ``min(k, S)`` best-scored proposal boxes per find, detached: [B, min(k, S), 4]."""
        logits = first_stage["pred_logits"][..., 0]
        k = min(int(k), logits.shape[1])
        idx = logits.detach().topk(k, dim=1).indices
        return torch.gather(first_stage["pred_boxes"].detach(), 1, idx[..., None].expand(-1, -1, 4))
