"""``ConceptHead``: everything of the concept detector after the pixel decoder."""

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn

from segtrain.layers.position_encoding import PositionEmbeddingSine
from segtrain.structures.boxes import box_cxcywh_to_xyxy

from .concept_decoder import ConceptDecoder
from .fusion_encoder import FusionEncoder
from .heads import DotProductScoring, MaskHead, PresenceHead
from .prompt_encoder import ConceptPromptEncoder
from .proposals import EncoderProposals

__all__ = ["ConceptHead"]


class ConceptHead(nn.Module):
    """Prompt encoder -> fusion encoder -> (two-stage proposals) -> decoder -> heads.

    forward(src [N, C, h, w] image tokens of N images (already projected to C), mask_features
    [N, M, H, W] (FPN, stride 4), image_index int64 [B] (the image of each find), concepts
    int64 [B], with_o2m) -> the SAM 3 outputs dict (docs/losses.md):
    ``pred_logits [B, Q, 1]``, ``pred_boxes [B, Q, 4]`` normalized cxcywh, ``pred_boxes_xyxy``,
    ``pred_masks [B, Q, H, W]`` logits, ``presence_logit_dec [B, 1]`` (with a presence token),
    ``aux_outputs`` (one dict per earlier decoder layer, same keys), ``first_stage`` (two-stage:
    logits and boxes of the S = h*w encoder proposals) and, with ``with_o2m`` and one-to-many
    queries, ``pred_logits_o2m`` [B, Q2, 1], ``pred_boxes_o2m``, ``pred_boxes_xyxy_o2m``,
    ``pred_masks_o2m`` in every decoder output. Masks of aux / first-stage outputs only
    with ``aux_masks`` (the official ``Masks`` piece does not use them).
    """

    def __init__(
        self,
        *,
        num_concepts: int,
        prompt_tokens: int,
        dim: int,
        nheads: int,
        dim_feedforward: int,
        enc_layers: int,
        dec_layers: int,
        num_queries: int,
        num_o2m_queries: int = 0,
        presence_token: bool = True,
        two_stage: bool = False,
        mask_dim: int,
        dropout: float = 0.0,
        aux_masks: bool = False,
    ):
        super().__init__()
        if dim % nheads != 0:
            raise ValueError(f"ConceptHead: MODEL.CONCEPT.HIDDEN_DIM ({dim}) must be divisible by NHEADS ({nheads})")
        self.num_queries = int(num_queries)
        self.num_o2m_queries = int(num_o2m_queries)
        self.two_stage = bool(two_stage)
        self.aux_masks = bool(aux_masks)
        self.prompt_encoder = ConceptPromptEncoder(num_concepts, prompt_tokens, dim)
        self.pe_layer = PositionEmbeddingSine(dim // 2, normalize=True)
        self.encoder = FusionEncoder(dim, nheads, dim_feedforward, enc_layers, dropout)
        self.proposals = EncoderProposals(dim) if two_stage else None
        self.decoder = ConceptDecoder(
            dim=dim,
            nheads=nheads,
            dim_feedforward=dim_feedforward,
            num_layers=dec_layers,
            num_queries=num_queries,
            num_o2m_queries=num_o2m_queries,
            presence_token=presence_token,
            dropout=dropout,
        )
        self.scoring = DotProductScoring(dim)
        self.presence_head = PresenceHead(dim) if presence_token else None
        self.mask_head = MaskHead(dim, mask_dim)

    def _references(self, first_stage: Dict[str, Tensor], with_o2m: bool) -> Tensor:
        """Decoder reference boxes [B, Q (+ Q2), 4]: the best proposals, learned ones where
        there are fewer proposals than queries."""
        B = first_stage["pred_boxes"].shape[0]
        learned = self.decoder.reference_boxes().detach()
        n = self.num_queries + (self.num_o2m_queries if with_o2m else 0)
        ref = learned[:n].unsqueeze(0).expand(B, -1, -1).clone()
        groups = [(0, self.num_queries)] + ([(self.num_queries, self.num_o2m_queries)] if n > self.num_queries else [])
        for start, size in groups:
            top = EncoderProposals.select(first_stage, size)
            ref[:, start : start + top.shape[1]] = top.to(ref.dtype)
        return ref

    def _predict(self, hs: Tensor, boxes: Tensor, prompt: Tensor, pixel_embed: Optional[Tensor]) -> Dict[str, Tensor]:
        out = {
            "pred_logits": self.scoring(hs, prompt),
            "pred_boxes": boxes,
            "pred_boxes_xyxy": box_cxcywh_to_xyxy(boxes),
        }
        if pixel_embed is not None:
            out["pred_masks"] = self.mask_head(hs, pixel_embed)
        return out

    def forward(
        self, src: Tensor, mask_features: Tensor, image_index: Tensor, concepts: Tensor, with_o2m: bool = False
    ) -> Dict[str, Any]:
        h, w = src.shape[-2:]
        prompt = self.prompt_encoder(concepts)  # [B, T, C]
        with torch.no_grad():
            pos = self.pe_layer(src[:1]).flatten(2).transpose(1, 2).to(src.dtype)  # [1, S, C]
        tokens = src.flatten(2).transpose(1, 2)[image_index]  # [B, S, C]
        memory = self.encoder(tokens, prompt, pos)
        B, S, C = memory.shape
        pixel_embed = self.mask_head.pixel_embedding(
            mask_features[image_index], memory.transpose(1, 2).reshape(B, C, h, w)
        )
        with_o2m = with_o2m and self.num_o2m_queries > 0

        first_stage = None
        ref = None
        if self.proposals is not None:
            fs = self.proposals(memory, prompt, (h, w))
            ref = self._references(fs, with_o2m)
            first_stage = {k: v for k, v in fs.items() if k != "hs"}
            if self.aux_masks:
                first_stage["pred_masks"] = self.mask_head(fs["hs"], pixel_embed)

        layers = self.decoder(memory, pos, prompt, ref, with_o2m)
        preds: List[Dict[str, Tensor]] = []
        Q = self.num_queries
        for i, (hs, boxes, presence) in enumerate(layers):
            last = i == len(layers) - 1
            px = pixel_embed if (last or self.aux_masks) else None
            p = self._predict(hs[:, :Q], boxes[:, :Q], prompt, px)
            if with_o2m:
                o2m = self._predict(hs[:, Q:], boxes[:, Q:], prompt, px)
                p.update({f"{k}_o2m": v for k, v in o2m.items()})
            if presence is not None:
                p["presence_logit_dec"] = self.presence_head(presence, prompt)
            preds.append(p)
        out: Dict[str, Any] = dict(preds[-1])
        out["aux_outputs"] = preds[:-1]
        if first_stage is not None:
            out["first_stage"] = first_stage
        return out
