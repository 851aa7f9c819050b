"""``MSDeformAttnPixelDecoder``: Mask2Former's pixel decoder (deformable-attention encoder
over res3-res5 + FPN levels down to ``common_stride``). Parameter names match the
official checkpoints (``input_proj.{i}.{0,1}``, ``transformer.level_embed``,
``transformer.encoder.layers.{i}.*``, ``adapter_1``, ``layer_1``, ``mask_features``)."""

import copy
import logging
import math
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from segtrain.config import configurable
from segtrain.layers.ms_deform_attn import MSDeformAttn
from segtrain.layers.position_encoding import PositionEmbeddingSine
from segtrain.layers.wrappers import Conv2d, Linear, c2_xavier_fill
from segtrain.modeling.pixel_decoder.build import PIXEL_DECODER_REGISTRY
from segtrain.modeling.pixel_decoder.fpn import fpn_lateral_and_output_convs
from segtrain.structures.shape_spec import ShapeSpec
from segtrain.utils.errors import ConfigError

__all__ = [
    "MSDeformAttnPixelDecoder",
    "MSDeformAttnTransformerEncoderOnly",
    "MSDeformAttnTransformerEncoderLayer",
    "MSDeformAttnTransformerEncoder",
]

logger = logging.getLogger(__name__)

_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}


class MSDeformAttnTransformerEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention + FFN.

    forward(src [N, S, C], pos [N, S, C], reference_points [N, S, L, 2], spatial_shapes
    [L, 2], level_start_index [L], padding_mask [N, S] or None, spatial_shapes_list: the
    same shapes as Python ints or None) -> [N, S, C].
    """

    def __init__(
        self,
        d_model: int = 256,
        d_ffn: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
    ):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; valid: {', '.join(_ACTIVATIONS)}")
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = Linear(d_model, d_ffn)
        self.activation = _ACTIVATIONS[activation]
        self.dropout2 = nn.Dropout(dropout)
        self.linear2 = Linear(d_ffn, d_model)
        self.dropout3 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask=None, spatial_shapes_list=None
    ):
        src2 = self.self_attn(
            src if pos is None else src + pos,
            reference_points,
            src,
            spatial_shapes,
            level_start_index,
            padding_mask,
            spatial_shapes_list=spatial_shapes_list,
        )
        src = self.norm1(src + self.dropout1(src2))
        src2 = self.linear2(self.dropout2(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout3(src2))


class MSDeformAttnTransformerEncoder(nn.Module):
    """``num_layers`` copies of ``encoder_layer`` (as ``layers.{i}``) on a shared set of
    reference points (the pixel centres of every level)."""

    def __init__(self, encoder_layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(encoder_layer) for _ in range(num_layers)])
        self.num_layers = num_layers

    @staticmethod
    def get_reference_points(spatial_shapes, valid_ratios: torch.Tensor, device) -> torch.Tensor:
        """Pixel centres of every level in [0, 1] image coordinates, scaled per level by the
        valid (unpadded) ratios. spatial_shapes [L, 2] tensor or list of (H, W) ints;
        valid_ratios [N, L, 2] (w, h). Returns [N, S, L, 2] (x, y)."""
        if isinstance(spatial_shapes, torch.Tensor):
            spatial_shapes = spatial_shapes.tolist()
        reference_points_list = []
        for lvl, (h, w) in enumerate(spatial_shapes):
            ref_y, ref_x = torch.meshgrid(
                torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device),
                torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device),
                indexing="ij",
            )
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            reference_points_list.append(torch.stack((ref_x, ref_y), -1))
        reference_points = torch.cat(reference_points_list, 1)
        return reference_points[:, :, None] * valid_ratios[:, None]

    def forward(
        self,
        src,
        spatial_shapes,
        level_start_index,
        valid_ratios,
        pos=None,
        padding_mask=None,
        spatial_shapes_list=None,
    ):
        """``spatial_shapes_list``: the (H, W) of each level as Python ints, if known (saves a
        device -> host copy of ``spatial_shapes`` per layer)."""
        output = src
        shapes = spatial_shapes_list if spatial_shapes_list is not None else spatial_shapes
        reference_points = self.get_reference_points(shapes, valid_ratios, device=src.device)
        for layer in self.layers:
            output = layer(
                output,
                pos,
                reference_points,
                spatial_shapes,
                level_start_index,
                padding_mask,
                spatial_shapes_list=spatial_shapes_list,
            )
        return output


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Deformable-DETR encoder over several feature levels with a learned ``level_embed``.

    forward(srcs: list of L maps [N, C, H_l, W_l], pos_embeds: same shapes) ->
    (memory [N, S, C] with S = sum H_l * W_l, spatial_shapes [L, 2] long,
    level_start_index [L] long).
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        dim_feedforward: int = 1024,
        dropout: float = 0.1,
        activation: str = "relu",
        num_feature_levels: int = 4,
        enc_n_points: int = 4,
    ):
        super().__init__()
        self.d_model = d_model
        self.nhead = nhead
        encoder_layer = MSDeformAttnTransformerEncoderLayer(
            d_model, dim_feedforward, dropout, activation, num_feature_levels, nhead, enc_n_points
        )
        self.encoder = MSDeformAttnTransformerEncoder(encoder_layer, num_encoder_layers)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Official order: Xavier on every matrix, then MSDeformAttn's own init on top.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m._reset_parameters()
        nn.init.normal_(self.level_embed)

    @staticmethod
    def get_valid_ratio(mask: torch.Tensor) -> torch.Tensor:
        """mask [N, H, W] True=padding -> [N, 2] (valid width fraction, valid height fraction)."""
        _, H, W = mask.shape
        valid_H = torch.sum(~mask[:, :, 0], 1)
        valid_W = torch.sum(~mask[:, 0, :], 1)
        return torch.stack([valid_W.float() / W, valid_H.float() / H], -1)

    def forward(self, srcs: List[torch.Tensor], pos_embeds: List[torch.Tensor]):
        # No padding masks (as official Mask2Former): the batch is padded with zeros upstream.
        masks = [torch.zeros((x.size(0), x.size(2), x.size(3)), device=x.device, dtype=torch.bool) for x in srcs]
        src_flatten, mask_flatten, lvl_pos_embed_flatten, spatial_shapes = [], [], [], []
        for lvl, (src, mask, pos_embed) in enumerate(zip(srcs, masks, pos_embeds)):
            _, _, h, w = src.shape
            spatial_shapes.append((h, w))
            src_flatten.append(src.flatten(2).transpose(1, 2))
            mask_flatten.append(mask.flatten(1))
            lvl_pos_embed_flatten.append(pos_embed.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1))
        src_flatten = torch.cat(src_flatten, 1)
        mask_flatten = torch.cat(mask_flatten, 1)
        lvl_pos_embed_flatten = torch.cat(lvl_pos_embed_flatten, 1)
        shapes_list = list(spatial_shapes)  # Python ints: the encoder needs no device -> host copy
        spatial_shapes = torch.as_tensor(spatial_shapes, dtype=torch.long).to(src_flatten.device, non_blocking=True)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        valid_ratios = torch.stack([self.get_valid_ratio(m) for m in masks], 1)
        memory = self.encoder(
            src_flatten,
            spatial_shapes,
            level_start_index,
            valid_ratios,
            lvl_pos_embed_flatten,
            mask_flatten,
            spatial_shapes_list=shapes_list,
        )
        return memory, spatial_shapes, level_start_index


@PIXEL_DECODER_REGISTRY.register()
class MSDeformAttnPixelDecoder(nn.Module):
    """Mask2Former pixel decoder.

    The ``transformer_in_features`` (default res3..res5) are projected to ``conv_dim``
    (``input_proj.{i}``: 1x1 conv + GroupNorm(32), i = 0 for the coarsest), encoded jointly by
    the deformable-attention encoder, then the finer inputs (res2) are merged FPN-style
    (``adapter_{i}`` / ``layer_{i}``) down to ``common_stride``.

    forward_features({name: [B, C_name, H / s, W / s]}) ->
      mask_features [B, mask_dim, H / common_stride, W / common_stride],
      transformer_encoder_features [B, conv_dim, H / 32, W / 32] (the coarsest encoder output),
      multi_scale_features: list of 3 maps [B, conv_dim, h_i, w_i], coarsest first
      (strides 32, 16, 8 for the default features).
    Runs in float32 even under autocast (as official: deformable attention sums many
    small weighted terms).
    """

    @configurable
    def __init__(
        self,
        input_shape: Dict[str, ShapeSpec],
        *,
        transformer_dropout: float,
        transformer_nheads: int,
        transformer_dim_feedforward: int,
        transformer_enc_layers: int,
        conv_dim: int,
        mask_dim: int,
        norm: Optional[Union[str, Callable]] = None,
        transformer_in_features: List[str],
        common_stride: int,
        transformer_n_points: int = 4,
    ):
        super().__init__()
        missing = [f for f in transformer_in_features if f not in input_shape]
        if missing:
            raise ConfigError(
                f"MSDeformAttnPixelDecoder: transformer input features {missing} are not among the decoder inputs "
                f"{sorted(input_shape)} (MODEL.SEM_SEG_HEAD.IN_FEATURES / DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES)"
            )
        transformer_input_shape = {k: v for k, v in input_shape.items() if k in transformer_in_features}
        input_shape = sorted(input_shape.items(), key=lambda x: x[1].stride)
        self.in_features = [k for k, v in input_shape]  # finest first: "res2" ... "res5"
        self.feature_strides = [v.stride for k, v in input_shape]
        self.feature_channels = [v.channels for k, v in input_shape]

        transformer_input_shape = sorted(transformer_input_shape.items(), key=lambda x: x[1].stride)
        self.transformer_in_features = [k for k, v in transformer_input_shape]
        transformer_in_channels = [v.channels for k, v in transformer_input_shape]
        self.transformer_feature_strides = [v.stride for k, v in transformer_input_shape]
        self.transformer_num_feature_levels = len(self.transformer_in_features)

        # One projection per encoder level, coarsest first (res5 -> res3), as official.
        self.input_proj = nn.ModuleList(
            [
                nn.Sequential(Conv2d(in_channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
                for in_channels in transformer_in_channels[::-1]
            ]
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)

        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            dropout=transformer_dropout,
            nhead=transformer_nheads,
            dim_feedforward=transformer_dim_feedforward,
            num_encoder_layers=transformer_enc_layers,
            num_feature_levels=self.transformer_num_feature_levels,
            enc_n_points=transformer_n_points,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)

        self.mask_dim = mask_dim
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1, stride=1, padding=0)
        c2_xavier_fill(self.mask_features)

        self.maskformer_num_feature_levels = 3  # always use 3 scales
        self.common_stride = common_stride

        # Extra FPN levels from the finest encoder stride down to common_stride.
        stride = min(self.transformer_feature_strides)
        self.num_fpn_levels = max(int(round(math.log2(stride) - math.log2(self.common_stride))), 0)

        lateral_convs, output_convs = [], []
        for idx, in_channels in enumerate(self.feature_channels[: self.num_fpn_levels]):
            lateral_conv, output_conv = fpn_lateral_and_output_convs(in_channels, conv_dim, norm)
            self.add_module(f"adapter_{idx + 1}", lateral_conv)
            self.add_module(f"layer_{idx + 1}", output_conv)
            lateral_convs.append(lateral_conv)
            output_convs.append(output_conv)
        # Plain lists in top-down order; checkpoints see the official adapter_/layer_ names.
        self.lateral_convs = lateral_convs[::-1]
        self.output_convs = output_convs[::-1]

    @classmethod
    def from_config(cls, cfg, input_shape: Dict[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "conv_dim": head.CONVS_DIM,
            "mask_dim": head.MASK_DIM,
            "norm": head.NORM,
            "transformer_dropout": cfg.MODEL.MASK_FORMER.DROPOUT,
            "transformer_nheads": cfg.MODEL.MASK_FORMER.NHEADS,
            # Official: hard-coded 1024 for the deformable encoder (not MASK_FORMER.DIM_FEEDFORWARD)
            "transformer_dim_feedforward": head.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD,
            "transformer_enc_layers": head.TRANSFORMER_ENC_LAYERS,
            "transformer_in_features": list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES),
            "common_stride": head.COMMON_STRIDE,
            "transformer_n_points": head.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS,
        }

    def forward_features(
        self, features: Dict[str, torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor, List[torch.Tensor]]:
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward_features(features)

    def _forward_features(self, features):
        srcs, pos = [], []
        for idx, f in enumerate(self.transformer_in_features[::-1]):  # coarsest first
            x = features[f].float()
            srcs.append(self.input_proj[idx](x))
            pos.append(self.pe_layer(x))
        y, spatial_shapes, level_start_index = self.transformer(srcs, pos)
        bs = y.shape[0]

        # Split the encoder output back into levels: [B, C, H_l, W_l], coarsest first (the
        # shapes from the inputs themselves, not from spatial_shapes: no device -> host copy).
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        out = [
            z.transpose(1, 2).reshape(bs, -1, h, w)
            for z, (h, w) in zip(torch.split(y, [h * w for h, w in shapes], dim=1), shapes)
        ]

        # Extra FPN levels, coarse to fine
        for idx, f in enumerate(self.in_features[: self.num_fpn_levels][::-1]):
            x = features[f].float()
            cur_fpn = self.lateral_convs[idx](x)
            # bilinear upsampling of the finer encoder level, as official
            y = cur_fpn + F.interpolate(out[-1], size=cur_fpn.shape[-2:], mode="bilinear", align_corners=False)
            out.append(self.output_convs[idx](y))

        multi_scale_features = out[: self.maskformer_num_feature_levels]
        return self.mask_features(out[-1]), out[0], multi_scale_features

    def forward(self, features: Dict[str, torch.Tensor]):
        """Same as ``forward_features`` (the MaskFormer head calls that one)."""
        return self.forward_features(features)
