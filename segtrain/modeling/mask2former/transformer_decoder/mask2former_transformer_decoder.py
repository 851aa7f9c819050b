"""Mask2Former's masked-attention transformer decoder (``MultiScaleMaskedTransformerDecoder``).

Module structure and parameter names are those of the official implementation, so an
official checkpoint loads with no renames (see ``docs/mask2former.md``). The forward pass
is reorganised for speed (batch-first tensors, fused attention with a head-broadcast
boolean mask, no host-device synchronisation) but computes the same function.
"""

import logging
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segtrain.config import configurable
from segtrain.layers.transformer import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from segtrain.layers.wrappers import Conv2d, Linear, matmul
from segtrain.structures.boxes import box_cxcywh_to_xyxy
from segtrain.utils.errors import ConfigError

from .build import TRANSFORMER_DECODER_REGISTRY
from .position_encoding import PositionEmbeddingSine

__all__ = ["MultiScaleMaskedTransformerDecoder", "masked_attention_mask"]

logger = logging.getLogger(__name__)


def masked_attention_mask(mask_logits: Tensor, size: Tuple[int, int]) -> Tensor:
    """Mask2Former's attention mask from mask logits, for one feature level.

    mask_logits: [B, Q, H, W] logits; size: the level's (h, w).
    Returns bool [B, 1, Q, h*w], True = blocked: ``sigmoid(resized logits) < 0.5``, with
    rows where every position would be blocked fully unblocked instead. The head axis has
    size 1 and broadcasts (the official code repeats the mask over heads: same values).
    """
    resized = F.interpolate(mask_logits.detach(), size=size, mode="bilinear", align_corners=False)
    # sigmoid(x) < 0.5 <=> x < 0 (also for NaN: both False), so no sigmoid is needed
    blocked = resized.flatten(2) < 0
    # A query blocked everywhere would give a softmax over nothing (NaN): let it see all.
    # Computed on the device without indexing, so no host synchronisation.
    blocked = blocked & ~blocked.all(dim=-1, keepdim=True)
    return blocked.unsqueeze(1)


