"""SAM 2 memory attention (the official ``memory_attention.py``): the current frame's image
tokens attend to themselves and to the memory bank (memory maps of other frames, then
object-pointer tokens; ``memory_conditioning.py`` gathers them).

The official model uses ``RoPEAttention`` for both attentions, position encodings added only
to the cross-attention keys, and object pointers left out of RoPE. ``locality_bias`` is a
departure for models trained from scratch (off in the official presets)."""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import get_clones
from .transformer import RoPEAttention

__all__ = ["MemoryAttentionLayer", "MemoryAttention"]


class MemoryAttentionLayer(nn.Module):
    """Pre-norm layer: self-attention over the frame tokens, cross-attention to the memory,
    MLP. ``pos_enc_at_*`` choose where position encodings are added (self-attention queries
    and keys; cross-attention queries; cross-attention keys). Tokens are batch first:
    tgt [B, L, C], memory [B, L_mem, C_mem]."""

    def __init__(
        self,
        activation: str,
        cross_attention: nn.Module,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        pos_enc_at_attn: bool,
        pos_enc_at_cross_attn_keys: bool,
        pos_enc_at_cross_attn_queries: bool,
        self_attention: nn.Module,
    ):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"MemoryAttentionLayer: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward
        self.dropout_value = dropout
        self.self_attn = self_attention
        self.cross_attn_image = cross_attention
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation_str = activation
        self.activation = _ACTIVATIONS[activation]
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys

    def _forward_sa(self, tgt: Tensor, query_pos: Tensor) -> Tensor:
        tgt2 = self.norm1(tgt)
        q = k = tgt2 + query_pos if self.pos_enc_at_attn else tgt2
        return tgt + self.dropout1(self.self_attn(q, k, tgt2))

    def _forward_ca(
        self, tgt: Tensor, memory: Tensor, query_pos: Tensor, pos: Tensor, num_k_exclude_rope: int, attn_bias
    ) -> Tensor:
        kwds = {}
        if num_k_exclude_rope > 0:
            if not isinstance(self.cross_attn_image, RoPEAttention):
                raise ValueError("MemoryAttentionLayer: num_k_exclude_rope needs a RoPEAttention cross-attention")
            kwds["num_k_exclude_rope"] = num_k_exclude_rope
        if attn_bias is not None:
            kwds["attn_bias"] = attn_bias
        tgt2 = self.norm2(tgt)
        tgt2 = self.cross_attn_image(
            tgt2 + query_pos if self.pos_enc_at_cross_attn_queries else tgt2,
            memory + pos if self.pos_enc_at_cross_attn_keys else memory,
            memory,
            **kwds,
        )
        return tgt + self.dropout2(tgt2)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
        num_k_exclude_rope: int = 0,
        attn_bias: Optional[Tensor] = None,
    ) -> Tensor:
        """attn_bias: added to the cross-attention logits, broadcastable to [B, heads, L, L_mem]."""
        tgt = self._forward_sa(tgt, query_pos)
        tgt = self._forward_ca(tgt, memory, query_pos, pos, num_k_exclude_rope, attn_bias)
        tgt2 = self.linear2(self.dropout(self.activation(self.linear1(self.norm3(tgt)))))
        return tgt + self.dropout3(tgt2)


class MemoryAttention(nn.Module):
    """``num_layers`` copies of ``layer`` and a final LayerNorm.

    forward(curr [L, B, C], memory [L_mem, B, C_mem], curr_pos [L, B, C], memory_pos
    [L_mem, B, C_mem], num_obj_ptr_tokens) -> [L, B, C] (sequence first, as the official
    model calls it). The current frame is a square map of L tokens (row-major); the memory
    is whole maps of that size followed by ``num_obj_ptr_tokens`` object-pointer tokens.

    locality_bias (not in SAM 2): every layer adds ``-softplus(s) * d^2`` (d: distance in
    tokens between a query and a memory map token, s learnable per layer, pointers unbiased)
    to its cross-attention logits: a prior that an object is near where it was, which a
    model trained from scratch otherwise needs many iterations to learn.
    """

    def __init__(
        self,
        d_model: int,
        pos_enc_at_input: bool,
        layer: nn.Module,
        num_layers: int,
        batch_first: bool = True,
        locality_bias: bool = False,
    ):
        super().__init__()
        self.d_model = d_model
        self.layers = get_clones(layer, num_layers)
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = pos_enc_at_input
        self.batch_first = batch_first
        self.locality_bias = locality_bias
        if locality_bias:
            # softplus(0.0) ~ 0.69: weight e^-0.69 ~ 1/2 one token away, 1/16 two tokens away
            self.locality_scale = nn.Parameter(torch.zeros(num_layers))

    @staticmethod
    def _sq_dist(h: int, w: int, device) -> Tensor:
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        p = torch.stack([ys.flatten(), xs.flatten()], dim=1).float()
        return torch.cdist(p, p).pow(2)  # [hw, hw]

    def _locality_dist(self, num_tokens: int, num_mem: int, num_obj_ptr_tokens: int, feat_size, device) -> Tensor:
        h, w = feat_size if feat_size is not None else (math.isqrt(num_tokens),) * 2
        num_spatial = num_mem - num_obj_ptr_tokens
        if h * w != num_tokens or num_spatial % num_tokens != 0:
            raise ValueError(
                f"MemoryAttention: {num_spatial} spatial memory tokens are not whole {h}x{w} maps of the "
                f"{num_tokens} query tokens"
            )
        d2 = self._sq_dist(h, w, device).repeat(1, num_spatial // num_tokens)
        return torch.cat([d2, d2.new_zeros(num_tokens, num_obj_ptr_tokens)], dim=1)

    def forward(
        self,
        curr: Tensor,
        memory: Tensor,
        curr_pos: Optional[Tensor] = None,
        memory_pos: Optional[Tensor] = None,
        num_obj_ptr_tokens: int = 0,
        feat_size: Optional[Tuple[int, int]] = None,
    ) -> Tensor:
        """feat_size: (h, w) of the current frame's map when it is not square (locality bias only)."""
        if isinstance(curr, list):
            curr, curr_pos = curr[0], curr_pos[0]
        if curr.shape[1] != memory.shape[1]:
            raise ValueError(f"MemoryAttention: batch {curr.shape[1]} of the frame, {memory.shape[1]} of the memory")
        output = curr
        if self.pos_enc_at_input and curr_pos is not None:
            output = output + 0.1 * curr_pos
        if self.batch_first:
            output = output.transpose(0, 1)
            curr_pos = curr_pos.transpose(0, 1)
            memory = memory.transpose(0, 1)
            memory_pos = memory_pos.transpose(0, 1)
        dist = None
        if self.locality_bias:
            dist = self._locality_dist(curr.shape[0], memory.shape[-2], num_obj_ptr_tokens, feat_size, curr.device)
        for i, layer in enumerate(self.layers):
            kwds = {}
            if isinstance(layer.cross_attn_image, RoPEAttention):
                kwds["num_k_exclude_rope"] = num_obj_ptr_tokens
            if dist is not None:
                kwds["attn_bias"] = (-F.softplus(self.locality_scale[i]) * dist).to(output.dtype)[None, None]
            output = layer(tgt=output, memory=memory, pos=memory_pos, query_pos=curr_pos, **kwds)
        normed_output = self.norm(output)
        if self.batch_first:
            normed_output = normed_output.transpose(0, 1)
        return normed_output


_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
