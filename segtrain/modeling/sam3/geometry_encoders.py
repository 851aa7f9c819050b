"""SAM 3's geometry / exemplar encoder: box and point prompts (positive or negative) become
prompt tokens from a direct projection of their coordinates, features pooled from the image
(RoIAlign for boxes, bilinear sampling for points) and their sine position encodings, plus a
label embedding; a CLS token is appended and a few pre-norm layers attend to the image."""

import copy
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .model_misc import box_cxcywh_to_xyxy
from .roi_align import roi_align

__all__ = ["Prompt", "SequenceGeometryEncoder", "concat_padded_sequences"]


def concat_padded_sequences(seq1: Tensor, mask1: Tensor, seq2: Tensor, mask2: Tensor):
    """Join two right-padded sequences [L, B, C] (masks [B, L], True at padding) so that the
    valid items of ``seq2`` follow those of ``seq1`` directly. Returns the sequence
    [L1 + L2, B, C] and its mask."""
    len1, batch, hidden = seq1.shape
    len2 = seq2.shape[0]
    if not (mask1.shape == (batch, len1) and mask2.shape == (batch, len2) and seq2.shape[1:] == (batch, hidden)):
        raise ValueError(
            f"concat_padded_sequences: shapes {tuple(seq1.shape)}, {tuple(mask1.shape)}, "
            f"{tuple(seq2.shape)}, {tuple(mask2.shape)} do not fit"
        )
    valid1 = (~mask1).sum(dim=-1)
    final_lengths = valid1 + (~mask2).sum(dim=-1)
    concatenated_mask = torch.arange(len1 + len2, device=seq2.device)[None].repeat(batch, 1) >= final_lengths[:, None]
    out = torch.zeros((len1 + len2, batch, hidden), device=seq2.device, dtype=seq2.dtype)
    out[:len1] = seq1
    index = torch.arange(len2, device=seq2.device)[:, None].repeat(1, batch) + valid1[None]
    out = out.scatter(0, index[:, :, None].expand(-1, -1, hidden), seq2)
    return out, concatenated_mask


class Prompt:
    """Geometric prompts of a batch, sequence first: boxes [Nb, B, 4] (normalized cxcywh) and
    points [Np, B, 2] (normalized xy), labels [N, B] (1 positive, 0 negative), masks [B, N]
    (True at padding). Missing parts are empty; labels default to positive."""

    def __init__(self, box_embeddings=None, box_mask=None, point_embeddings=None, point_mask=None,
                 box_labels=None, point_labels=None):  # fmt: skip
        ref = box_embeddings if box_embeddings is not None else point_embeddings
        if ref is None:
            raise ValueError("Prompt: give box_embeddings or point_embeddings (they may be empty)")
        bs, device = ref.shape[1], ref.device
        if box_embeddings is None:
            box_embeddings = torch.zeros(0, bs, 4, device=device)
        if point_embeddings is None:
            point_embeddings = torch.zeros(0, bs, 2, device=device)
        nb, npt = box_embeddings.shape[0], point_embeddings.shape[0]
        self.box_embeddings = box_embeddings
        self.point_embeddings = point_embeddings
        self.box_labels = torch.ones(nb, bs, device=device, dtype=torch.long) if box_labels is None else box_labels
        self.point_labels = (
            torch.ones(npt, bs, device=device, dtype=torch.long) if point_labels is None else point_labels
        )
        self.box_mask = torch.zeros(bs, nb, device=device, dtype=torch.bool) if box_mask is None else box_mask
        self.point_mask = torch.zeros(bs, npt, device=device, dtype=torch.bool) if point_mask is None else point_mask
        for name, t, shape in (
            ("box_embeddings", self.box_embeddings, (nb, bs, 4)),
            ("point_embeddings", self.point_embeddings, (npt, bs, 2)),
            ("box_labels", self.box_labels, (nb, bs)),
            ("point_labels", self.point_labels, (npt, bs)),
            ("box_mask", self.box_mask, (bs, nb)),
            ("point_mask", self.point_mask, (bs, npt)),
        ):
            if tuple(t.shape) != shape:
                raise ValueError(f"Prompt: {name} has shape {tuple(t.shape)}, expected {shape}")

    def _append(self, kind: str, values: Tensor, labels: Tensor, mask: Optional[Tensor]):
        emb, lab, msk = (getattr(self, f"{kind}_{s}") for s in ("embeddings", "labels", "mask"))
        if mask is None:
            mask = torch.zeros(values.shape[1], values.shape[0], dtype=torch.bool, device=values.device)
        new_labels, _ = concat_padded_sequences(lab.unsqueeze(-1), msk, labels.to(lab.dtype).unsqueeze(-1), mask)
        new_emb, new_mask = concat_padded_sequences(emb, msk, values.to(emb.dtype), mask)
        setattr(self, f"{kind}_labels", new_labels.squeeze(-1))
        setattr(self, f"{kind}_embeddings", new_emb)
        setattr(self, f"{kind}_mask", new_mask)

    def append_boxes(self, boxes: Tensor, labels: Tensor, mask: Optional[Tensor] = None) -> None:
        """Add boxes [N, B, 4] with labels [N, B] after the valid ones of each batch item."""
        self._append("box", boxes, labels, mask)

    def append_points(self, points: Tensor, labels: Tensor, mask: Optional[Tensor] = None) -> None:
        self._append("point", points, labels, mask)

    def clone(self) -> "Prompt":
        return Prompt(self.box_embeddings.clone(), self.box_mask.clone(), self.point_embeddings.clone(),
                      self.point_mask.clone(), self.box_labels.clone(), self.point_labels.clone())  # fmt: skip


