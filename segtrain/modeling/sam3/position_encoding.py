"""Sine position encodings of SAM 3: of feature maps, of points and of boxes (DETR style)."""

import math
from typing import Optional

import torch
from torch import Tensor, nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """Sine/cosine encoding with ``num_pos_feats`` channels in all, half for y then half for x.

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
        super().__init__()
        if num_pos_feats % 2 != 0:
            raise ValueError(f"PositionEmbeddingSine: num_pos_feats must be even, got {num_pos_feats}")
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: scale needs normalize=True")
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale
        # The official module fills this cache on CUDA at construction; here it fills on first use.
        self.precompute_resolution = precompute_resolution
        self.cache = {}

    def _dim_t(self, device) -> Tensor:
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        return self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)

    @staticmethod
    def _interleave(pos: Tensor) -> Tensor:
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)

    def _encode_xy(self, x: Tensor, y: Tensor):
        """Encodings [N, num_pos_feats / 2 * 2] of normalized x and y coordinates [N]."""
        dim_t = self._dim_t(x.device)
        pos_x = self._interleave((x * self.scale)[:, None] / dim_t)
        pos_y = self._interleave((y * self.scale)[:, None] / dim_t)
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

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        key = (x.shape[-2], x.shape[-1], x.device)
        if key not in self.cache:
            H, W = x.shape[-2:]
            y_embed = torch.arange(1, H + 1, dtype=torch.float32, device=x.device)[:, None].expand(H, W)
            x_embed = torch.arange(1, W + 1, dtype=torch.float32, device=x.device)[None, :].expand(H, W)
            if self.normalize:
                eps = 1e-6
                y_embed = y_embed / (y_embed[-1:, :] + eps) * self.scale
                x_embed = x_embed / (x_embed[:, -1:] + eps) * self.scale
            dim_t = self._dim_t(x.device)
            pos_x = self._interleave(x_embed[:, :, None] / dim_t)
            pos_y = self._interleave(y_embed[:, :, None] / dim_t)
            self.cache[key] = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1)
        return self.cache[key][None].repeat(x.shape[0], 1, 1, 1)
