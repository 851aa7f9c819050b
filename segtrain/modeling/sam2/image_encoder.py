"""Image encoder of the SAM 2-style tracker: any registered backbone (``build_backbone``)
followed by an FPN neck, plus the tiny conv backbone the CPU project configs use.

The neck takes three backbone levels, finest first, each half the size of the previous one
(e.g. strides 2/4/8 of ``build_tiny_conv_backbone`` or res2/res3/res4 of a ResNet). The
coarsest level is the image embedding the memory attention and the mask decoder work on;
the two finer levels are the decoder's high-resolution skip features (SAM 2's ``backbone_fpn``).
"""

import math
from typing import Dict, List, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.modeling.backbone import BACKBONE_REGISTRY, Backbone
from segtrain.structures.shape_spec import ShapeSpec
from segtrain.utils.errors import ConfigError

from .common import sine_pos_2d

__all__ = ["TinyConvBackbone", "build_tiny_conv_backbone", "FpnNeck"]


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
            raise ConfigError(f"MODEL.SAM2.IN_FEATURES: unknown tiny backbone feature(s) {unknown}; valid: {names}")
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

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        out = {}
        for name, stage in zip(self._names, self.stages):
            x = stage(x)
            if name in self._out_features:
                out[name] = x
        return out


@BACKBONE_REGISTRY.register()
def build_tiny_conv_backbone(cfg, input_shape: ShapeSpec = None) -> TinyConvBackbone:
    """``TinyConvBackbone`` from ``MODEL.SAM2.TINY_BACKBONE`` with ``MODEL.SAM2.IN_FEATURES`` as outputs."""
    tb = cfg.MODEL.SAM2.TINY_BACKBONE
    in_channels = input_shape.channels if input_shape is not None and input_shape.channels else 3
    return TinyConvBackbone(in_channels, tb.CHANNELS, tb.BLOCKS, cfg.MODEL.SAM2.IN_FEATURES)


class FpnNeck(nn.Module):
    """Lateral 1x1 convs to ``d_model`` and a top-down pathway (nearest 2x upsampling + sum).

    in_shapes: ShapeSpec of the three levels, finest first, each of twice the previous stride.
    forward(features: list of 3 maps, finest first) -> (list of 3 maps [B, d_model, h_i, w_i],
    list of 3 sine position encodings [d_model, h_i, w_i]).
    """

    def __init__(self, in_shapes: Sequence[ShapeSpec], d_model: int):
        super().__init__()
        strides = [s.stride for s in in_shapes]
        if len(in_shapes) != 3 or any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ConfigError(
                f"MODEL.SAM2.IN_FEATURES must name 3 backbone levels of strides s, 2s, 4s (finest first); "
                f"got strides {strides}"
            )
        self.strides = strides
        self.lateral = nn.ModuleList(nn.Conv2d(s.channels, d_model, 1) for s in in_shapes)
        self.d_model = d_model

    def forward(self, features: Sequence[Tensor]):
        outs: List[Tensor] = [None] * len(features)  # type: ignore[list-item]
        prev = None
        for i in range(len(features) - 1, -1, -1):
            lat = self.lateral[i](features[i])
            if prev is not None:
                lat = lat + F.interpolate(prev, size=lat.shape[-2:], mode="nearest")
            outs[i] = prev = lat
        pos = [sine_pos_2d(self.d_model, o.shape[-2], o.shape[-1], device=o.device).to(o.dtype) for o in outs]
        return outs, pos