class SequenceGeometryEncoder(nn.Module):
    """``forward(geo_prompt, img_feats, img_sizes, img_pos_embeds)`` with image features and
    positions as lists of sequence-first maps [h * w, B, C] and their (h, w) returns the prompt
    tokens [Np + Nb + 1, B, C] (points, boxes, CLS; right-padded) and their mask [B, N]."""

    def __init__(
        self,
        d_model: int,
        pos_enc: nn.Module,
        num_layers: int,
        layer: Optional[nn.Module],
        encode_boxes_as_points: bool = False,
        points_direct_project: bool = True,
        points_pool: bool = True,
        points_pos_enc: bool = True,
        boxes_direct_project: bool = True,
        boxes_pool: bool = True,
        boxes_pos_enc: bool = True,
        roi_size: int = 7,
        add_cls: bool = True,
        add_post_encode_proj: bool = True,
        use_act_ckpt: bool = False,
    ):
        super().__init__()
        if encode_boxes_as_points:
            raise ValueError("SequenceGeometryEncoder: encode_boxes_as_points is not supported")
        if num_layers > 0 and not add_cls:
            raise ValueError("SequenceGeometryEncoder: encoder layers need add_cls=True")
        self.d_model = d_model
        self.pos_enc = pos_enc
        self.roi_size = roi_size
        self.label_embed = nn.Embedding(2, d_model)
        self.cls_embed = nn.Embedding(1, d_model) if add_cls else None
        self.points_direct_project = nn.Linear(2, d_model) if points_direct_project else None
        self.points_pool_project = nn.Linear(d_model, d_model) if points_pool else None
        self.points_pos_enc_project = nn.Linear(d_model, d_model) if points_pos_enc else None
        self.boxes_direct_project = nn.Linear(4, d_model) if boxes_direct_project else None
        self.boxes_pool_project = nn.Conv2d(d_model, d_model, roi_size) if boxes_pool else None
        self.boxes_pos_enc_project = nn.Linear(d_model + 2, d_model) if boxes_pos_enc else None
        self.final_proj = None
        if add_post_encode_proj:
            self.final_proj = nn.Linear(d_model, d_model)
            self.norm = nn.LayerNorm(d_model)
        pools = self.points_pool_project is not None or self.boxes_pool_project is not None
        self.img_pre_norm = nn.LayerNorm(d_model) if pools else nn.Identity()
        self.encode = None
        if num_layers > 0:
            self.encode = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
            self.encode_norm = nn.LayerNorm(d_model)
        self.use_act_ckpt = use_act_ckpt

    @staticmethod
    def _add(total: Optional[Tensor], proj: Tensor) -> Tensor:
        return proj if total is None else total + proj

    def _encode_points(self, points: Tensor, labels: Tensor, img_feats: Optional[Tensor]) -> Tensor:
        n_points, bs = points.shape[:2]
        embed = None
        if self.points_direct_project is not None:
            embed = self.points_direct_project(points)
        if self.points_pool_project is not None:
            grid = points.transpose(0, 1).unsqueeze(2) * 2 - 1  # [B, Np, 1, 2]
            sampled = F.grid_sample(img_feats, grid, align_corners=False)  # [B, C, Np, 1]
            embed = self._add(embed, self.points_pool_project(sampled.squeeze(-1).permute(2, 0, 1)))
        if self.points_pos_enc_project is not None:
            x, y = points.unbind(-1)
            enc_x, enc_y = self.pos_enc._encode_xy(x.flatten(), y.flatten())
            enc = torch.cat([enc_x.view(n_points, bs, enc_x.shape[-1]), enc_y.view(n_points, bs, enc_y.shape[-1])], -1)
            embed = self._add(embed, self.points_pos_enc_project(enc))
        return self.label_embed(labels.long()) + embed

    def _encode_boxes(self, boxes: Tensor, labels: Tensor, img_feats: Optional[Tensor]) -> Tensor:
        n_boxes, bs = boxes.shape[:2]
        embed = None
        if self.boxes_direct_project is not None:
            embed = self.boxes_direct_project(boxes)
        if self.boxes_pool_project is not None:
            H, W = img_feats.shape[-2:]
            scale = torch.tensor([W, H, W, H], dtype=boxes.dtype, device=boxes.device).view(1, 1, 4)
            boxes_xyxy = (box_cxcywh_to_xyxy(boxes) * scale).float()
            sampled = roi_align(img_feats, boxes_xyxy.transpose(0, 1).unbind(0), self.roi_size)
            proj = self.boxes_pool_project(sampled).view(bs, n_boxes, self.d_model).transpose(0, 1)
            embed = self._add(embed, proj)
        if self.boxes_pos_enc_project is not None:
            cx, cy, w, h = boxes.unbind(-1)
            enc = self.pos_enc.encode_boxes(cx.flatten(), cy.flatten(), w.flatten(), h.flatten())
            embed = self._add(embed, self.boxes_pos_enc_project(enc.view(n_boxes, bs, enc.shape[-1])))
        return self.label_embed(labels.long()) + embed

    def forward(
        self,
        geo_prompt: Prompt,
        img_feats: List[Tensor],
        img_sizes: Sequence[Tuple[int, int]],
        img_pos_embeds: Optional[List[Tensor]] = None,
    ) -> Tuple[Tensor, Tensor]:
        seq_first_img_feats = img_feats[-1]  # [HW, B, C]
        seq_first_pos = img_pos_embeds[-1] if img_pos_embeds is not None else torch.zeros_like(seq_first_img_feats)
        pooled_feats = None
        if self.points_pool_project is not None or self.boxes_pool_project is not None:
            H, W = (int(s) for s in img_sizes[-1])
            feat = self.img_pre_norm(seq_first_img_feats)
            pooled_feats = feat.permute(1, 2, 0).reshape(feat.shape[1], feat.shape[2], H, W)
        points_embed = self._encode_points(geo_prompt.point_embeddings, geo_prompt.point_labels, pooled_feats)
        boxes_embed = self._encode_boxes(geo_prompt.box_embeddings, geo_prompt.box_labels, pooled_feats)
        embeds, mask = concat_padded_sequences(points_embed, geo_prompt.point_mask, boxes_embed, geo_prompt.box_mask)
        bs = embeds.shape[1]
        if self.cls_embed is not None:
            cls = self.cls_embed.weight.view(1, 1, self.d_model).repeat(1, bs, 1)
            embeds, mask = concat_padded_sequences(
                embeds, mask, cls, torch.zeros(bs, 1, dtype=mask.dtype, device=mask.device)
            )
        if self.final_proj is not None:
            embeds = self.norm(self.final_proj(embeds))
        if self.encode is not None:
            for layer in self.encode:
                # positional: tgt, memory, tgt_mask, memory_mask, tgt_key_padding_mask,
                # memory_key_padding_mask, pos
                args = (embeds, seq_first_img_feats, None, None, mask, None, seq_first_pos)
                if self.training and self.use_act_ckpt and torch.is_grad_enabled():
                    embeds = checkpoint(layer, *args, use_reentrant=False)
                else:
                    embeds = layer(*args)
            embeds = self.encode_norm(embeds)
        return embeds, mask
