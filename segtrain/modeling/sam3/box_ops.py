"""Small box helpers of the concept detector: inverse sigmoid (for iterative box
refinement) and the sine embedding of boxes that makes query positions."""

import math

import torch
from torch import Tensor

__all__ = ["inverse_sigmoid", "box_sine_embed"]


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """``log(x / (1 - x))`` with x clamped to [eps, 1 - eps] (x in [0, 1]); same shape."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def box_sine_embed(boxes: Tensor, num_feats: int, temperature: float = 10000.0) -> Tensor:
    """Sine/cosine embedding of normalized boxes, each coordinate on ``num_feats`` channels.

    boxes: [..., 4] normalized (cx, cy, w, h) in [0, 1]. Returns [..., 4 * num_feats], ordered
    (cy, cx, w, h) blocks as in DAB-DETR, each block interleaving sin (even) and cos (odd).
    """
    if num_feats % 2 != 0:
        raise ValueError(f"box_sine_embed: num_feats must be even, got {num_feats}")
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    coords = boxes.float() * (2 * math.pi)
    parts = []
    for i in (1, 0, 2, 3):  # cy, cx, w, h
        p = coords[..., i, None] / dim_t
        parts.append(torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1)
