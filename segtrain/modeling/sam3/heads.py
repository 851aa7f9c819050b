"""Prediction heads of the concept detector: concept-query scoring, presence, masks."""

import math

import torch
from torch import Tensor, nn

from segtrain.layers.transformer import MLP

__all__ = ["DotProductScoring", "PresenceHead", "MaskHead"]

# Initial foreground probability of a mask pixel
_MASK_PRIOR_PROB = 0.1


class DotProductScoring(nn.Module):
    """Query logit = scaled dot product of the projected query and the pooled prompt, plus a
    bias (SAM 3 scores queries against the prompt this way rather than with a class layer).

    forward(hs [B, Q, C], prompt [B, T, C]) -> logits [B, Q, 1].
    """

    def __init__(self, dim: int):
        super().__init__()
        self.query_proj = nn.Linear(dim, dim)
        self.prompt_mlp = MLP(dim, dim, dim, 2)
        self.scale = 1.0 / math.sqrt(dim)
        # no low-probability prior (unlike dense focal-loss detectors): with few queries and
        # IABCEMdetr's p**gamma-weighted negatives, scores starting at 0.5 are pushed down fast
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, hs: Tensor, prompt: Tensor) -> Tensor:
        p = self.prompt_mlp(prompt).mean(dim=1)  # [B, C]
        q = self.query_proj(hs)  # [B, Q, C]
        return (torch.einsum("bqc,bc->bq", q, p) * self.scale + self.bias)[..., None]


class PresenceHead(nn.Module):
    """Presence logit of the concept in the image: the presence token's output scored against
    the pooled prompt, ``<mlp(token), mlp(prompt)> / sqrt(C) + bias``.

    The explicit product with the prompt makes "concept c is present" a linear read-out of the
    token per concept, rather than an interaction an MLP on the token alone must discover.
    forward(token [B, C], prompt [B, T, C]) -> [B, 1].
    """

    def __init__(self, dim: int):
        super().__init__()
        self.token_mlp = MLP(dim, dim, dim, 2)
        self.prompt_mlp = MLP(dim, dim, dim, 2)
        self.scale = 1.0 / math.sqrt(dim)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, token: Tensor, prompt: Tensor) -> Tensor:
        p = self.prompt_mlp(prompt).mean(dim=1)  # [B, C]
        return ((self.token_mlp(token) * p).sum(-1, keepdim=True)) * self.scale + self.bias


class MaskHead(nn.Module):
    """Mask logits as query embedding x pixel embedding (MaskFormer style).

    The pixel embedding of a find is the FPN's mask features of its image plus the upsampled
    fused encoder memory, so it carries the prompt too; a learned bias (initial foreground
    probability 0.1) is added to every logit.
    forward(hs [B, Q, C], mask_features [B, M, H, W], memory_map [B, C, h, w]) -> [B, Q, H, W].
    """

    def __init__(self, dim: int, mask_dim: int):
        super().__init__()
        self.mask_embed = MLP(dim, dim, mask_dim, 3)
        self.memory_proj = nn.Conv2d(dim, mask_dim, kernel_size=1)
        # Most pixels of a mask are background: starting every pixel at probability 0.5 makes
        # the (x200-weighted) focal mask loss start about 5x above where a background prior puts it.
        self.mask_bias = nn.Parameter(torch.tensor(-math.log((1 - _MASK_PRIOR_PROB) / _MASK_PRIOR_PROB)))

    def pixel_embedding(self, mask_features: Tensor, memory_map: Tensor) -> Tensor:
        """[B, M, H, W] pixel embedding of each find."""
        mem = nn.functional.interpolate(
            self.memory_proj(memory_map), size=mask_features.shape[-2:], mode="bilinear", align_corners=False
        )
        return mask_features + mem

    def forward(self, hs: Tensor, pixel_embed: Tensor) -> Tensor:
        return torch.einsum("bqc,bchw->bqhw", self.mask_embed(hs), pixel_embed) + self.mask_bias
