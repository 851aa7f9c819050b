"""Small building blocks shared by the SAM 2 modules (the official ``sam2_utils.py``):
``LayerNorm2d``, ``MLP`` (``layers.{i}`` with an activation between them), ``DropPath``,
``get_clones``, the 1-D sine encoding of temporal offsets and the "no object" mask logit."""

import copy
from typing import Type

import torch
from torch import Tensor, nn

__all__ = ["LayerNorm2d", "MLP", "DropPath", "get_clones", "get_1d_sine_pe", "NO_OBJ_SCORE"]

# Mask logit of frames where the object-score head says "no object" (SAM 2's value).
NO_OBJ_SCORE = -1024.0


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a [B, C, H, W] map (each pixel normalized on its own)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLP(nn.Module):
    """``num_layers`` Linear layers (``layers.{i}``) with ``activation`` between them;
    ``sigmoid_output`` squashes the result. [..., input_dim] -> [..., output_dim]."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: Type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ):
        super().__init__()
        self.num_layers = num_layers
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.sigmoid_output = sigmoid_output
        self.act = activation()

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = self.act(layer(x)) if i < self.num_layers - 1 else layer(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability ``drop_prob`` in
    training (survivors scaled by 1 / keep probability)."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
        if keep_prob > 0.0 and self.scale_by_keep:
            random_tensor.div_(keep_prob)
        return x * random_tensor


def get_clones(module: nn.Module, n: int) -> nn.ModuleList:
    """``n`` independent deep copies of ``module`` (same initial weights, as the official code)."""
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


def get_1d_sine_pe(pos_inds: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """1-D sine encoding of positions [L] (e.g. normalized frame offsets) -> [L, dim]
    (``dim / 2`` sines then ``dim / 2`` cosines)."""
    pe_dim = dim // 2
    dim_t = torch.arange(pe_dim, dtype=torch.float32, device=pos_inds.device)
    dim_t = temperature ** (2 * (dim_t // 2) / pe_dim)
    pos_embed = pos_inds.float().unsqueeze(-1) / dim_t
    return torch.cat([pos_embed.sin(), pos_embed.cos()], dim=-1)
