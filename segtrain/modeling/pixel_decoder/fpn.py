"""``BasePixelDecoder``: a plain FPN pixel decoder (MaskFormer), for small configs."""

import logging
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from segtrain.config import configurable
from segtrain.layers.norm import get_norm
from segtrain.layers.wrappers import Conv2d, c2_xavier_fill
from segtrain.structures.shape_spec import ShapeSpec

from .build import PIXEL_DECODER_REGISTRY

__all__ = ["BasePixelDecoder"]

logger = logging.getLogger(__name__)


def fpn_lateral_and_output_convs(in_channels: int, conv_dim: int, norm: str) -> Tuple[Conv2d, Conv2d]:
    """One FPN level: a 1x1 lateral conv ``in_channels -> conv_dim`` and a 3x3 output conv with
    ReLU, both with ``norm`` (a bias only when there is no norm), c2-Xavier initialized."""
    use_bias = norm == "" or norm is None
    lateral_conv = Conv2d(in_channels, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim))
    output_conv = Conv2d(
        conv_dim,
        conv_dim,
        kernel_size=3,
        stride=1,
        padding=1,
        bias=use_bias,
        norm=get_norm(norm, conv_dim),
        activation=F.relu,
    )
    c2_xavier_fill(lateral_conv)
    c2_xavier_fill(output_conv)
    return lateral_conv, output_conv


@PIXEL_DECODER_REGISTRY.register()
class BasePixelDecoder(nn.Module):
    """Top-down FPN over the input features (official names ``adapter_{i}`` lateral 1x1
    and ``layer_{i}`` output 3x3 convs, i = 1 for the finest level; the coarsest level has
    only ``layer_{n}``), then ``mask_features`` (3x3 conv).

    forward_features({name: [B, C_name, H / s, W / s]}) -> (mask_features [B, mask_dim,
    H / s_min, W / s_min], None, multi_scale_features: list of 3 maps [B, conv_dim, h, w]
    from the coarsest level down, i.e. strides 32, 16, 8 for res2..res5).
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
    ):
        super().__init__()
        input_shape = sorted(input_shape.items(), key=lambda x: x[1].stride)
        self.in_features = [k for k, v in input_shape]  # "res2" ... "res5"
        feature_channels = [v.channels for k, v in input_shape]

        lateral_convs: List[Optional[nn.Module]] = []
        output_convs: List[nn.Module] = []
        use_bias = norm == "" or norm is None
        for idx, in_channels in enumerate(feature_channels):
            if idx == len(self.in_features) - 1:
                output_conv = Conv2d(
                    in_channels,
                    conv_dim,
                    kernel_size=3,
                    stride=1,
                    padding=1,
                    bias=use_bias,
                    norm=get_norm(norm, conv_dim),
                    activation=F.relu,
                )
                c2_xavier_fill(output_conv)
                self.add_module(f"layer_{idx + 1}", output_conv)
                lateral_convs.append(None)
                output_convs.append(output_conv)
            else:
                lateral_conv, output_conv = fpn_lateral_and_output_convs(in_channels, conv_dim, norm)
                self.add_module(f"adapter_{idx + 1}", lateral_conv)
                self.add_module(f"layer_{idx + 1}", output_conv)
                lateral_convs.append(lateral_conv)
                output_convs.append(output_conv)
        # Plain lists in top-down order (coarsest first); the modules are registered above
        # under their official names, which is what checkpoints see.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=3, stride=1, padding=1)
        c2_xavier_fill(self.mask_features)
        self.maskformer_num_feature_levels = 3  # always use 3 scales

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES},
            "conv_dim": cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "norm": cfg.MODEL.SEM_SEG_HEAD.NORM,
        }

    def forward_features(self, features: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, None, List[torch.Tensor]]:
        multi_scale_features = []
        y = None
        for idx, f in enumerate(self.in_features[::-1]):  # coarsest first
            x = features[f]
            lateral_conv = self.lateral_convs[idx]
            output_conv = self.output_convs[idx]
            if lateral_conv is None:
                y = output_conv(x)
            else:
                cur_fpn = lateral_conv(x)
                # nearest upsampling, following FPN
                y = cur_fpn + F.interpolate(y, size=cur_fpn.shape[-2:], mode="nearest")
                y = output_conv(y)
            if len(multi_scale_features) < self.maskformer_num_feature_levels:
                multi_scale_features.append(y)
        return self.mask_features(y), None, multi_scale_features

    def forward(self, features: Dict[str, torch.Tensor]):
        """Same as ``forward_features`` (the MaskFormer head calls that one)."""
        return self.forward_features(features)
