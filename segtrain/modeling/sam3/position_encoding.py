"""Sine position encodings of SAM 3: of feature maps, of points and of boxes (DETR style)."""

from typing import Optional

import torch
from torch import Tensor

from segtrain.layers.position_encoding import PositionEmbeddingSine as SinePositionEncoding

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(SinePositionEncoding):
    """The official SAM 3 constructor of the shared sine encoding (``segtrain.layers``), with its
    point and box encodings: ``num_pos_feats`` channels in all, half for y then half for x.

    ``forward(x)`` with x [B, C, H, W] returns [B, num_pos_feats, H, W] (normalized positions
    ``(i + 1) / (H + 1e-6) * scale``); maps of a size already seen come from a cache.
    """

    def __init__(
        self,
        num_pos_feats: int,
        temperature: int = 10000,
        normalize: bool = True,
        scale: Optional[float] = None,
        precompute_resolution: Optional[int] = None,
    ):
        if num_pos_feats % 2 != 0:
            raise ValueError(f"PositionEmbeddingSine: num_pos_feats must be even, got {num_pos_feats}")
        super().__init__(num_pos_feats // 2, temperature, normalize, scale)
        # The official module fills its cache on CUDA at construction; here it fills on first use.
        self.precompute_resolution = precompute_resolution

    def _encode_xy(self, x: Tensor, y: Tensor):
        """Encodings [N, num_pos_feats / 2 * 2] of normalized x and y coordinates [N]."""
        dim_t = self.dim_t(x.device)
        pos_x = self.interleave((x * self.scale)[:, None] / dim_t)
        pos_y = self.interleave((y * self.scale)[:, None] / dim_t)
        return pos_x, pos_y

    @torch.no_grad()
    def encode_boxes(self, x: Tensor, y: Tensor, w: Tensor, h: Tensor) -> Tensor:
        """Box encodings [N, num_pos_feats + 2]: (pos_y, pos_x, h, w) of centers and sizes [N]."""
        pos_x, pos_y = self._encode_xy(x, y)
        return torch.cat((pos_y, pos_x, h[:, None], w[:, None]), dim=1)

    encode = encode_boxes

    @torch.no_grad()
    def encode_points(self, x: Tensor, y: Tensor, labels: Tensor) -> Tensor:
        """Point encodings [B, N, num_pos_feats + 1]: (pos_y, pos_x, label) of points [B, N]."""
        if not (x.shape == y.shape == labels.shape):
            raise ValueError(f"encode_points: shapes {tuple(x.shape)}, {tuple(y.shape)}, {tuple(labels.shape)} differ")
        pos_x, pos_y = self._encode_xy(x.flatten(), y.flatten())
        pos_x, pos_y = pos_x.reshape(*x.shape, -1), pos_y.reshape(*y.shape, -1)
        return torch.cat((pos_y, pos_x, labels[:, :, None]), dim=2)
