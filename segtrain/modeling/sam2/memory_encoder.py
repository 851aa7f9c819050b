"""SAM 2 memory encoder: a frame's (unconditioned) image embedding fused with its predicted
mask into a ``mem_dim``-channel memory map, with its position encoding."""

import math
from typing import Tuple

import torch
from torch import Tensor, nn

from .common import LayerNorm2d, sine_pos_2d

__all__ = ["MaskDownSampler", "CXBlock", "MemoryEncoder"]


class MaskDownSampler(nn.Module):
    """Mask [N, 1, H, W] -> [N, embed_dim, H / total_stride, W / total_stride] with
    log2(total_stride) stride-2 3x3 convs (x4 channels each, LayerNorm2d + GELU) and a 1x1."""

    def __init__(self, embed_dim: int, total_stride: int):
        super().__init__()
        num_layers = int(round(math.log2(total_stride)))
        if 2**num_layers != total_stride:
            raise ValueError(f"MaskDownSampler: total_stride must be a power of 2, got {total_stride}")
        layers = []
        c_in = 1
        for _ in range(num_layers):
            c_out = c_in * 4
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1), LayerNorm2d(c_out), nn.GELU()]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, LayerNorm, pointwise MLP (x4), layer scale, residual."""

    def __init__(self, dim: int, kernel_size: int = 7, layer_scale_init_value: float = 1e-6):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class MemoryEncoder(nn.Module):
    """forward(pix_feat [N, C, h, w], masks [N, 1, H, W] (already squashed to ~[0,1] and
    scaled by the caller, SAM 2's ``skip_mask_sigmoid=True`` path)) -> (memory
    [N, mem_dim, h, w], position encoding [N, mem_dim, h, w])."""

    def __init__(self, in_dim: int, mem_dim: int, total_stride: int, num_fuser_layers: int = 2):
        super().__init__()
        self.mask_downsampler = MaskDownSampler(in_dim, total_stride)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = nn.Sequential(*[CXBlock(in_dim) for _ in range(num_fuser_layers)])
        self.out_proj = nn.Conv2d(in_dim, mem_dim, kernel_size=1) if mem_dim != in_dim else nn.Identity()
        self.mem_dim = mem_dim

    def forward(self, pix_feat: Tensor, masks: Tensor) -> Tuple[Tensor, Tensor]:
        m = self.mask_downsampler(masks)
        if m.shape[-2:] != pix_feat.shape[-2:]:
            raise ValueError(
                f"MemoryEncoder: mask downsampled to {tuple(m.shape[-2:])}, features are {tuple(pix_feat.shape[-2:])}"
            )
        x = self.out_proj(self.fuser(self.pix_feat_proj(pix_feat) + m))
        pos = sine_pos_2d(self.mem_dim, x.shape[-2], x.shape[-1], device=x.device).to(x.dtype)
        return x, pos.unsqueeze(0).expand(x.shape[0], -1, -1, -1)
