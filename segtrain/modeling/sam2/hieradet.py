"""Hiera image trunk of SAM 2 (the official ``backbones/hieradet.py``): a patch embedding
(7x7 conv, stride 4), a windowed absolute position embedding (a background embedding
interpolated to the token grid plus one window-sized embedding tiled over it), then stages of
``MultiScaleBlock``s. The first block of each of the first ``q_pool`` later stages halves the
resolution by max-pooling its queries and doubles channels and heads; blocks attend within
windows (``window_spec`` per stage) except the ``global_att_blocks``. Outputs the last block of
every stage, finest first."""

from functools import partial
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.layers.windows import window_partition, window_unpartition

from .common import MLP, DropPath

__all__ = ["PatchEmbed", "window_partition", "window_unpartition", "MultiScaleAttention", "MultiScaleBlock", "Hiera"]


class PatchEmbed(nn.Module):
    """Conv patch embedding: [B, C_in, H, W] -> [B, H / stride, W / stride, embed_dim]."""

    def __init__(
        self,
        kernel_size: Tuple[int, int] = (7, 7),
        stride: Tuple[int, int] = (4, 4),
        padding: Tuple[int, int] = (3, 3),
        in_chans: int = 3,
        embed_dim: int = 768,
    ):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def _pool(x: Tensor, pool: Optional[nn.Module]) -> Tensor:
    """Max-pool a [B, H, W, C] map (channels last)."""
    if pool is None:
        return x
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Self-attention over [B, H, W, dim] tokens to ``dim_out`` channels; ``q_pool`` pools the
    queries (the output then has the pooled size)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: Optional[nn.Module] = None):
        super().__init__()
        self.dim = dim
        self.dim_out = dim_out
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1)
        q, k, v = torch.unbind(qkv, 2)  # each [B, HW, heads, C/heads]
        if self.q_pool is not None:
            q = _pool(q.reshape(b, h, w, -1), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(x.transpose(1, 2).reshape(b, h, w, -1))


class MultiScaleBlock(nn.Module):
    """Pre-norm block: (windowed) attention with optional query pooling, then a GELU MLP.
    A block that changes the width projects (and pools) its shortcut too.
    [B, H, W, dim] -> [B, H / q_stride, W / q_stride, dim_out]."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        q_stride: Optional[Tuple[int, int]] = None,
        window_size: int = 0,
    ):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.dim = dim
        self.dim_out = dim_out
        self.norm1 = norm_layer(dim)
        self.window_size = window_size
        self.q_stride = q_stride
        self.pool = None
        if q_stride:
            self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride, ceil_mode=False)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads=num_heads, q_pool=self.pool)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim_out)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = _pool(self.proj(x), self.pool)
        window_size = self.window_size
        h, w = x.shape[1], x.shape[2]
        if window_size > 0:
            x, pad_hw = window_partition(x, window_size)
        x = self.attn(x)
        if self.q_stride:
            # the queries were pooled: windows and map shrink by the stride
            window_size = self.window_size // self.q_stride[0]
            h, w = shortcut.shape[1:3]
            pad_h = (window_size - h % window_size) % window_size if window_size > 0 else 0
            pad_w = (window_size - w % window_size) % window_size if window_size > 0 else 0
            pad_hw = (h + pad_h, w + pad_w)
        if self.window_size > 0:
            x = window_unpartition(x, window_size, pad_hw, (h, w))
        x = shortcut + self.drop_path(x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class Hiera(nn.Module):
    """The Hiera trunk (module docstring). forward(x [B, 3, H, W]) -> list of
    [B, embed_dim * dim_mul**i, H / (4 * 2**i), W / (4 * 2**i)] for each stage i, finest first
    (only the last one without ``return_interm_layers``); ``channel_list`` gives their widths,
    coarsest first (the neck's ``backbone_channel_list``)."""

    def __init__(
        self,
        embed_dim: int = 96,
        num_heads: int = 1,
        drop_path_rate: float = 0.0,
        q_pool: int = 3,
        q_stride: Tuple[int, int] = (2, 2),
        stages: Sequence[int] = (2, 3, 16, 3),
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        window_pos_embed_bkg_spatial_size: Tuple[int, int] = (14, 14),
        window_spec: Sequence[int] = (8, 4, 14, 7),
        global_att_blocks: Sequence[int] = (12, 16, 20),
        return_interm_layers: bool = True,
    ):
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError(f"Hiera: {len(stages)} stages but {len(window_spec)} window sizes (window_spec)")
        self.window_spec = list(window_spec)
        depth = sum(stages)
        self.q_stride = tuple(q_stride)
        self.stage_ends = [sum(stages[:i]) - 1 for i in range(1, len(stages) + 1)]
        if not 0 <= q_pool <= len(self.stage_ends) - 1:
            raise ValueError(f"Hiera: q_pool must be in [0, {len(self.stage_ends) - 1}], got {q_pool}")
        self.q_pool_blocks = [x + 1 for x in self.stage_ends[:-1]][:q_pool]
        self.return_interm_layers = return_interm_layers
        self.patch_embed = PatchEmbed(embed_dim=embed_dim)
        self.global_att_blocks = list(global_att_blocks)
        self.window_pos_embed_bkg_spatial_size = tuple(window_pos_embed_bkg_spatial_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *self.window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, self.window_spec[0], self.window_spec[0]))
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()

        cur_stage = 1
        self.blocks = nn.ModuleList()
        for i in range(depth):
            dim_out = embed_dim
            # the window size lags by one block: a stage's first block keeps the previous
            # stage's window (its queries are pooled to the new stage's size)
            window_size = 0 if i in self.global_att_blocks else self.window_spec[cur_stage - 1]
            if i - 1 in self.stage_ends:
                dim_out = int(embed_dim * dim_mul)
                num_heads = int(num_heads * head_mul)
                cur_stage += 1
            self.blocks.append(
                MultiScaleBlock(
                    dim=embed_dim,
                    dim_out=dim_out,
                    num_heads=num_heads,
                    drop_path=dpr[i],
                    q_stride=self.q_stride if i in self.q_pool_blocks else None,
                    window_size=window_size,
                )
            )
            embed_dim = dim_out
        ends = self.stage_ends[::-1] if return_interm_layers else self.stage_ends[-1:]
        self.channel_list = [self.blocks[i].dim_out for i in ends]

    def _get_pos_embed(self, hw: Tuple[int, int]) -> Tensor:
        """[1, h, w, C]: the background embedding resized (bicubic) plus the tiled window one."""
        h, w = hw
        window_embed = self.pos_embed_window
        pos_embed = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        reps = [x // y for x, y in zip(pos_embed.shape, window_embed.shape)]
        pos_embed = pos_embed + window_embed.tile(reps)
        return pos_embed.permute(0, 2, 3, 1)

    def forward(self, x: Tensor) -> List[Tensor]:
        x = self.patch_embed(x)
        x = x + self._get_pos_embed(x.shape[1:3])
        outputs = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i == self.stage_ends[-1] or (i in self.stage_ends and self.return_interm_layers):
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
