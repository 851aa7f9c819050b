"""Image encoder of SAM 2 (the official ``backbones/image_encoder.py``): ``ImageEncoder`` =
trunk (``Hiera``) + ``FpnNeck``, minus the ``scalp`` coarsest levels; plus the tiny conv
backbone the CPU project configs use as a trunk.

The neck's outputs are finest first; the last one kept is the image embedding the memory
attention and the mask decoder work on, the finer ones are the decoder's high-resolution skip
features (``backbone_fpn``).
"""

import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.modeling.backbone import BACKBONE_REGISTRY, Backbone
from segtrain.structures.shape_spec import ShapeSpec
from segtrain.utils.errors import ConfigError

__all__ = ["TinyConvBackbone", "build_tiny_conv_backbone", "FpnNeck", "ImageEncoder"]


def _gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, c), c)


class _ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.norm1 = _gn(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.norm2 = _gn(c)

    def forward(self, x: Tensor) -> Tensor:
        y = F.gelu(self.norm1(self.conv1(x)))
        return F.gelu(x + self.norm2(self.conv2(y)))


class TinyConvBackbone(Backbone):
    """A few stride-2 conv stages with GroupNorm and residual blocks (trains from scratch at
    small batch sizes). Stage ``i`` (1-based) has stride ``2**i`` and is named ``stage{i}``.

    channels: per stage; blocks: residual blocks per stage after its stride-2 conv.
    forward(x [B, C_in, H, W]) -> {"stage{i}": [B, channels[i-1], H / 2**i, W / 2**i]}.
    """

    def __init__(self, in_channels: int, channels: Sequence[int], blocks: Sequence[int], out_features: Sequence[str]):
        super().__init__()
        if len(channels) != len(blocks) or not channels:
            raise ConfigError(
                f"MODEL.SAM2.TINY_BACKBONE: CHANNELS {list(channels)} and BLOCKS {list(blocks)} need the same, "
                "non-zero length"
            )
        names = [f"stage{i + 1}" for i in range(len(channels))]
        unknown = [f for f in out_features if f not in names]
        if unknown:
            raise ValueError(f"TinyConvBackbone: unknown output feature(s) {unknown}; valid: {names}")
        self.stages = nn.ModuleList()
        c_in = in_channels
        for c, n in zip(channels, blocks):
            layers: List[nn.Module] = [nn.Conv2d(c_in, c, 3, stride=2, padding=1, bias=False), _gn(c), nn.GELU()]
            layers += [_ResBlock(c) for _ in range(n)]
            self.stages.append(nn.Sequential(*layers))
            c_in = c
        self._names = names
        self._out_features = list(out_features)
        self._out_feature_channels = {n: c for n, c in zip(names, channels)}
        self._out_feature_strides = {n: 2 ** (i + 1) for i, n in enumerate(names)}
        # widths of the outputs, coarsest first (a SAM 2 neck's backbone_channel_list)
        self.channel_list = [self._out_feature_channels[n] for n in names if n in self._out_features][::-1]

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        out = {}
        for name, stage in zip(self._names, self.stages):
            x = stage(x)
            if name in self._out_features:
                out[name] = x
        return out


@BACKBONE_REGISTRY.register()
def build_tiny_conv_backbone(cfg, input_shape: ShapeSpec = None) -> TinyConvBackbone:
    """``TinyConvBackbone`` from ``MODEL.SAM2.TINY_BACKBONE``, every stage an output."""
    tb = cfg.MODEL.SAM2.TINY_BACKBONE
    in_channels = input_shape.channels if input_shape is not None and input_shape.channels else 3
    names = [f"stage{i + 1}" for i in range(len(tb.CHANNELS))]
    return TinyConvBackbone(in_channels, tb.CHANNELS, tb.BLOCKS, names)


class FpnNeck(nn.Module):
    """FPN without output convs: a 1x1 lateral conv per level to ``d_model`` channels and a
    top-down pathway (2x upsampling of the coarser output + sum, or average) on the levels
    in ``fpn_top_down_levels`` only (default: all).

    backbone_channel_list: channels of the trunk levels, coarsest first (``convs[0]`` is the
    coarsest level's). forward(xs: list of maps, finest first, each half the previous size)
    -> (outputs [B, d_model, h_i, w_i] finest first, their position encodings)."""

    def __init__(
        self,
        position_encoding: nn.Module,
        d_model: int,
        backbone_channel_list: Sequence[int],
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        fpn_interp_model: str = "bilinear",
        fuse_type: str = "sum",
        fpn_top_down_levels: Optional[Sequence[int]] = None,
    ):
        super().__init__()
        if fuse_type not in ("sum", "avg"):
            raise ValueError(f"FpnNeck: fuse_type must be 'sum' or 'avg', got {fuse_type!r}")
        self.position_encoding = position_encoding
        self.backbone_channel_list = list(backbone_channel_list)
        self.d_model = d_model
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:
            current = nn.Sequential()
            current.add_module("conv", nn.Conv2d(dim, d_model, kernel_size, stride=stride, padding=padding))
            self.convs.append(current)
        self.fpn_interp_model = fpn_interp_model
        self.fuse_type = fuse_type
        if fpn_top_down_levels is None:
            fpn_top_down_levels = range(len(self.convs))
        self.fpn_top_down_levels = list(fpn_top_down_levels)

    def forward(self, xs: Sequence[Tensor]):
        if len(xs) != len(self.convs):
            raise ValueError(f"FpnNeck: {len(xs)} feature maps for {len(self.convs)} levels")
        out: List[Tensor] = [None] * len(self.convs)  # type: ignore[list-item]
        pos: List[Tensor] = [None] * len(self.convs)  # type: ignore[list-item]
        prev = None
        n = len(self.convs) - 1
        for i in range(n, -1, -1):
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and prev is not None:
                top_down = F.interpolate(
                    prev.to(dtype=torch.float32),
                    scale_factor=2.0,
                    mode=self.fpn_interp_model,
                    align_corners=None if self.fpn_interp_model == "nearest" else False,
                    antialias=False,
                )
                prev = lateral + top_down
                if self.fuse_type == "avg":
                    prev = prev / 2
            else:
                prev = lateral
            out[i] = prev
            pos[i] = self.position_encoding(prev).to(prev.dtype)
        return out, pos


class ImageEncoder(nn.Module):
    """trunk + neck. forward(images [B, 3, H, W] normalized) -> {"vision_features": the
    coarsest kept level [B, d_model, h, w], "vision_pos_enc": position encodings of the kept
    levels, "backbone_fpn": the kept levels, finest first}; ``scalp`` drops the coarsest ones."""

    def __init__(self, trunk: nn.Module, neck: nn.Module, scalp: int = 0):
        super().__init__()
        if list(trunk.channel_list) != list(neck.backbone_channel_list):
            raise ValueError(
                f"ImageEncoder: trunk channels {list(trunk.channel_list)} do not match the neck's "
                f"backbone_channel_list {list(neck.backbone_channel_list)}"
            )
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, sample: Tensor) -> Dict[str, object]:
        features = self.trunk(sample)
        if isinstance(features, dict):  # a segtrain Backbone: {name: map}, finest first
            features = list(features.values())
        features, pos = self.neck(features)
        if self.scalp > 0:
            features, pos = features[: -self.scalp], pos[: -self.scalp]
        return {"vision_features": features[-1], "vision_pos_enc": pos, "backbone_fpn": features}
