"""Attention layers of SAM 2 (the official ``sam/transformer.py``): ``Attention`` (q/k/v
projections to ``embedding_dim / downsample_rate``), ``RoPEAttention`` (2-D axial rotary
encoding of queries and keys, used by the memory attention) and the mask decoder's
``TwoWayTransformer`` (prompt tokens <-> image embedding)."""

import math
from typing import Dict, Optional, Tuple, Type

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .common import MLP
from .position_encoding import apply_rotary_enc, compute_axial_cis

__all__ = ["Attention", "RoPEAttention", "TwoWayAttentionBlock", "TwoWayTransformer"]


class Attention(nn.Module):
    """Multi-head attention whose q/k/v projections map to ``embedding_dim // downsample_rate``
    channels; ``kv_in_dim`` lets keys and values come from a space of another width (the
    memory). q: [B, Nq, C], k/v: [B, Nk, C_kv] -> [B, Nq, C]."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: Optional[int] = None,
    ):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.kv_in_dim = kv_in_dim if kv_in_dim is not None else embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads != 0:
            raise ValueError(f"Attention: {num_heads} heads do not divide the internal dim {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(self.kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.dropout_p = dropout

    def _separate_heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    @staticmethod
    def _recombine_heads(x: Tensor) -> Tensor:
        b, h, n, c = x.shape
        return x.transpose(1, 2).reshape(b, n, h * c)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, attn_bias: Optional[Tensor]) -> Tensor:
        dropout_p = self.dropout_p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout_p)
        return self.out_proj(self._recombine_heads(out))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, attn_bias: Optional[Tensor] = None) -> Tensor:
        """attn_bias: added to the attention logits, broadcastable to [B, heads, Nq, Nk]."""
        q = self._separate_heads(self.q_proj(q))
        k = self._separate_heads(self.k_proj(k))
        v = self._separate_heads(self.v_proj(v))
        return self._attend(q, k, v, attn_bias)


class RoPEAttention(Attention):
    """``Attention`` with axial 2-D rotary encoding. The queries are the tokens of a square
    map (row-major); the keys are the same map (self-attention) or, with ``rope_k_repeat``,
    several maps of that size (memory frames) followed by ``num_k_exclude_rope`` tokens that
    are not rotated (object pointers). ``feat_sizes``: the map size (w, h) precomputed."""

    def __init__(
        self,
        *args,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: Tuple[int, int] = (64, 64),
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self._freqs: Dict[int, Tensor] = {}
        self._freqs_for(int(feat_sizes[0]), int(feat_sizes[1]))

    def _freqs_for(self, end_x: int, end_y: int) -> Tensor:
        n = end_x * end_y
        if n not in self._freqs:
            dim = self.internal_dim // self.num_heads
            self._freqs[n] = compute_axial_cis(dim, end_x, end_y, self.rope_theta)
        return self._freqs[n]

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, num_k_exclude_rope: int = 0, attn_bias: Optional[Tensor] = None
    ) -> Tensor:
        q = self._separate_heads(self.q_proj(q))
        k = self._separate_heads(self.k_proj(k))
        v = self._separate_heads(self.v_proj(v))
        side = math.isqrt(q.shape[-2])
        if side * side != q.shape[-2]:
            raise ValueError(f"RoPEAttention: {q.shape[-2]} query tokens are not a square map")
        if q.shape[-2] != k.shape[-2] and not self.rope_k_repeat:
            raise ValueError("RoPEAttention: keys of another length than the queries need rope_k_repeat=True")
        freqs = self._freqs_for(side, side).to(q.device)
        num_k_rope = k.shape[-2] - num_k_exclude_rope
        q, k_rope = apply_rotary_enc(q, k[:, :, :num_k_rope], freqs, repeat_freqs_k=self.rope_k_repeat)
        k = torch.cat([k_rope, k[:, :, num_k_rope:]], dim=2)
        return self._attend(q, k, v, attn_bias)


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image cross-attention, token MLP, image->token
    cross-attention, each followed by a LayerNorm (post-norm)."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ):
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, num_layers=2, activation=activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor) -> Tuple[Tensor, Tensor]:
        """queries: [B, K, C] tokens, keys: [B, hw, C] image; *_pe the matching encodings."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a final token->image attention.
    forward(image [B, C, h, w], image_pe [B, C, h, w], tokens [B, K, C])
    -> (tokens [B, K, C], image [B, h*w, C])."""

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        activation: Type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ):
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim,
                num_heads,
                mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=i == 0,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor) -> Tuple[Tensor, Tensor]:
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
