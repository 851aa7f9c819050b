"""``ConceptDecoder``: DETR-style decoder with iterative box refinement, a presence token and
an optional one-to-many query group."""

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from segtrain.layers.transformer import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
)

from .box_ops import box_sine_embed, inverse_sigmoid

__all__ = ["ConceptDecoderLayer", "ConceptDecoder", "group_attention_mask"]


def group_attention_mask(num_presence: int, num_queries: int, num_o2m: int, device=None) -> Optional[Tensor]:
    """Self-attention mask over the tokens ``[presence (0 or 1), one-to-one (Q), one-to-many (Q2)]``:
    bool [1, 1, N, N], True = blocked. The one-to-many group sees only itself, so the
    one-to-one predictions (and the presence token) are the same with or without it.
    None when there is no one-to-many group (nothing blocked)."""
    if num_o2m == 0:
        return None
    group = torch.cat(
        [torch.zeros(num_presence + num_queries, dtype=torch.long), torch.ones(num_o2m, dtype=torch.long)]
    ).to(device)
    return (group[:, None] != group[None, :])[None, None]


class ConceptDecoderLayer(nn.Module):
    """Self-attention among the queries (and presence token), cross-attention to the prompt
    tokens, cross-attention to the fused image memory, FFN (SAM 3's order).

    forward(tgt [B, N, C], query_pos [B, N, C], memory [B, S, C], memory_pos [1 or B, S, C],
    prompt [B, T, C], self_attn_mask bool [1, 1, N, N] or None) -> [B, N, C].
    """

    def __init__(self, dim: int, nheads: int, dim_feedforward: int, dropout: float = 0.0):
        super().__init__()
        self.self_attn = CrossAttentionLayer(dim, nheads, dropout=dropout)
        self.cross_attn_prompt = CrossAttentionLayer(dim, nheads, dropout=dropout)
        self.cross_attn_image = CrossAttentionLayer(dim, nheads, dropout=dropout)
        self.ffn = FFNLayer(dim, dim_feedforward=dim_feedforward, dropout=dropout)

    def forward(self, tgt, query_pos, memory, memory_pos, prompt, self_attn_mask=None):
        tgt = self.self_attn(tgt, tgt, attn_mask=self_attn_mask, pos=query_pos, query_pos=query_pos)
        tgt = self.cross_attn_prompt(tgt, prompt)
        tgt = self.cross_attn_image(tgt, memory, pos=memory_pos, query_pos=query_pos)
        return self.ffn(tgt)


class ConceptDecoder(nn.Module):
    """Q one-to-one (+ Q2 one-to-many) queries with reference boxes refined layer by layer.

    Each layer's query positions are an MLP of the sine embedding of the current reference
    boxes; after the layer, ``boxes = sigmoid(bbox_embed(h) + inverse_sigmoid(ref))`` is that
    layer's prediction and, detached, the next layer's reference (Deformable-DETR refinement).
    The presence token (no position) joins the one-to-one group in self-attention.

    forward(memory [B, S, C], memory_pos [1 or B, S, C], prompt [B, T, C], ref_boxes
    [B, Q + Q2', 4] normalized cxcywh or None (learned references), with_o2m) -> one
    ``(hs [B, Q + Q2', C], boxes [B, Q + Q2', 4], presence [B, C] or None)`` per layer,
    with ``Q2' = Q2`` when ``with_o2m`` else 0; ``hs`` and ``presence`` are LayerNorm-ed.
    """

    def __init__(
        self,
        *,
        dim: int,
        nheads: int,
        dim_feedforward: int,
        num_layers: int,
        num_queries: int,
        num_o2m_queries: int = 0,
        presence_token: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        if num_layers < 1 or num_queries < 1:
            raise ValueError(f"ConceptDecoder: num_layers ({num_layers}) and num_queries ({num_queries}) must be >= 1")
        self.num_queries = int(num_queries)
        self.num_o2m_queries = int(num_o2m_queries)
        total = self.num_queries + self.num_o2m_queries
        self.layers = nn.ModuleList(
            ConceptDecoderLayer(dim, nheads, dim_feedforward, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.query_feat = nn.Embedding(total, dim)
        # learned reference boxes, stored as logits (sigmoid -> normalized cxcywh)
        self.query_ref = nn.Embedding(total, 4)
        self.ref_point_head = MLP(4 * (dim // 2), dim, dim, 2)
        self.bbox_embed = MLP(dim, dim, 4, 3)
        self.presence_token = nn.Embedding(1, dim) if presence_token else None
        self._dim = dim
        self._init_weights()

    def _init_weights(self) -> None:
        g = torch.Generator().manual_seed(0)  # a spread of starting boxes over the image
        centers = torch.rand(self.query_ref.num_embeddings, 2, generator=g) * 0.8 + 0.1
        sizes = torch.full((self.query_ref.num_embeddings, 2), 0.2)
        with torch.no_grad():
            self.query_ref.weight.copy_(inverse_sigmoid(torch.cat([centers, sizes], dim=1)))
        # refinement starts as the identity
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    def reference_boxes(self) -> Tensor:
        """Learned reference boxes [Q + Q2, 4] (normalized cxcywh)."""
        return self.query_ref.weight.sigmoid()

    def forward(
        self,
        memory: Tensor,
        memory_pos: Optional[Tensor],
        prompt: Tensor,
        ref_boxes: Optional[Tensor] = None,
        with_o2m: bool = False,
    ) -> List[Tuple[Tensor, Tensor, Optional[Tensor]]]:
        B = memory.shape[0]
        n = self.num_queries + (self.num_o2m_queries if with_o2m else 0)
        tgt = self.query_feat.weight[:n].unsqueeze(0).expand(B, -1, -1)
        if ref_boxes is None:
            ref_boxes = self.reference_boxes()[:n].unsqueeze(0).expand(B, -1, -1)
        ref = ref_boxes[:, :n].detach()
        num_presence = 0
        if self.presence_token is not None:
            num_presence = 1
            tgt = torch.cat([self.presence_token.weight.unsqueeze(0).expand(B, -1, -1), tgt], dim=1)
        mask = group_attention_mask(num_presence, self.num_queries, n - self.num_queries, memory.device)
        if memory_pos is not None and memory_pos.shape[0] == 1 and B != 1:
            memory_pos = memory_pos.expand(B, -1, -1)

        out = []
        for layer in self.layers:
            query_pos = self.ref_point_head(box_sine_embed(ref, self._dim // 2).to(tgt.dtype))
            if num_presence:
                query_pos = torch.cat([query_pos.new_zeros(B, 1, query_pos.shape[-1]), query_pos], dim=1)
            tgt = layer(tgt, query_pos, memory, memory_pos, prompt, mask)
            normed = self.norm(tgt)
            hs = normed[:, num_presence:]
            boxes = (self.bbox_embed(hs) + inverse_sigmoid(ref)).sigmoid()
            out.append((hs, boxes, normed[:, 0] if num_presence else None))
            ref = boxes.detach()
        return out
