"""SAM 3's fusion encoder: image tokens self-attend, then cross-attend to the prompt tokens
(text, geometry), pre-norm; the same layer type encodes geometric prompts against the image."""

import copy
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .model_misc import get_activation_fn

__all__ = ["TransformerEncoderLayer", "TransformerEncoderFusion", "pool_text_feat"]


class TransformerEncoderLayer(nn.Module):
    """Self-attention, cross-attention to ``memory``, feed-forward; pre- or post-norm.

    Tensors follow the attention modules' layout (batch-first in the fusion encoder,
    sequence-first in the geometry encoder): ``tgt`` and ``query_pos`` [.., Nq, ..],
    ``memory`` and ``pos`` [.., Nk, ..]; key padding masks are [B, N] (True at padding).
    """

    def __init__(
        self,
        activation: str,
        cross_attention: nn.Module,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        pos_enc_at_attn: bool,
        pos_enc_at_cross_attn_keys: bool,
        pos_enc_at_cross_attn_queries: bool,
        pre_norm: bool,
        self_attention: nn.Module,
    ):
        super().__init__()
        self.d_model = d_model
        self.dim_feedforward = dim_feedforward
        self.self_attn = self_attention
        self.cross_attn_image = cross_attention
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = get_activation_fn(activation)
        self.pre_norm = pre_norm
        self.pos_enc_at_attn = pos_enc_at_attn
        self.pos_enc_at_cross_attn_queries = pos_enc_at_cross_attn_queries
        self.pos_enc_at_cross_attn_keys = pos_enc_at_cross_attn_keys

    def _cross(self, tgt, memory, memory_mask, memory_key_padding_mask, pos, query_pos):
        return self.cross_attn_image(
            query=tgt + query_pos if self.pos_enc_at_cross_attn_queries else tgt,
            key=memory + pos if self.pos_enc_at_cross_attn_keys else memory,
            value=memory,
            attn_mask=memory_mask,
            key_padding_mask=memory_key_padding_mask,
        )[0]

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
        tgt_key_padding_mask: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
        pos: Optional[Tensor] = None,
        query_pos: Optional[Tensor] = None,
    ) -> Tensor:
        if self.pre_norm:
            tgt2 = self.norm1(tgt)
            q = k = tgt2 + query_pos if self.pos_enc_at_attn else tgt2
            tgt2 = self.self_attn(q, k, value=tgt2, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask)[0]
            tgt = tgt + self.dropout1(tgt2)
            tgt2 = self._cross(self.norm2(tgt), memory, memory_mask, memory_key_padding_mask, pos, query_pos)
            tgt = tgt + self.dropout2(tgt2)
            tgt2 = self.linear2(self.dropout(self.activation(self.linear1(self.norm3(tgt)))))
            return tgt + self.dropout3(tgt2)
        q = k = tgt + query_pos if self.pos_enc_at_attn else tgt
        tgt2 = self.self_attn(q, k, value=tgt, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask)[0]
        tgt = self.norm1(tgt + self.dropout1(tgt2))
        tgt2 = self._cross(tgt, memory, memory_mask, memory_key_padding_mask, pos, query_pos)
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        tgt2 = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(tgt2))


def pool_text_feat(prompt: Tensor, prompt_mask: Optional[Tensor], pool_with_mask: bool) -> Tensor:
    """Mean of prompt [L, B, C] over its tokens (only the valid ones with ``pool_with_mask``) -> [B, C]."""
    if not pool_with_mask:
        return prompt.mean(dim=0)
    is_valid = (~prompt_mask).float().permute(1, 0)[..., None]
    num_valid = torch.clamp(is_valid.sum(dim=0), min=1.0)
    return (prompt * is_valid).sum(dim=0) / num_valid


