"""SAM 2 memory encoder (the official ``memory_encoder.py``): a frame's image embedding fused
with its predicted mask into a ``out_dim``-channel memory map, with its position encoding.
The mask is downsampled by ``MaskDownSampler`` and added to the projected features, then the
``Fuser`` (ConvNeXt ``CXBlock``s) mixes them."""

import math
from typing import Dict, List, Type

import torch
from torch import Tensor, nn

from .common import DropPath, LayerNorm2d, get_clones

__all__ = ["MaskDownSampler", "CXBlock", "Fuser", "MemoryEncoder"]


class MaskDownSampler(nn.Module):
    """Mask [N, 1, H, W] -> [N, embed_dim, H / total_stride, W / total_stride]:
    log_stride(total_stride) convs (``stride`` each, channels x stride^2, LayerNorm2d +
    activation), then a 1x1 conv to ``embed_dim``."""

    def __init__(
        self,
        embed_dim: int = 256,
        kernel_size: int = 4,
        stride: int = 4,
        padding: int = 0,
        total_stride: int = 16,
        activation: Type[nn.Module] = nn.GELU,
    ):
        super().__init__()
        num_layers = int(math.log2(total_stride) // math.log2(stride))
        if stride**num_layers != total_stride:
            raise ValueError(f"MaskDownSampler: total_stride {total_stride} is not a power of stride {stride}")
        self.encoder = nn.Sequential()
        mask_in_chans, mask_out_chans = 1, 1
        for _ in range(num_layers):
            mask_out_chans = mask_in_chans * (stride**2)
            self.encoder.append(
                nn.Conv2d(mask_in_chans, mask_out_chans, kernel_size=kernel_size, stride=stride, padding=padding)
            )
            self.encoder.append(LayerNorm2d(mask_out_chans))
            self.encoder.append(activation())
            mask_in_chans = mask_out_chans
        self.encoder.append(nn.Conv2d(mask_out_chans, embed_dim, kernel_size=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise conv, LayerNorm, pointwise MLP (x4, GELU), layer scale
    ``gamma``, residual. [N, dim, H, W] -> same."""

    def __init__(
        self,
        dim: int,
        kernel_size: int = 7,
        padding: int = 3,
        drop_path: float = 0.0,
        layer_scale_init_value: float = 1e-6,
        use_dwconv: bool = True,
    ):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding, groups=dim if use_dwconv else 1)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)  # pointwise convs as linear layers (channels last)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = (
            nn.Parameter(layer_scale_init_value * torch.ones(dim), requires_grad=True)
            if layer_scale_init_value > 0
            else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = self.gamma * y
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class Fuser(nn.Module):
    """An optional 1x1 input projection, then ``num_layers`` copies of ``layer``."""

    def __init__(self, layer: nn.Module, num_layers: int, dim: int = None, input_projection: bool = False):
        super().__init__()
        self.proj = nn.Identity()
        self.layers = get_clones(layer, num_layers)
        if input_projection:
            if dim is None:
                raise ValueError("Fuser: input_projection needs dim")
            self.proj = nn.Conv2d(dim, dim, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.proj(x)
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """forward(pix_feat [N, in_dim, h, w], masks [N, 1, H, W] logits (or already squashed
    with ``skip_mask_sigmoid``)) -> {"vision_features": [N, out_dim, h, w],
    "vision_pos_enc": [[N, out_dim, h, w]]}."""

    def __init__(
        self,
        out_dim: int,
        mask_downsampler: nn.Module,
        fuser: nn.Module,
        position_encoding: nn.Module,
        in_dim: int = 256,
    ):
        super().__init__()
        self.mask_downsampler = mask_downsampler
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = fuser
        self.position_encoding = position_encoding
        self.out_proj = nn.Identity()
        if out_dim != in_dim:
            self.out_proj = nn.Conv2d(in_dim, out_dim, kernel_size=1)

    def forward(self, pix_feat: Tensor, masks: Tensor, skip_mask_sigmoid: bool = False) -> Dict[str, object]:
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        masks = self.mask_downsampler(masks)
        if masks.shape[-2:] != pix_feat.shape[-2:]:
            raise ValueError(
                f"MemoryEncoder: mask downsampled to {tuple(masks.shape[-2:])}, features are "
                f"{tuple(pix_feat.shape[-2:])}"
            )
        x = self.pix_feat_proj(pix_feat.to(masks.device)) + masks
        x = self.out_proj(self.fuser(x))
        pos: List[Tensor] = [self.position_encoding(x).to(x.dtype)]
        return {"vision_features": x, "vision_pos_enc": pos}
