"""SAM prompt encoder (the official ``sam/prompt_encoder.py``): points and boxes -> sparse
tokens, a mask logit map -> a dense embedding added to the image embedding."""

from typing import Optional, Tuple, Type

import torch
from torch import Tensor, nn

from .common import LayerNorm2d
from .position_encoding import PositionEmbeddingRandom

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
        mask_in_chans: int,
        activation: Type[nn.Module] = nn.GELU,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = tuple(input_image_size)
        self.image_embedding_size = tuple(image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.num_point_embeddings = 4  # positive / negative click, two box corners
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(self.num_point_embeddings))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * self.image_embedding_size[0], 4 * self.image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            activation(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            activation(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> Tensor:
        """[1, C, h, w] position encoding of the image embedding grid."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: Tensor, labels: Tensor, pad: bool) -> Tensor:
        points = points + 0.5  # pixel centres
        if pad:
            points = torch.cat([points, torch.zeros((points.shape[0], 1, 2), device=points.device)], dim=1)
            labels = torch.cat([labels, -torch.ones((labels.shape[0], 1), device=labels.device)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        emb = torch.where((labels == -1).unsqueeze(-1), torch.zeros_like(emb) + self.not_a_point_embed.weight, emb)
        for k, point_embedding in enumerate(self.point_embeddings):
            emb = torch.where((labels == k).unsqueeze(-1), emb + point_embedding.weight, emb)
        return emb

    def _embed_boxes(self, boxes: Tensor) -> Tensor:
        coords = (boxes + 0.5).reshape(-1, 2, 2)
        corner_embedding = self.pe_layer.forward_with_coords(coords, self.input_image_size)
        corner_embedding[:, 0, :] += self.point_embeddings[2].weight[0]
        corner_embedding[:, 1, :] += self.point_embeddings[3].weight[0]
        return corner_embedding

    def _get_batch_size(self, points, boxes, masks) -> int:
        if points is not None:
            return points[0].shape[0]
        if boxes is not None:
            return boxes.shape[0]
        if masks is not None:
            return masks.shape[0]
        return 1

    def forward(
        self, points: Optional[Tuple[Tensor, Tensor]], boxes: Optional[Tensor], masks: Optional[Tensor]
    ) -> Tuple[Tensor, Tensor]:
        """points: (coords [N, P, 2] (x, y) in input pixels, labels [N, P] int) or None;
        boxes: [N, 4] (x0, y0, x1, y1) or None; masks: [N, 1, 4h, 4w] logits or None.
        Returns (sparse [N, P', C]: the points (plus a padding point when there is no box),
        then the two box corners; dense [N, C, h, w])."""
        bs = self._get_batch_size(points, boxes, masks)
        sparse = torch.empty((bs, 0, self.embed_dim), device=self.point_embeddings[0].weight.device)
        if points is not None:
            coords, labels = points
            sparse = torch.cat([sparse, self._embed_points(coords, labels, pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse, dense