class TransformerEncoderFusion(nn.Module):
    """``num_layers`` copies of ``layer`` over the flattened image tokens (batch-first inside).

    ``forward(src, prompt, src_pos=..., prompt_key_padding_mask=..., feat_sizes=...)``: src and
    src_pos are lists over levels of sequence-first maps [h * w, B, C], prompt is [L, B, C].
    Returns ``memory`` and ``pos_embed`` [sum(h * w), B, C], ``padding_mask`` (None without
    image padding), ``memory_text`` (the prompt, unchanged), ``level_start_index``,
    ``spatial_shapes`` [levels, 2] and ``valid_ratios`` [B, levels, 2].
    """

    def __init__(
        self,
        layer: nn.Module,
        num_layers: int,
        d_model: int,
        num_feature_levels: int,
        add_pooled_text_to_img_feat: bool = True,
        pool_text_with_mask: bool = False,
        use_act_checkpoint: bool = False,
    ):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.num_feature_levels = num_feature_levels
        self.level_embed = None
        if num_feature_levels > 1:
            self.level_embed = nn.Parameter(torch.zeros(num_feature_levels, d_model))
            nn.init.normal_(self.level_embed)
        self.add_pooled_text_to_img_feat = add_pooled_text_to_img_feat
        if add_pooled_text_to_img_feat:
            self.text_pooling_proj = nn.Linear(d_model, d_model)
        self.pool_text_with_mask = pool_text_with_mask
        self.use_act_checkpoint = use_act_checkpoint

    def forward(
        self,
        src: List[Tensor],
        prompt: Tensor,
        src_key_padding_mask: Optional[List[Optional[Tensor]]] = None,
        src_pos: Optional[List[Tensor]] = None,
        prompt_key_padding_mask: Optional[Tensor] = None,
        prompt_pos: Optional[Tensor] = None,
        feat_sizes: Optional[List] = None,
    ) -> Dict:
        if len(src) != self.num_feature_levels or src_pos is None or len(src_pos) != len(src):
            raise ValueError(f"fusion encoder: expected {self.num_feature_levels} levels of features and positions")
        if feat_sizes is None or len(feat_sizes) != len(src):
            raise ValueError("fusion encoder: feat_sizes must give (h, w) for each level")
        tokens, positions, masks = [], [], []
        for lvl, (x, pos) in enumerate(zip(src, src_pos)):
            x = x.transpose(0, 1)  # [B, h * w, C]
            if self.add_pooled_text_to_img_feat:
                pooled = pool_text_feat(prompt, prompt_key_padding_mask, self.pool_text_with_mask)
                x = x + self.text_pooling_proj(pooled)[:, None]
            pos = pos.transpose(0, 1)
            if self.level_embed is not None:
                pos = pos + self.level_embed[lvl].view(1, 1, -1)
            tokens.append(x)
            positions.append(pos)
            if src_key_padding_mask is not None and src_key_padding_mask[lvl] is not None:
                masks.append(src_key_padding_mask[lvl].reshape(x.shape[0], -1))
        output = torch.cat(tokens, 1)
        pos_flat = torch.cat(positions, 1)
        padding_mask = torch.cat(masks, 1) if masks else None
        spatial_shapes = torch.tensor(
            [tuple(int(s) for s in hw) for hw in feat_sizes], dtype=torch.long, device=output.device
        )
        level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
        valid_ratios = torch.ones((output.shape[0], self.num_feature_levels, 2), device=output.device)
        memory = prompt.transpose(0, 1)  # [B, L, C]
        for layer in self.layers:
            # positional: tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
            # memory_key_padding_mask, pos, query_pos
            args = (output, memory, None, None, padding_mask, prompt_key_padding_mask, None, pos_flat)
            if self.training and self.use_act_checkpoint and torch.is_grad_enabled():
                output = checkpoint(layer, *args, use_reentrant=False)
            else:
                output = layer(*args)
        return {
            "memory": output.transpose(0, 1),
            "padding_mask": None if padding_mask is None else padding_mask.transpose(0, 1),
            "pos_embed": pos_flat.transpose(0, 1),
            "memory_text": prompt,
            "level_start_index": level_start_index,
            "spatial_shapes": spatial_shapes,
            "valid_ratios": valid_ratios,
        }
