"""SAM 3's vision trunk: a plain ViT (ViTDet style) with 2-D axial RoPE, windowed blocks and a
few global-attention blocks, tiled absolute position embeddings and a bias-free patch embed.

Parameter and buffer names follow the official ``sam3/model/vitdet.py`` (``patch_embed.proj``,
``pos_embed``, ``ln_pre``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,attn.freqs_cis,norm2,mlp.fc1,
mlp.fc2}``), so the released trunk loads as it is. Relative position biases (unused by SAM 3)
and a retained class token are not implemented.
"""

from functools import partial
from typing import Callable, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from segtrain.layers.windows import window_partition, window_unpartition

__all__ = ["ViT", "Block", "Attention", "compute_axial_cis", "apply_rotary_enc", "window_partition"]


def compute_axial_cis(dim: int, end_x: int, end_y: int, theta: float = 10000.0, scale_pos: float = 1.0) -> Tensor:
    """Axial 2-D RoPE rotations [end_x * end_y, dim // 2] (complex64), x frequencies first.

    Token t of a row-major ``end_y x end_x`` grid sits at ``(t % end_x, t // end_x) * scale_pos``.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 4)[: dim // 4].float() / dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = (t % end_x) * scale_pos
    t_y = torch.div(t, end_x, rounding_mode="floor") * scale_pos
    angles_x = torch.outer(t_x, freqs)
    angles_y = torch.outer(t_y, freqs)
    return torch.cat(
        [torch.polar(torch.ones_like(angles_x), angles_x), torch.polar(torch.ones_like(angles_y), angles_y)], -1
    )


def apply_rotary_enc(xq: Tensor, xk: Tensor, freqs_cis: Tensor) -> Tuple[Tensor, Tensor]:
    """Rotate queries and keys [B, heads, L, head_dim] by ``freqs_cis`` [L, head_dim // 2]."""
    if freqs_cis.shape != (xq.shape[-2], xq.shape[-1] // 2):
        raise ValueError(f"RoPE: {tuple(freqs_cis.shape)} rotations for {xq.shape[-2]} tokens of dim {xq.shape[-1]}")
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    xk_ = torch.view_as_complex(xk.float().reshape(*xk.shape[:-1], -1, 2))
    xq_out = torch.view_as_real(xq_ * freqs_cis).flatten(3)
    xk_out = torch.view_as_real(xk_ * freqs_cis).flatten(3)
    return xq_out.type_as(xq), xk_out.type_as(xk)


def get_abs_pos(abs_pos: Tensor, has_cls_token: bool, hw: Tuple[int, int], tiling: bool = False) -> Tensor:
    """Absolute position embeddings [1, N(+1), C] -> [1, H, W, C], tiled or bicubic-resized."""
    h, w = hw
    if has_cls_token:
        abs_pos = abs_pos[:, 1:]
    size = int(round(abs_pos.shape[1] ** 0.5))
    if size * size != abs_pos.shape[1]:
        raise ValueError(f"ViT pos_embed: {abs_pos.shape[1]} positions are not a square grid")
    if size == h and size == w:
        return abs_pos.reshape(1, h, w, -1)
    grid = abs_pos.reshape(1, size, size, -1).permute(0, 3, 1, 2)
    if tiling:
        grid = grid.tile([1, 1, h // size + 1, w // size + 1])[:, :, :h, :w]
    else:
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1)


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``drop_prob`` in training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class PatchEmbed(nn.Module):
    """Conv patchify: [B, 3, H, W] -> [B, H / patch, W / patch, embed_dim]."""

    def __init__(self, kernel_size=(16, 16), stride=(16, 16), padding=(0, 0), in_chans=3, embed_dim=768, bias=True):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Mlp(nn.Module):
    """fc1 -> activation -> dropout -> fc2 (timm's ``Mlp`` names)."""

    def __init__(self, in_features: int, hidden_features: int, act_layer=nn.GELU, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop1(self.act(self.fc1(x))))


class Attention(nn.Module):
    """Multi-head self-attention over a [B, H, W, C] grid with 2-D RoPE on queries and keys.

    ``input_size`` is the grid the RoPE table is built for (the window for windowed blocks);
    with ``rope_interp`` positions are scaled by ``rope_pt_size / input_size``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = True,
        input_size: Optional[Tuple[int, int]] = None,
        use_rope: bool = False,
        rope_theta: float = 10000.0,
        rope_pt_size: Optional[Tuple[int, int]] = None,
        rope_interp: bool = False,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rope = use_rope
        self.input_size = input_size
        if not use_rope:
            self.freqs_cis = None
            return
        if input_size is None:
            raise ValueError("ViT attention: use_rope needs input_size")
        rope_pt_size = input_size if rope_pt_size is None else rope_pt_size
        scale_pos = rope_pt_size[0] / input_size[0] if rope_interp else 1.0
        freqs_cis = compute_axial_cis(self.head_dim, input_size[0], input_size[1], rope_theta, scale_pos)
        self.register_buffer("freqs_cis", freqs_cis)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, _ = x.shape
        L = H * W
        q, k, v = self.qkv(x).reshape(B, L, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if self.use_rope:
            q, k = apply_rotary_enc(q, k, self.freqs_cis)
        x = F.scaled_dot_product_attention(q, k, v)  # [B, heads, L, head_dim]
        x = x.view(B, self.num_heads, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1)
        return self.proj(x)


class Block(nn.Module):
    """Pre-norm ViT block, windowed when ``window_size > 0``; x is [B, H, W, C]."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
        act_layer: Callable[..., nn.Module] = nn.GELU,
        window_size: int = 0,
        input_size: Optional[Tuple[int, int]] = None,
        use_rope: bool = False,
        rope_pt_size: Optional[Tuple[int, int]] = None,
        rope_interp: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            input_size=input_size if window_size == 0 else (window_size, window_size),
            use_rope=use_rope,
            rope_pt_size=rope_pt_size,
            rope_interp=rope_interp,
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=dropout)
        self.dropout = nn.Dropout(dropout)
        self.window_size = window_size

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            H, W = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (H, W))
        x = shortcut + self.dropout(self.drop_path(x))
        return x + self.dropout(self.drop_path(self.mlp(self.norm2(x))))


class ViT(nn.Module):
    """Plain ViT trunk. ``forward(x)`` with images [B, 3, img_size, img_size] returns a
    one-element list: the features after the last global block, [B, embed_dim, H/p, W/p]."""

    def __init__(
        self,
        img_size: int = 1024,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.0,
        norm_layer: Union[Callable[..., nn.Module], str] = "LayerNorm",
        act_layer: Callable[..., nn.Module] = nn.GELU,
        use_abs_pos: bool = True,
        tile_abs_pos: bool = True,
        window_size: int = 14,
        global_att_blocks: Tuple[int, ...] = (2, 5, 8, 11),
        use_rope: bool = False,
        rope_pt_size: Optional[int] = None,
        use_interp_rope: bool = False,
        pretrain_img_size: int = 224,
        pretrain_use_cls_token: bool = True,
        dropout: float = 0.0,
        ln_pre: bool = False,
        ln_post: bool = False,
        bias_patch_embed: bool = True,
        use_act_checkpoint: bool = True,
    ):
        super().__init__()
        if not global_att_blocks or max(global_att_blocks) >= depth:
            raise ValueError(f"ViT: global_att_blocks {tuple(global_att_blocks)} must be block indices below {depth}")
        if isinstance(norm_layer, str):
            norm_layer = partial(getattr(nn, norm_layer), eps=1e-5)
        self.pretrain_use_cls_token = pretrain_use_cls_token
        self.full_attn_ids = list(global_att_blocks)
        self.patch_embed = PatchEmbed(
            (patch_size, patch_size),
            (patch_size, patch_size),
            in_chans=in_chans,
            embed_dim=embed_dim,
            bias=bias_patch_embed,
        )
        self.tile_abs_pos = tile_abs_pos
        self.pos_embed = None
        if use_abs_pos:
            num_positions = (pretrain_img_size // patch_size) ** 2 + int(pretrain_use_cls_token)
            self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        drop_path_rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        grid = (img_size // patch_size, img_size // patch_size)
        rope_pt = (window_size, window_size) if rope_pt_size is None else (rope_pt_size, rope_pt_size)
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias,
                drop_path=drop_path_rates[i],
                norm_layer=norm_layer,
                act_layer=act_layer,
                window_size=0 if i in self.full_attn_ids else window_size,
                input_size=grid,
                use_rope=use_rope,
                rope_pt_size=rope_pt,
                rope_interp=use_interp_rope,
                dropout=dropout,
            )
            for i in range(depth)
        )
        self.use_act_checkpoint = use_act_checkpoint
        self.channel_list = [embed_dim]
        self.ln_pre = norm_layer(embed_dim) if ln_pre else nn.Identity()
        self.ln_post = norm_layer(embed_dim) if ln_post else nn.Identity()
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.zeros_(m.bias)
            nn.init.ones_(m.weight)

    def forward(self, x: Tensor) -> List[Tensor]:
        x = self.patch_embed(x)  # [B, H, W, C]
        if self.pos_embed is not None:
            hw = (x.shape[1], x.shape[2])
            x = x + get_abs_pos(self.pos_embed, self.pretrain_use_cls_token, hw, tiling=self.tile_abs_pos)
        x = self.ln_pre(x)
        last = self.full_attn_ids[-1]
        for blk in self.blocks[: last + 1]:
            if self.use_act_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return [self.ln_post(x).permute(0, 3, 1, 2)]
