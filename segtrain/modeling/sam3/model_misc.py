"""Small shared pieces of the SAM 3 image model, under their official names: the MLP, the
dot-product scorer, the attention wrapper, the encoder/decoder wrapper and box helpers."""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MLP",
    "DotProductScoring",
    "MultiheadAttentionWrapper",
    "TransformerWrapper",
    "inverse_sigmoid",
    "gen_sineembed_for_position",
    "get_activation_fn",
    "box_cxcywh_to_xyxy",
]


def inverse_sigmoid(x: Tensor, eps: float = 1e-3) -> Tensor:
    """``log(x / (1 - x))`` with x clamped to [0, 1] and both terms to at least ``eps``."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def box_cxcywh_to_xyxy(x: Tensor) -> Tensor:
    cx, cy, w, h = x.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def get_activation_fn(activation: str):
    if activation not in ("relu", "gelu", "glu"):
        raise ValueError(f"activation should be relu, gelu or glu, not {activation!r}")
    return getattr(F, activation)


def gen_sineembed_for_position(pos_tensor: Tensor, num_feats: int = 256) -> Tensor:
    """Sine embedding [nq, bs, 2 * num_feats] of boxes [nq, bs, 4] (or [nq, bs, num_feats] of
    points [nq, bs, 2]); blocks ordered y, x, w, h, each ``num_feats / 2`` channels."""
    if num_feats % 2 != 0:
        raise ValueError(f"gen_sineembed_for_position: num_feats must be even, got {num_feats}")
    num_feats = num_feats // 2
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=pos_tensor.device)
    dim_t = 10000 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    def embed(coord):
        pos = coord[:, :, None] * (2 * math.pi) / dim_t
        return torch.stack((pos[:, :, 0::2].sin(), pos[:, :, 1::2].cos()), dim=3).flatten(2)

    if pos_tensor.size(-1) not in (2, 4):
        raise ValueError(f"gen_sineembed_for_position: last dim must be 2 or 4, got {pos_tensor.size(-1)}")
    parts = [embed(pos_tensor[:, :, 1]), embed(pos_tensor[:, :, 0])]
    if pos_tensor.size(-1) == 4:
        parts += [embed(pos_tensor[:, :, 2]), embed(pos_tensor[:, :, 3])]
    return torch.cat(parts, dim=2)


class MultiheadAttentionWrapper(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` that never returns attention weights."""

    def forward(self, *args, **kwargs):
        kwargs["need_weights"] = False
        return super().forward(*args, **kwargs)


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU (and dropout) between, optional residual and output norm."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        dropout: float = 0.0,
        residual: bool = False,
        out_norm: Optional[nn.Module] = None,
    ):
        super().__init__()
        if residual and input_dim != output_dim:
            raise ValueError("MLP: residual needs input_dim == output_dim")
        self.num_layers = num_layers
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.residual = residual
        self.out_norm = out_norm or nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        orig_x = x
        for i, layer in enumerate(self.layers):
            x = self.drop(F.relu(layer(x))) if i < self.num_layers - 1 else layer(x)
        if self.residual:
            x = x + orig_x
        return self.out_norm(x)


class DotProductScoring(nn.Module):
    """Query logits from the dot product of projected queries and the mean-pooled prompt.

    ``forward(hs, prompt, prompt_mask)``: hs [layers, B, Q, d_model], prompt [L, B, d_model],
    prompt_mask [B, L] (True at padding) -> logits [layers, B, Q, 1], clamped to
    +-``clamp_max_val``.
    """

    def __init__(
        self, d_model: int, d_proj: int, prompt_mlp: Optional[nn.Module] = None, clamp_logits=True, clamp_max_val=12.0
    ):
        super().__init__()
        self.d_proj = d_proj
        self.prompt_mlp = prompt_mlp
        self.prompt_proj = nn.Linear(d_model, d_proj)
        self.hs_proj = nn.Linear(d_model, d_proj)
        self.scale = float(1.0 / math.sqrt(d_proj))
        self.clamp_logits = clamp_logits
        self.clamp_max_val = clamp_max_val

    @staticmethod
    def mean_pool_text(prompt: Tensor, prompt_mask: Tensor) -> Tensor:
        """Mean over the valid tokens: prompt [L, B, C], mask [B, L] -> [B, C]."""
        is_valid = (~prompt_mask).float().permute(1, 0)[..., None]
        num_valid = torch.clamp(is_valid.sum(dim=0), min=1.0)
        return (prompt * is_valid).sum(dim=0) / num_valid

    def forward(self, hs: Tensor, prompt: Tensor, prompt_mask: Tensor) -> Tensor:
        if hs.dim() != 4 or prompt.dim() != 3 or prompt_mask.dim() != 2:
            raise ValueError(
                f"DotProductScoring: shapes {tuple(hs.shape)}, {tuple(prompt.shape)}, {tuple(prompt_mask.shape)}"
            )
        if self.prompt_mlp is not None:
            prompt = self.prompt_mlp(prompt)
        pooled = self.prompt_proj(self.mean_pool_text(prompt, prompt_mask))  # [B, d_proj]
        scores = torch.matmul(self.hs_proj(hs), pooled.unsqueeze(-1)) * self.scale
        if self.clamp_logits:
            scores = scores.clamp(min=-self.clamp_max_val, max=self.clamp_max_val)
        return scores


class TransformerWrapper(nn.Module):
    """Holds the fusion ``encoder`` and the ``decoder``; Xavier-initializes their matrices
    (except box heads, query embeddings and reference points)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, d_model: int):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.num_queries = decoder.num_queries if decoder is not None else None
        self.d_model = d_model
        for name, p in self.named_parameters():
            if p.dim() > 1 and not any(k in name for k in ("box_embed", "query_embed", "reference_points")):
                nn.init.xavier_uniform_(p)
