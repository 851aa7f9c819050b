"""``FusionEncoder``: image tokens conditioned on the concept prompt (SAM 3's fusion encoder)."""

from typing import Optional

from torch import Tensor, nn

from segtrain.layers.transformer import (
    CrossAttentionLayer,
    FFNLayer,
    SelfAttentionLayer,
)

__all__ = ["FusionEncoderLayer", "FusionEncoder"]


class FusionEncoderLayer(nn.Module):
    """Image self-attention, cross-attention from image tokens to prompt tokens, FFN.

    forward(src [B, S, C], prompt [B, T, C], pos [1 or B, S, C]) -> [B, S, C].
    """

    def __init__(self, dim: int, nheads: int, dim_feedforward: int, dropout: float = 0.0):
        super().__init__()
        self.self_attn = SelfAttentionLayer(dim, nheads, dropout=dropout)
        self.cross_attn_prompt = CrossAttentionLayer(dim, nheads, dropout=dropout)
        self.ffn = FFNLayer(dim, dim_feedforward=dim_feedforward, dropout=dropout)

    def forward(self, src: Tensor, prompt: Tensor, pos: Optional[Tensor] = None) -> Tensor:
        src = self.self_attn(src, query_pos=pos)
        src = self.cross_attn_prompt(src, prompt, query_pos=pos)
        return self.ffn(src)


class FusionEncoder(nn.Module):
    """``num_layers`` :class:`FusionEncoderLayer`. forward(src [B, S, C], prompt [B, T, C],
    pos [1 or B, S, C]) -> memory [B, S, C]."""

    def __init__(self, dim: int, nheads: int, dim_feedforward: int, num_layers: int, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            FusionEncoderLayer(dim, nheads, dim_feedforward, dropout) for _ in range(num_layers)
        )

    def forward(self, src: Tensor, prompt: Tensor, pos: Optional[Tensor] = None) -> Tensor:
        if pos is not None and pos.shape[0] == 1 and src.shape[0] != 1:
            pos = pos.expand(src.shape[0], -1, -1)
        for layer in self.layers:
            src = layer(src, prompt, pos)
        return src
