"""DETR-style transformer layers shared by the families: self-attention, cross-attention
(with a head-broadcast boolean mask), feed-forward blocks and the ``MLP`` head.

Parameter names are those of the official Mask2Former / DETR modules (``self_attn``,
``multihead_attn``, ``linear1``, ``norm``, ``layers.{i}``), so official checkpoints load.
"""

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.layers.wrappers import Linear, linear
from segtrain.utils.errors import ConfigError

__all__ = ["SelfAttentionLayer", "CrossAttentionLayer", "FFNLayer", "MLP"]


def _with_pos(x: Tensor, pos: Optional[Tensor]) -> Tensor:
    return x if pos is None else x + pos


def _activation(name: str):
    acts = {"relu": F.relu, "gelu": F.gelu, "glu": F.glu}
    if name not in acts:
        raise ConfigError(f"unknown activation {name!r}; valid: {', '.join(sorted(acts))}")
    return acts[name]


def _xavier_init(module: nn.Module) -> None:
    # Official init: xavier-uniform on every matrix of the layer, biases left as built.
    for p in module.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)


def _attend(
    attn: nn.MultiheadAttention,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Optional[Tensor],
    training: bool,
) -> Tensor:
    """Multi-head attention with the weights of ``attn`` (batch first), the mask broadcast
    over heads.

    query [B, Q, C], key / value [B, S, C], attn_mask bool [B, 1 or nheads, Q, S] True =
    blocked, or None -> [B, Q, C]. nn.MultiheadAttention wants a [B * nheads, Q, S] mask and
    turns a boolean one into a float copy of that size; here one [B, 1, Q, S] boolean mask
    serves every head. The projections go through :func:`segtrain.layers.wrappers.linear`.
    """
    B, Q, C = query.shape
    S = key.shape[1]
    h = attn.num_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    if key is query:  # self-attention: one product for q and k
        q, k = linear(query, w[: 2 * C], b[: 2 * C]).split(C, -1)
    else:
        q, k = linear(query, w[:C], b[:C]), linear(key, w[C : 2 * C], b[C : 2 * C])
    v = linear(value, w[2 * C :], b[2 * C :])
    q = q.reshape(B, Q, h, C // h).transpose(1, 2)
    k = k.reshape(B, S, h, C // h).transpose(1, 2)
    v = v.view(B, S, h, C // h).transpose(1, 2)
    # SDPA's boolean mask marks the positions that TAKE PART (the opposite of MHA's)
    keep = None if attn_mask is None else ~attn_mask
    dropout_p = attn.dropout if training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=dropout_p)
    out = out.transpose(1, 2).reshape(B, Q, C)
    return linear(out, attn.out_proj.weight, attn.out_proj.bias)


class SelfAttentionLayer(nn.Module):
    """Self-attention among queries with residual and LayerNorm (post-norm by default).

    forward(tgt [B, Q, C], query_pos [B, Q, C] or None) -> [B, Q, C].
    """

    def __init__(
        self, d_model: int, nhead: int, dropout: float = 0.0, activation: str = "relu", normalize_before: bool = False
    ):
        super().__init__()
        # batch_first only changes the call layout, not the parameters (in_proj_weight,
        # in_proj_bias, out_proj.*), so official checkpoints still load.
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: Tensor, query_pos: Optional[Tensor] = None) -> Tensor:
        x = self.norm(tgt) if self.normalize_before else tgt
        q = k = _with_pos(x, query_pos)
        out = _attend(self.self_attn, q, k, x, None, self.training)
        tgt = tgt + self.dropout(out)
        return tgt if self.normalize_before else self.norm(tgt)


class CrossAttentionLayer(nn.Module):
    """Queries attend to one feature level, optionally restricted by a mask.

    forward(tgt [B, Q, C], memory [B, S, C], attn_mask bool [B, 1 or nheads, Q, S] with
    True = blocked (or None), pos [B, S, C], query_pos [B, Q, C]) -> [B, Q, C].
    """

    def __init__(
        self, d_model: int, nhead: int, dropout: float = 0.0, activation: str = "relu", normalize_before: bool = False
    ):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.activation = _activation(activation)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        attn_mask: Optional[Tensor] = None,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
    ) -> Tensor:
        x = self.norm(tgt) if self.normalize_before else tgt
        q, k = _with_pos(x, query_pos), _with_pos(memory, pos)
        out = _attend(self.multihead_attn, q, k, memory, attn_mask, self.training)
        tgt = tgt + self.dropout(out)
        return tgt if self.normalize_before else self.norm(tgt)


class FFNLayer(nn.Module):
    """Two-layer feed-forward block with residual and LayerNorm. [B, Q, C] -> [B, Q, C]."""

    def __init__(
        self,
        d_model: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.0,
        activation: str = "relu",
        normalize_before: bool = False,
    ):
        super().__init__()
        self.linear1 = Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.activation = _activation(activation)
        self.normalize_before = normalize_before
        _xavier_init(self)

    def forward(self, tgt: Tensor) -> Tensor:
        x = self.norm(tgt) if self.normalize_before else tgt
        out = self.linear2(self.dropout(self.activation(self.linear1(x))))
        tgt = tgt + self.dropout(out)
        return tgt if self.normalize_before else self.norm(tgt)


class MLP(nn.Module):
    """``num_layers`` Linear layers (``layers.{i}``, the official parameter names of DETR,
    Mask2Former and SAM) with ReLU between them; ``sigmoid_output`` squashes the result.
    [..., input_dim] -> [..., output_dim]."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, sigmoid_output: bool = False):
        super().__init__()
        self.num_layers = num_layers
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.sigmoid_output = sigmoid_output

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return torch.sigmoid(x) if self.sigmoid_output else x
