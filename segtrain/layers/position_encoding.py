"""Sine position embedding of image feature maps (DETR / Mask2Former)."""

import math
from typing import Dict, Optional, Tuple

import torch
from torch import nn

__all__ = ["PositionEmbeddingSine"]


class PositionEmbeddingSine(nn.Module):
    """2-D sine/cosine position embedding, as in "Attention is all you need" per axis.

    ``num_pos_feats`` channels encode y and as many encode x (output 2 * num_pos_feats);
    frequencies are ``temperature ** (2 * (i // 2) / num_pos_feats)``. With ``normalize``
    the cumulative coordinates are divided by the (valid) extent and multiplied by
    ``scale`` (default 2*pi), as in Mask2Former (no -0.5 offset).

    forward(x [B, C, H, W], mask [B, H, W] bool True=padding or None)
    -> [B, 2 * num_pos_feats, H, W] float32, channels ordered (y sin/cos..., x sin/cos...).
    Without a mask the map depends only on (H, W) and is cached per size (SAM 2 / SAM 3 do the same).
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000,
        normalize: bool = False,
        scale: Optional[float] = None,
    ):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        if scale is not None and normalize is False:
            raise ValueError("PositionEmbeddingSine: normalize must be True when scale is given")
        self.scale = 2 * math.pi if scale is None else scale
        self._cache: Dict[Tuple[int, int, torch.device], torch.Tensor] = {}

    def dim_t(self, device) -> torch.Tensor:
        """The ``num_pos_feats`` frequencies."""
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        return self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)

    @staticmethod
    def interleave(pos: torch.Tensor) -> torch.Tensor:
        """sin of the even channels, cos of the odd ones, interleaved, as the official code does:
        [..., F] -> [..., F]."""
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)

    def _encode(self, not_mask: torch.Tensor) -> torch.Tensor:
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = self.dim_t(not_mask.device)
        pos_x = self.interleave(x_embed[:, :, :, None] / dim_t)
        pos_y = self.interleave(y_embed[:, :, :, None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if mask is not None:
            return self._encode(~mask)
        # without padding the map depends only on (H, W): computed once per size and device
        key = (x.shape[-2], x.shape[-1], x.device)
        if key not in self._cache:
            with torch.no_grad():
                ones = torch.ones((1, x.shape[-2], x.shape[-1]), device=x.device, dtype=torch.bool)
                self._cache[key] = self._encode(ones)
        return self._cache[key].repeat(x.shape[0], 1, 1, 1)  # a copy: callers may add to it in place

    def extra_repr(self) -> str:
        return (
            f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature}, "
            f"normalize={self.normalize}, scale={self.scale}"
        )
