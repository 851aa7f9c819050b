"""SAM 3's DETR-style decoder: queries with iterative box refinement, a presence token that
joins self-attention, cross-attention to the prompt then to the image with a box relative
position bias (boxRPB), and DAC one-to-many queries in training (a second copy of the queries
that skips self-attention)."""

import copy
import math
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .model_misc import MLP, box_cxcywh_to_xyxy, gen_sineembed_for_position, get_activation_fn, inverse_sigmoid

__all__ = ["TransformerDecoderLayer", "TransformerDecoder"]


def _call(module: nn.Module, kwargs: Dict):
    return module(**kwargs)


class TransformerDecoderLayer(nn.Module):
    """Self-attention (o2o queries and presence token), text cross-attention, image
    cross-attention, FFN; post-norm. Tensors are sequence-first: tgt [nq, B, C]."""

    def __init__(
        self,
        activation: str,
        d_model: int,
        dim_feedforward: int,
        dropout: float,
        cross_attention: nn.Module,
        n_heads: int,
        use_text_cross_attention: bool = False,
    ):
        super().__init__()
        self.cross_attn = cross_attention
        self.dropout1 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm1 = nn.LayerNorm(d_model)
        self.use_text_cross_attention = use_text_cross_attention
        if use_text_cross_attention:
            self.ca_text = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
            self.catext_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
            self.catext_norm = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.dropout2 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = get_activation_fn(activation)
        self.dropout3 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout4 = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.norm3 = nn.LayerNorm(d_model)

    def forward_ffn(self, tgt: Tensor) -> Tensor:
        with torch.autocast(device_type=tgt.device.type, enabled=False):
            tgt2 = self.linear2(self.dropout3(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(tgt2))

    def forward(
        self,
        tgt: Tensor,
        tgt_query_pos: Tensor,
        memory_text: Optional[Tensor] = None,
        text_attention_mask: Optional[Tensor] = None,
        memory: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
        memory_pos: Optional[Tensor] = None,
        self_attn_mask: Optional[Tensor] = None,
        cross_attn_mask: Optional[Tensor] = None,
        dac: bool = False,
        dac_use_selfatt_ln: bool = True,
        presence_token: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Optional[Tensor]]:
        """tgt, tgt_query_pos [nq, B, C] (2 * nq with ``dac``), memory_text [L, B, C], memory and
        memory_pos [HW, B, C], cross_attn_mask [B * heads, nq, HW] (additive), presence_token
        [1, B, C]. Returns the queries and the presence token after the layer."""
        if dac:
            num_o2o = tgt.shape[0] // 2
            tgt_o2o, tgt_query_pos_o2o, tgt_o2m = tgt[:num_o2o], tgt_query_pos[:num_o2o], tgt[num_o2o:]
        else:
            tgt_o2o, tgt_query_pos_o2o = tgt, tgt_query_pos
        if presence_token is not None:
            no_pos = torch.zeros_like(presence_token)
            tgt_o2o = torch.cat([presence_token, tgt_o2o], dim=0)
            tgt_query_pos_o2o = torch.cat([no_pos, tgt_query_pos_o2o], dim=0)
            tgt_query_pos = torch.cat([no_pos, tgt_query_pos], dim=0)
        q = k = tgt_o2o + tgt_query_pos_o2o
        tgt_o2o = tgt_o2o + self.dropout2(self.self_attn(q, k, tgt_o2o, attn_mask=self_attn_mask)[0])
        if dac:
            if not dac_use_selfatt_ln:
                tgt_o2o = self.norm2(tgt_o2o)
            tgt = torch.cat((tgt_o2o, tgt_o2m), dim=0)
            if dac_use_selfatt_ln:
                tgt = self.norm2(tgt)
        else:
            tgt = self.norm2(tgt_o2o)

        if self.use_text_cross_attention:
            tgt2 = self.ca_text(tgt + tgt_query_pos, memory_text, memory_text, key_padding_mask=text_attention_mask)[0]
            tgt = self.catext_norm(tgt + self.catext_dropout(tgt2))

        if presence_token is not None and cross_attn_mask is not None:
            cross_attn_mask = torch.cat([torch.zeros_like(cross_attn_mask[:, :1, :]), cross_attn_mask], dim=1)
        tgt2 = self.cross_attn(
            query=tgt + tgt_query_pos,
            key=memory if memory_pos is None else memory + memory_pos,
            value=memory,
            attn_mask=cross_attn_mask,
            key_padding_mask=None if memory_key_padding_mask is None else memory_key_padding_mask.transpose(0, 1),
        )[0]
        tgt = self.norm1(tgt + self.dropout1(tgt2))
        tgt = self.forward_ffn(tgt)
        if presence_token is not None:
            return tgt[1:], tgt[:1]
        return tgt, None


class TransformerDecoder(nn.Module):
    """``num_layers`` decoder layers over ``num_queries`` learned queries and reference boxes.

    ``forward(tgt, memory, ...)`` returns ``(hs, ref_boxes, presence_logits, presence_feats)``:
    hs [layers, nq, B, C] (normed outputs of each layer; 2 * nq with DAC, o2o first),
    ref_boxes [layers, nq, B, 4] (the sigmoid cxcywh boxes each layer started from),
    presence_logits [layers, 1, B] and presence_feats [1, B, C] (the last layer's token).
    """

    def __init__(
        self,
        d_model: int,
        layer: nn.Module,
        num_layers: int,
        num_queries: int,
        return_intermediate: bool = True,
        box_refine: bool = True,
        dac: bool = False,
        boxRPB: str = "none",
        dac_use_selfatt_ln: bool = True,
        use_act_checkpoint: bool = False,
        presence_token: bool = False,
        clamp_presence_logits: bool = True,
        clamp_presence_logit_max_val: float = 10.0,
        resolution: Optional[int] = None,
        stride: Optional[int] = None,
    ):
        super().__init__()
        if not (return_intermediate and box_refine):
            raise ValueError("TransformerDecoder: only return_intermediate=True with box_refine=True is supported")
        if boxRPB not in ("none", "log", "linear", "both"):
            raise ValueError(f"TransformerDecoder: boxRPB={boxRPB!r} is not one of none, log, linear, both")
        self.d_model = d_model
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.num_queries = num_queries
        self.dac = dac
        self.num_o2m_queries = num_queries if dac else 0
        self.norm = nn.LayerNorm(d_model)
        self.return_intermediate = return_intermediate
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.box_refine = box_refine
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)
        self.reference_points = nn.Embedding(num_queries, 4)
        self.boxRPB = boxRPB
        if boxRPB != "none":
            nheads = self.layers[0].cross_attn.num_heads
            n_input = 4 if boxRPB == "both" else 2
            self.boxRPB_embed_x = MLP(n_input, d_model, nheads, 2)
            self.boxRPB_embed_y = MLP(n_input, d_model, nheads, 2)
        self.resolution, self.stride = resolution, stride
        self.presence_token = None
        self.clamp_presence_logits = clamp_presence_logits
        self.clamp_presence_logit_max_val = clamp_presence_logit_max_val
        if presence_token:
            self.presence_token = nn.Embedding(1, d_model)
            self.presence_token_head = MLP(d_model, d_model, 1, 3)
            self.presence_token_out_norm = nn.LayerNorm(d_model)
        self.ref_point_head = MLP(2 * d_model, d_model, d_model, 2)
        self.dac_use_selfatt_ln = dac_use_selfatt_ln
        self.use_act_checkpoint = use_act_checkpoint
        nn.init.normal_(self.query_embed.weight)

    def _get_rpb_matrix(self, reference_boxes: Tensor, feat_size: Tuple[int, int]) -> Tensor:
        """Box relative position bias [B, heads, nq, H * W] from boxes [nq, B, 4] (cxcywh)."""
        H, W = feat_size
        boxes_xyxy = box_cxcywh_to_xyxy(reference_boxes).transpose(0, 1)  # [B, nq, 4]
        bs, num_queries, _ = boxes_xyxy.shape
        coords_h = torch.arange(0, H, device=reference_boxes.device, dtype=torch.float32) / H
        coords_w = torch.arange(0, W, device=reference_boxes.device, dtype=torch.float32) / W
        deltas_y = (coords_h.view(1, -1, 1) - boxes_xyxy.reshape(-1, 1, 4)[:, :, 1:4:2]).view(bs, num_queries, -1, 2)
        deltas_x = (coords_w.view(1, -1, 1) - boxes_xyxy.reshape(-1, 1, 4)[:, :, 0:3:2]).view(bs, num_queries, -1, 2)
        if self.boxRPB in ("log", "both"):

            def log_scale(d):
                d = d * 8  # to [-8, 8]
                return torch.sign(d) * torch.log2(torch.abs(d) + 1.0) / math.log2(8)

            if self.boxRPB == "log":
                deltas_x, deltas_y = log_scale(deltas_x), log_scale(deltas_y)
            else:
                deltas_x = torch.cat([deltas_x, log_scale(deltas_x)], dim=-1)
                deltas_y = torch.cat([deltas_y, log_scale(deltas_y)], dim=-1)
        deltas_x = self.boxRPB_embed_x(deltas_x)  # [B, nq, W, heads]
        deltas_y = self.boxRPB_embed_y(deltas_y)  # [B, nq, H, heads]
        bias = deltas_y.unsqueeze(3) + deltas_x.unsqueeze(2)  # [B, nq, H, W, heads]
        return bias.flatten(2, 3).permute(0, 3, 1, 2).contiguous()

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        tgt_mask: Optional[Tensor] = None,
        memory_mask: Optional[Tensor] = None,
        memory_key_padding_mask: Optional[Tensor] = None,
        pos: Optional[Tensor] = None,
        reference_boxes: Optional[Tensor] = None,
        level_start_index: Optional[Tensor] = None,
        spatial_shapes: Optional[Tensor] = None,
        valid_ratios: Optional[Tensor] = None,
        memory_text: Optional[Tensor] = None,
        text_attention_mask: Optional[Tensor] = None,
        apply_dac: Optional[bool] = None,
    ):
        if memory_mask is not None and self.boxRPB != "none":
            raise ValueError("TransformerDecoder: a memory_mask cannot be combined with boxRPB")
        apply_dac = self.dac if apply_dac is None else apply_dac
        bs = tgt.shape[1]
        if apply_dac:
            tgt = tgt.repeat(2, 1, 1)
            if reference_boxes is not None:
                reference_boxes = reference_boxes.repeat(2, 1, 1)
        if reference_boxes is None:
            reference_boxes = self.reference_points.weight.unsqueeze(1).repeat(2 if apply_dac else 1, bs, 1).sigmoid()
        intermediate, intermediate_ref_boxes, presence_logits = [], [reference_boxes], []
        presence_out = None if self.presence_token is None else self.presence_token.weight[None].expand(1, bs, -1)
        presence_feats = None
        output = tgt
        for layer_idx, layer in enumerate(self.layers):
            ref_input = reference_boxes[:, :, None] * torch.cat([valid_ratios, valid_ratios], -1)[None, :]
            query_sine_embed = gen_sineembed_for_position(ref_input[:, :, 0, :], self.d_model)  # [nq, B, 2C]
            query_pos = self.ref_point_head(query_sine_embed)
            if self.boxRPB != "none":
                if spatial_shapes.shape[0] != 1:
                    raise ValueError("TransformerDecoder: boxRPB supports one feature level")
                hw = (int(spatial_shapes[0, 0]), int(spatial_shapes[0, 1]))
                memory_mask = self._get_rpb_matrix(reference_boxes, hw).flatten(0, 1)  # [B * heads, nq, HW]
            kwargs = dict(
                tgt=output,
                tgt_query_pos=query_pos,
                memory_text=memory_text,
                text_attention_mask=text_attention_mask,
                memory=memory,
                memory_key_padding_mask=memory_key_padding_mask,
                memory_pos=pos,
                self_attn_mask=tgt_mask,
                cross_attn_mask=memory_mask,
                dac=apply_dac,
                dac_use_selfatt_ln=self.dac_use_selfatt_ln,
                presence_token=presence_out,
            )
            if self.training and self.use_act_checkpoint and torch.is_grad_enabled():
                output, presence_out = checkpoint(_call, layer, kwargs, use_reentrant=False)
            else:
                output, presence_out = layer(**kwargs)
            new_reference_boxes = (self.bbox_embed(self.norm(output)) + inverse_sigmoid(reference_boxes)).sigmoid()
            reference_boxes = new_reference_boxes.detach()
            if layer_idx != self.num_layers - 1:
                intermediate_ref_boxes.append(new_reference_boxes)
            intermediate.append(self.norm(output))
            if self.presence_token is not None:
                # The official model computes a clamp here and discards it: the logits stay unclamped.
                presence_logits.append(self.presence_token_head(self.presence_token_out_norm(presence_out)).squeeze(-1))
                presence_feats = presence_out.clone()
        return (
            torch.stack(intermediate),
            torch.stack(intermediate_ref_boxes),
            torch.stack(presence_logits) if self.presence_token is not None else None,
            presence_feats,
        )
