"""SAM 2 memory attention: the current frame's image tokens attend to themselves and to the
memory bank of PAST frames (memory maps of the conditioning frames and of the last few
frames, plus object pointers). ``select_memory_frames`` decides which past frames enter."""

from typing import Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import Attention

__all__ = ["MemoryAttentionLayer", "MemoryAttention", "select_memory_frames", "select_obj_ptr_frames"]


def select_memory_frames(
    frame_idx: int, cond_frames: Iterable[int], available: Iterable[int], num_maskmem: int
) -> List[Tuple[int, int]]:
    """The frames whose memory frame ``frame_idx`` attends to, as (frame, t_pos) pairs.

    Only frames strictly before ``frame_idx`` (processing runs forward in time, so a later
    frame has no memory yet and must not leak into the prediction). Every conditioning
    frame in the past enters with ``t_pos = 0``; then the ``num_maskmem - 1`` previous
    frames ``frame_idx - i`` (i = 1, 2, ...) that are not conditioning frames enter with
    ``t_pos = i``. ``available``: frames that have a memory.
    """
    available = set(available)
    cond = sorted(c for c in set(cond_frames) if c < frame_idx and c in available)
    out = [(c, 0) for c in cond]
    for i in range(1, num_maskmem):
        s = frame_idx - i
        if s < 0:
            break
        if s in available and s not in cond:
            out.append((s, i))
    return out


def select_obj_ptr_frames(
    frame_idx: int, cond_frames: Iterable[int], available: Iterable[int], max_obj_ptrs: int
) -> List[Tuple[int, int]]:
    """Frames whose object pointer enters the memory of ``frame_idx``, as (frame, distance):
    past conditioning frames, then the previous non-conditioning frames, at most ``max_obj_ptrs``."""
    available = set(available)
    cond = sorted((c for c in set(cond_frames) if c < frame_idx and c in available), reverse=True)
    out = [(c, frame_idx - c) for c in cond]
    for i in range(1, max_obj_ptrs):
        s = frame_idx - i
        if s < 0 or len(out) >= max_obj_ptrs:
            break
        if s in available and s not in cond:
            out.append((s, i))
    return out[:max_obj_ptrs]


class MemoryAttentionLayer(nn.Module):
    """Pre-norm layer: self-attention over the frame tokens, cross-attention to the memory
    (keys and values of width ``mem_dim``), MLP. Position encodings are added to queries and
    keys (SAM 2 uses RoPE; additive sine encodings give a relative-position cue too).
    ``attn_bias`` [1, 1, L_q, L_mem] is added to the cross-attention logits."""

    def __init__(self, d_model: int, mem_dim: int, num_heads: int, dim_feedforward: int, dropout: float = 0.0):
        super().__init__()
        self.self_attn = Attention(d_model, num_heads)
        self.cross_attn_image = Attention(d_model, num_heads, kv_in_dim=mem_dim)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = nn.ReLU()

    def forward(
        self, tgt: Tensor, memory: Tensor, pos: Tensor, memory_pos: Tensor, attn_bias: Optional[Tensor] = None
    ) -> Tensor:
        t2 = self.norm1(tgt)
        q = t2 + pos
        tgt = tgt + self.dropout(self.self_attn(q, q, t2))
        t2 = self.norm2(tgt)
        tgt = tgt + self.dropout(self.cross_attn_image(t2 + pos, memory + memory_pos, memory, attn_bias=attn_bias))
        t2 = self.norm3(tgt)
        return tgt + self.dropout(self.linear2(self.dropout(self.activation(self.linear1(t2)))))


class MemoryAttention(nn.Module):
    """forward(curr [N, C, h, w], curr_pos [N, C, h, w], memory [N, L, mem_dim],
    memory_pos [N, L, mem_dim], num_spatial_memory=0) -> [N, C, h, w].

    The first ``num_spatial_memory`` memory tokens are ``num_spatial_memory / (h w)`` maps of
    the frame's grid (row-major), the rest object pointers. With ``locality_bias`` every
    layer adds ``-softplus(s) * d^2`` (d: distance in tokens between a query and a memory
    map token, s learnable per layer) to its cross-attention logits, pointers unbiased: a
    prior that an object is near where it was, which a model trained from scratch otherwise
    needs many iterations to learn (SAM 2 starts from SAM's image weights instead).
    """

    def __init__(
        self,
        d_model: int,
        mem_dim: int,
        num_layers: int,
        num_heads: int,
        dim_feedforward: int,
        dropout: float = 0.0,
        pos_enc_at_input: bool = True,
        locality_bias: bool = False,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(d_model, mem_dim, num_heads, dim_feedforward, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.pos_enc_at_input = pos_enc_at_input
        self.locality_bias = locality_bias
        if locality_bias:
            # softplus(0.0) ~ 0.69: weight e^-0.69 ~ 1/2 one token away, 1/16 two tokens away
            self.locality_scale = nn.Parameter(torch.zeros(num_layers))

    @staticmethod
    def _sq_dist(h: int, w: int, device) -> Tensor:
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        p = torch.stack([ys.flatten(), xs.flatten()], dim=1).float()
        return torch.cdist(p, p).pow(2)  # [hw, hw]

    def forward(
        self, curr: Tensor, curr_pos: Tensor, memory: Tensor, memory_pos: Tensor, num_spatial_memory: int = 0
    ) -> Tensor:
        n, c, h, w = curr.shape
        x = curr.flatten(2).transpose(1, 2)
        pos = curr_pos.flatten(2).transpose(1, 2)
        if self.pos_enc_at_input:
            x = x + 0.1 * pos
        dist = None
        if self.locality_bias:
            if num_spatial_memory % (h * w) != 0:
                raise ValueError(
                    f"MemoryAttention: {num_spatial_memory} spatial memory tokens are not whole {h}x{w} maps"
                )
            d2 = self._sq_dist(h, w, curr.device).repeat(1, num_spatial_memory // (h * w))
            dist = torch.cat([d2, d2.new_zeros(h * w, memory.shape[1] - num_spatial_memory)], dim=1)
        for i, layer in enumerate(self.layers):
            bias = None
            if dist is not None:
                bias = (-F.softplus(self.locality_scale[i]) * dist).to(x.dtype)[None, None]
            x = layer(x, memory, pos, memory_pos, bias)
        return self.norm(x).transpose(1, 2).reshape(n, c, h, w)
