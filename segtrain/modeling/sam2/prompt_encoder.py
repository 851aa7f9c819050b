"""SAM prompt encoder: points (and boxes, as two corner points) -> sparse tokens, a mask
logit map -> a dense embedding added to the image embedding."""

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from .common import LayerNorm2d, PositionEmbeddingRandom

__all__ = ["PromptEncoder", "POINT_LABELS"]

# Point labels, as in SAM 2: -1 padding ("not a point"), 0 negative click, 1 positive click,
# 2 / 3 the top-left / bottom-right corners of a box.
POINT_LABELS = {"pad": -1, "negative": 0, "positive": 1, "box_top_left": 2, "box_bottom_right": 3}


class PromptEncoder(nn.Module):
    """Embed point / box / mask prompts for the mask decoder.

    embed_dim: C. image_embedding_size: (h, w) of the image embedding. input_image_size:
    (H, W) of the model input, the frame of point coordinates. mask_in_chans: hidden
    channels of the mask downscaling convs; mask prompts are logits of size (4h, 4w).
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: Tuple[int, int],
        input_image_size: Tuple[int, int],
        mask_in_chans: int = 16,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * self.image_embedding_size[0], 4 * self.image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> Tensor:
        """[1, C, h, w] position encoding of the image embedding grid."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: Tensor, labels: Tensor, pad: bool) -> Tensor:
        points = points.float() + 0.5  # pixel centres
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
        pe = self.pe_layer.forward_with_coords(points, self.input_image_size)
        lab = labels[..., None]
        out = pe * (lab != -1) + self.not_a_point_embed.weight * (lab == -1)
        for k, emb in enumerate(self.point_embeddings):
            out = out + emb.weight * (lab == k)
        return out

    def forward(self, points: Optional[Tuple[Tensor, Tensor]], masks: Optional[Tensor], batch_size: int):
        """points: (coords [N, P, 2] (x, y) in input pixels, labels [N, P] int) or None;
        masks: [N, 1, 4h, 4w] logits or None. Returns (sparse [N, P + 1, C] (P + 1 tokens
        with the padding point; [N, 0, C] without points), dense [N, C, h, w])."""
        device = self.no_mask_embed.weight.device
        if points is not None:
            sparse = self._embed_points(points[0], points[1], pad=True)
        else:
            sparse = torch.empty((batch_size, 0, self.embed_dim), device=device)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch_size, -1, h, w)
        return sparse, dense
