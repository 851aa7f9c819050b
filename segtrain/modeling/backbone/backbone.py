"""``Backbone``: the interface every backbone implements."""

from abc import ABCMeta, abstractmethod
from typing import Dict

import torch
from torch import nn

from segtrain.structures.shape_spec import ShapeSpec

__all__ = ["Backbone"]


class Backbone(nn.Module, metaclass=ABCMeta):
    """A network mapping images [B, 3, H, W] to named feature maps.

    Subclasses set ``self._out_features`` (names, e.g. ["res2", ..., "res5"]),
    ``self._out_feature_channels`` and ``self._out_feature_strides`` (dicts by name) and
    implement ``forward(x) -> {name: [B, C_name, H / stride_name, W / stride_name]}``.
    """

    @abstractmethod
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    @property
    def size_divisibility(self) -> int:
        """Input H and W must be multiples of this (0 = no constraint); the model pads to it."""
        return 0

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """{name: ShapeSpec(channels, stride)} of every output feature."""
        return {
            name: ShapeSpec(channels=self._out_feature_channels[name], stride=self._out_feature_strides[name])
            for name in self._out_features
        }
