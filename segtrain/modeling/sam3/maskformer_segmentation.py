"""SAM 3's segmentation head: the encoder's image tokens attend to the prompt, replace the
coarsest neck level, an FPN-style pixel decoder upsamples them, and the queries' mask
embeddings are dotted with per-pixel instance embeddings; a 1x1 conv gives a semantic map."""

import math
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .model_misc import MLP

__all__ = ["PixelDecoder", "MaskPredictor", "UniversalSegmentationHead"]


class PixelDecoder(nn.Module):
    """Top-down: upsample the coarser map (nearest), add the finer one, 3x3 conv, GroupNorm(8), ReLU.

    ``forward(feats)`` with maps [B, C, h_i, w_i], largest first, returns [B, C, h_0, w_0].
    """

    def __init__(self, hidden_dim: int, num_upsampling_stages: int, interpolation_mode: str = "nearest"):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.num_upsampling_stages = num_upsampling_stages
        self.interpolation_mode = interpolation_mode
        self.conv_layers = nn.ModuleList(
            nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1) for _ in range(num_upsampling_stages)
        )
        self.norms = nn.ModuleList(nn.GroupNorm(8, hidden_dim) for _ in range(num_upsampling_stages))
        self.out_dim = hidden_dim

    def forward(self, backbone_feats: List[Tensor]) -> Tensor:
        prev = backbone_feats[-1]
        for layer_idx, feat in enumerate(backbone_feats[:-1][::-1]):
            prev = feat + F.interpolate(prev, size=feat.shape[-2:], mode=self.interpolation_mode)
            prev = F.relu(self.norms[layer_idx](self.conv_layers[layer_idx](prev)))
        return prev


class MaskPredictor(nn.Module):
    """Mask logits ``mask_embed(queries) . pixel_embed``: [B, Q, C] x [B, C, H, W] -> [B, Q, H, W]."""

    def __init__(self, hidden_dim: int, mask_dim: int):
        super().__init__()
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)

    def forward(self, obj_queries: Tensor, pixel_embed: Tensor) -> Tensor:
        return torch.einsum("bqc,bchw->bqhw", self.mask_embed(obj_queries), pixel_embed)


class UniversalSegmentationHead(nn.Module):
    """Instance and semantic outputs from the encoder memory and the decoder queries.

    ``forward(backbone_feats, obj_queries, image_ids, encoder_hidden_states, prompt, prompt_mask)``:
    backbone_feats are the neck maps [N_img, C, h_i, w_i] (largest first), obj_queries
    [layers, B, Q, C] for B finds on images ``image_ids`` [B], encoder_hidden_states
    [h * w, B, C] for the coarsest map, prompt [L, B, C] with mask [B, L]. Returns
    ``pred_masks`` [B, Q, h_0, w_0] (from the last layer's queries), ``semantic_seg``
    [B, 1, h_0, w_0] and ``presence_logit`` (None: SAM 3 scores presence in the decoder).
    """

    def __init__(
        self,
        hidden_dim: int,
        upsampling_stages: int,
        pixel_decoder: nn.Module,
        cross_attend_prompt: Optional[nn.Module] = None,
        act_ckpt: bool = False,
    ):
        super().__init__()
        self.d_model = hidden_dim
        self.pixel_decoder = pixel_decoder
        self.mask_predictor = MaskPredictor(hidden_dim, mask_dim=hidden_dim)
        self.act_ckpt = act_ckpt
        self.instance_keys = ["pred_masks"]
        self.cross_attend_prompt = cross_attend_prompt
        if cross_attend_prompt is not None:
            self.cross_attn_norm = nn.LayerNorm(hidden_dim)
        self.semantic_seg_head = nn.Conv2d(self.pixel_decoder.out_dim, 1, kernel_size=1)
        self.instance_seg_head = nn.Conv2d(self.pixel_decoder.out_dim, hidden_dim, kernel_size=1)

    def _embed_pixels(self, backbone_feats: List[Tensor], image_ids: Tensor, encoder_hidden_states: Tensor) -> Tensor:
        # One row per find: the image features of each find's image (a single image broadcasts).
        if backbone_feats[0].shape[0] > 1:
            feats = [feat[image_ids.to(feat.device)] for feat in backbone_feats]
        else:
            feats = list(backbone_feats)
        coarsest = feats[-1]
        spatial = math.prod(coarsest.shape[-2:])
        states = encoder_hidden_states.permute(1, 2, 0)[..., :spatial]  # [B, C, h * w]
        feats[-1] = states.reshape(-1, *coarsest.shape[1:])
        if self.act_ckpt and self.training and torch.is_grad_enabled():
            return checkpoint(self.pixel_decoder, feats, use_reentrant=False)
        return self.pixel_decoder(feats)

    def forward(
        self,
        backbone_feats: List[Tensor],
        obj_queries: Tensor,
        image_ids: Tensor,
        encoder_hidden_states: Tensor,
        prompt: Optional[Tensor] = None,
        prompt_mask: Optional[Tensor] = None,
    ) -> Dict[str, Optional[Tensor]]:
        if self.cross_attend_prompt is not None:
            tgt2 = self.cross_attend_prompt(
                query=self.cross_attn_norm(encoder_hidden_states),
                key=prompt,
                value=prompt,
                key_padding_mask=prompt_mask,
            )[0]
            encoder_hidden_states = tgt2 + encoder_hidden_states
        pixel_embed = self._embed_pixels(backbone_feats, image_ids, encoder_hidden_states)
        instance_embeds = self.instance_seg_head(pixel_embed)
        return {
            "pred_masks": self.mask_predictor(obj_queries[-1], instance_embeds),
            "semantic_seg": self.semantic_seg_head(pixel_embed),
            "presence_logit": None,
        }
