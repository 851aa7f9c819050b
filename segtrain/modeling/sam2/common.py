"""Small building blocks shared by the SAM 2-style modules: ``LayerNorm2d``, ``MLP`` (from
``segtrain.layers``),
``Attention`` (with SAM's internal downsampling) and position encodings (random Fourier
for prompts and decoder, 2-D sine for memory, 1-D sine for temporal offsets)."""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.layers.transformer import MLP

__all__ = ["LayerNorm2d", "MLP", "Attention", "PositionEmbeddingRandom", "sine_pos_2d", "sine_pos_1d", "NO_OBJ_SCORE"]

# Mask logit of frames where the object-score head says "no object" (SAM 2's value).
NO_OBJ_SCORE = -1024.0


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a [B, C, H, W] map (each pixel normalized on its own)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class Attention(nn.Module):
    """Multi-head attention whose q/k/v projections map to ``embedding_dim // downsample_rate``
    channels (SAM's cheaper cross-attention); ``kv_in_dim`` lets keys and values come from a
    space of another width (the memory). q: [B, Nq, C], k/v: [B, Nk, C_kv] -> [B, Nq, C]."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1, kv_in_dim: Optional[int] = None):
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        if self.internal_dim % num_heads != 0:
            raise ValueError(f"Attention: {num_heads} heads do not divide the internal dim {self.internal_dim}")
        kv_in_dim = kv_in_dim or embedding_dim
        self.num_heads = num_heads
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, attn_bias: Optional[Tensor] = None) -> Tensor:
        """attn_bias: added to the attention logits, broadcastable to [B, heads, Nq, Nk]."""
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias)
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier position encoding (SAM): coordinates in [0, 1] -> [..., 2 * num_pos_feats]
    ``[sin(2 pi (2c - 1) G), cos(...)]`` with a fixed Gaussian matrix G [2, num_pos_feats]."""

    def __init__(self, num_pos_feats: int = 64, scale: float = 1.0):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", scale * torch.randn((2, num_pos_feats)))

    def _pe_encoding(self, coords: Tensor) -> Tensor:
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix.to(coords.dtype)
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def forward(self, size: Tuple[int, int]) -> Tensor:
        """Dense encoding of an [h, w] grid of pixel centres -> [2 * num_pos_feats, h, w]."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        y = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        x = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        grid = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)], dim=-1)
        return self._pe_encoding(grid).permute(2, 0, 1)

    def forward_with_coords(self, coords: Tensor, image_size: Tuple[int, int]) -> Tensor:
        """Pixel coordinates (x, y) [B, P, 2] in an image of ``image_size`` (h, w) -> [B, P, C]."""
        coords = coords.clone().float()
        coords[..., 0] = coords[..., 0] / image_size[1]
        coords[..., 1] = coords[..., 1] / image_size[0]
        return self._pe_encoding(coords)


def sine_pos_2d(channels: int, h: int, w: int, device=None, temperature: float = 10000.0) -> Tensor:
    """Normalized 2-D sine encoding (DETR style, half the channels for y, half for x) -> [channels, h, w]."""
    if channels % 4 != 0:
        raise ValueError(f"sine_pos_2d needs channels divisible by 4, got {channels}")
    npf = channels // 2
    y = (torch.arange(h, device=device, dtype=torch.float32) + 1) / (h + 1e-6) * 2 * math.pi
    x = (torch.arange(w, device=device, dtype=torch.float32) + 1) / (w + 1e-6) * 2 * math.pi
    dim_t = temperature ** (2 * (torch.arange(npf, device=device) // 2).float() / npf)
    px = x[:, None] / dim_t  # [w, npf]
    py = y[:, None] / dim_t  # [h, npf]
    px = torch.stack((px[:, 0::2].sin(), px[:, 1::2].cos()), dim=2).flatten(1)
    py = torch.stack((py[:, 0::2].sin(), py[:, 1::2].cos()), dim=2).flatten(1)
    return torch.cat([py[:, None, :].expand(h, w, npf), px[None, :, :].expand(h, w, npf)], dim=-1).permute(2, 0, 1)


def sine_pos_1d(pos: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """1-D sine encoding of positions [L] (e.g. normalized frame offsets) -> [L, dim]."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32, device=pos.device)
    dim_t = temperature ** (2 * (dim_t // 2) / half)
    pe = pos.float()[:, None] / dim_t
    return torch.cat([pe.sin(), pe.cos()], dim=-1)