@TRANSFORMER_DECODER_REGISTRY.register()
class MultiScaleMaskedTransformerDecoder(nn.Module):
    """Masked-attention decoder: learnable queries attend, level by level (round robin over
    3 scales, coarse to fine), to the pixel decoder's features, each cross-attention
    restricted to the foreground of the previous prediction's masks.

    forward(x: list of 3 [B, in_channels, h_l, w_l] (strides 32, 16, 8), mask_features
    [B, mask_dim, H, W]) -> {"pred_logits": [B, Q, K+1], "pred_masks": [B, Q, H, W] logits,
    "aux_outputs": list of ``dec_layers`` dicts with the same two keys}, the aux list
    ordered from the queries' own prediction to the second-to-last layer's.

    With ``box_head`` (off by default; a segtrain addition so box-supervised criteria such as
    ``Sam3LossWrapper`` can train this decoder) every prediction, aux ones included, also has
    ``"pred_boxes"`` [B, Q, 4] (normalized cxcywh, ``sigmoid(bbox_embed(query))``) and
    ``"pred_boxes_xyxy"`` [B, Q, 4]. Without it the parameters are exactly the official ones.
    """

    _version = 2

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Checkpoints older than the official version 2 call query_feat "static_query".
        version = local_metadata.get("version", None)
        if version is None or version < 2:
            renamed = False
            for k in list(state_dict.keys()):
                if k.startswith(prefix) and "static_query" in k:
                    state_dict[k.replace("static_query", "query_feat")] = state_dict.pop(k)
                    renamed = True
            if renamed:
                logger.warning("%s: renamed old 'static_query' weights to 'query_feat'", type(self).__name__)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    @configurable
    def __init__(
        self,
        in_channels: int,
        mask_classification: bool = True,
        *,
        num_classes: int,
        hidden_dim: int,
        num_queries: int,
        nheads: int,
        dim_feedforward: int,
        dec_layers: int,
        pre_norm: bool,
        mask_dim: int,
        enforce_input_project: bool,
        box_head: bool = False,
    ):
        """
        in_channels: channels of each of the 3 input feature levels.
        mask_classification: must be True (class logits are always predicted).
        num_classes: K; ``class_embed`` predicts K + 1 logits.
        hidden_dim: C, the query width; nheads must divide it.
        num_queries: Q.
        dec_layers: number of transformer LAYERS (the config's DEC_LAYERS - 1).
        pre_norm: pre-LayerNorm layers instead of post-norm.
        mask_dim: channels of ``mask_features`` (the mask embedding width).
        enforce_input_project: 1x1 projections even when in_channels == hidden_dim.
        box_head: also predict a box per query (``bbox_embed``, a 3-layer MLP).
        """
        super().__init__()
        if not mask_classification:
            raise ConfigError("MultiScaleMaskedTransformerDecoder only supports mask_classification=True")
        if hidden_dim % nheads != 0:
            raise ConfigError(f"MODEL.MASK_FORMER.HIDDEN_DIM ({hidden_dim}) must be divisible by NHEADS ({nheads})")
        self.mask_classification = mask_classification

        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        # Without a padding mask the position embedding depends only on (h, w): computed
        # once per size and device, not 3 times per iteration (sin/cos over every pixel).
        self._pos_cache: Dict[Tuple, Tensor] = {}

        self.num_heads = nheads
        self.num_layers = dec_layers
        self.transformer_self_attention_layers = nn.ModuleList()
        self.transformer_cross_attention_layers = nn.ModuleList()
        self.transformer_ffn_layers = nn.ModuleList()
        for _ in range(self.num_layers):
            # The decoder itself never uses dropout (official: 0.0 everywhere here)
            self.transformer_self_attention_layers.append(
                SelfAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm)
            )
            self.transformer_cross_attention_layers.append(
                CrossAttentionLayer(hidden_dim, nheads, dropout=0.0, normalize_before=pre_norm)
            )
            self.transformer_ffn_layers.append(
                FFNLayer(hidden_dim, dim_feedforward=dim_feedforward, dropout=0.0, normalize_before=pre_norm)
            )

        self.decoder_norm = nn.LayerNorm(hidden_dim)

        self.num_queries = num_queries
        self.query_feat = nn.Embedding(num_queries, hidden_dim)  # learnable query features
        self.query_embed = nn.Embedding(num_queries, hidden_dim)  # learnable query positions

        self.num_feature_levels = 3  # always 3 scales
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.input_proj = nn.ModuleList()
        for _ in range(self.num_feature_levels):
            if in_channels != hidden_dim or enforce_input_project:
                proj = Conv2d(in_channels, hidden_dim, kernel_size=1)
                # detectron2's c2_xavier_fill: kaiming-uniform with a=1, zero bias
                nn.init.kaiming_uniform_(proj.weight, a=1)
                nn.init.zeros_(proj.bias)
                self.input_proj.append(proj)
            else:
                self.input_proj.append(nn.Sequential())  # identity with no parameters

        self.class_embed = Linear(hidden_dim, num_classes + 1)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        # created only when enabled, so the default state_dict keeps the official names
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3) if box_head else None

    @classmethod
    def from_config(cls, cfg, in_channels, mask_classification=True):
        mf = cfg.MODEL.MASK_FORMER
        # Official key semantics: DEC_LAYERS counts the predictions, one more than the
        # layers, because the learnable queries' own prediction is supervised too.
        if mf.DEC_LAYERS < 1:
            raise ConfigError(f"MODEL.MASK_FORMER.DEC_LAYERS must be >= 1 (layers + 1), got {mf.DEC_LAYERS}")
        return {
            "in_channels": in_channels,
            "mask_classification": mask_classification,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
            "hidden_dim": mf.HIDDEN_DIM,
            "num_queries": mf.NUM_OBJECT_QUERIES,
            "nheads": mf.NHEADS,
            "dim_feedforward": mf.DIM_FEEDFORWARD,
            "dec_layers": mf.DEC_LAYERS - 1,
            "pre_norm": mf.PRE_NORM,
            "enforce_input_project": mf.ENFORCE_INPUT_PROJ,
            "mask_dim": cfg.MODEL.SEM_SEG_HEAD.MASK_DIM,
            "box_head": mf.BOX_HEAD,
        }

    def forward(self, x: List[Tensor], mask_features: Tensor, mask: Optional[Tensor] = None) -> Dict:
        """See the class docstring. ``mask`` (padding) is ignored, as in the official code."""
        del mask  # official: masking the padded region does not change the results
        if len(x) != self.num_feature_levels:
            raise ValueError(f"expected {self.num_feature_levels} feature levels, got {len(x)}")
        src, pos, size_list = [], [], []
        for i in range(self.num_feature_levels):
            size_list.append((int(x[i].shape[-2]), int(x[i].shape[-1])))
            pos.append(self._position_embedding(x[i]))  # [1, h*w, C], broadcast over the batch
            # [B, C, h, w] -> [B, h*w, C]
            src.append(
                (self.input_proj[i](x[i]).flatten(2) + self.level_embed.weight[i][None, :, None]).transpose(1, 2)
            )

        bs = src[0].shape[0]
        query_embed = self.query_embed.weight.unsqueeze(0).expand(bs, -1, -1)  # [B, Q, C], no copy
        output = self.query_feat.weight.unsqueeze(0).expand(bs, -1, -1)

        # Flattened once and shared by the 10 mask predictions: [B, mask_dim, H*W]
        mask_feat_flat = mask_features.flatten(2)
        mask_hw = mask_features.shape[-2:]

        predictions_class, predictions_mask, predictions_box = [], [], []
        outputs_class, outputs_mask = self._heads(output, mask_feat_flat, mask_hw)
        predictions_class.append(outputs_class)
        predictions_mask.append(outputs_mask)
        predictions_box.append(self._box_head(output))

        for i in range(self.num_layers):
            level_index = i % self.num_feature_levels
            attn_mask = masked_attention_mask(outputs_mask, size_list[level_index])
            # cross-attention first, then self-attention, then FFN (official order)
            output = self.transformer_cross_attention_layers[i](
                output, src[level_index], attn_mask=attn_mask, pos=pos[level_index], query_pos=query_embed
            )
            output = self.transformer_self_attention_layers[i](output, query_pos=query_embed)
            output = self.transformer_ffn_layers[i](output)

            outputs_class, outputs_mask = self._heads(output, mask_feat_flat, mask_hw)
            predictions_class.append(outputs_class)
            predictions_mask.append(outputs_mask)
            predictions_box.append(self._box_head(output))

        out = {
            "pred_logits": predictions_class[-1],
            "pred_masks": predictions_mask[-1],
            "aux_outputs": [
                {"pred_logits": a, "pred_masks": b} for a, b in zip(predictions_class[:-1], predictions_mask[:-1])
            ],
        }
        if self.bbox_embed is not None:
            out.update(predictions_box[-1])
            for aux, boxes in zip(out["aux_outputs"], predictions_box[:-1]):
                aux.update(boxes)
        return out

    def _box_head(self, output: Tensor) -> Optional[Dict[str, Tensor]]:
        """``{"pred_boxes", "pred_boxes_xyxy"}`` [B, Q, 4] (normalized) from queries [B, Q, C];
        None without a box head."""
        if self.bbox_embed is None:
            return None
        boxes = self.bbox_embed(self.decoder_norm(output)).sigmoid()
        return {"pred_boxes": boxes, "pred_boxes_xyxy": box_cxcywh_to_xyxy(boxes)}

    def _position_embedding(self, x: Tensor) -> Tensor:
        """Sine embedding of a [B, C, h, w] map as [1, h*w, hidden_dim] (cached per size)."""
        key = (int(x.shape[-2]), int(x.shape[-1]), x.device)
        pos = self._pos_cache.get(key)
        if pos is None:
            with torch.no_grad():
                pos = self.pe_layer(x[:1], None).flatten(2).transpose(1, 2).contiguous()
            if len(self._pos_cache) >= 16:  # multi-scale inputs: keep the cache bounded
                self._pos_cache.clear()
            self._pos_cache[key] = pos
        return pos

    def _heads(self, output: Tensor, mask_feat_flat: Tensor, mask_hw) -> Tuple[Tensor, Tensor]:
        """Class logits [B, Q, K+1] and mask logits [B, Q, H, W] from queries [B, Q, C]."""
        decoder_output = self.decoder_norm(output)
        outputs_class = self.class_embed(decoder_output)
        mask_embed = self.mask_embed(decoder_output)
        # "bqc,bchw->bqhw" as one batched matmul on the pre-flattened features
        outputs_mask = matmul(mask_embed, mask_feat_flat).view(output.shape[0], output.shape[1], mask_hw[0], mask_hw[1])
        return outputs_class, outputs_mask
