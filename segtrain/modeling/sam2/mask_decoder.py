"""SAM 2 mask decoder: a two-way transformer between output tokens (object score, IoU, mask
tokens) plus prompt tokens and the image embedding, then 4x upsampling with high-resolution
skip features and one hypernetwork MLP per mask token."""

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .common import MLP, Attention, LayerNorm2d

__all__ = ["TwoWayTransformer", "MaskDecoder"]


class _TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image cross-attention, token MLP, image->token cross-attention."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, downsample_rate: int, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = Attention(dim, num_heads, downsample_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Linear(mlp_dim, dim))
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = Attention(dim, num_heads, downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor) -> Tuple[Tensor, Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a final token->image attention.
    forward(image [N, C, h, w], image_pe [N, C, h, w], tokens [N, K, C])
    -> (tokens [N, K, C], image [N, h*w, C])."""

    def __init__(
        self, depth: int, embedding_dim: int, num_heads: int, mlp_dim: int, attention_downsample_rate: int = 2
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            _TwoWayAttentionBlock(
                embedding_dim, num_heads, mlp_dim, attention_downsample_rate, skip_first_layer_pe=i == 0
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(self, image_embedding: Tensor, image_pe: Tensor, point_embedding: Tensor) -> Tuple[Tensor, Tensor]:
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys


class MaskDecoder(nn.Module):
    """Predict ``num_multimask_outputs`` masks + 1 single mask, their IoUs and an object score.

    transformer_dim: C. conv_s0 / conv_s1 project the two high-resolution levels (strides
    1/4 and 1/2 of the embedding's) to C/8 and C/4 channels; the model applies them once per
    image and passes the results as ``high_res_features``.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = True,
        iou_prediction_use_sigmoid: bool = True,
        pred_obj_scores: bool = True,
        pred_obj_scores_mlp: bool = True,
        use_multimask_token_for_obj_ptr: bool = True,
    ):
        super().__init__()
        c = transformer_dim
        self.transformer_dim = c
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, c)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, c)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, c)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(c, c // 4, kernel_size=2, stride=2),
            LayerNorm2d(c // 4),
            nn.GELU(),
            nn.ConvTranspose2d(c // 4, c // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(c, c // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(c, c // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(c, c, c // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(
            c, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth, sigmoid_output=iou_prediction_use_sigmoid
        )
        if pred_obj_scores:
            self.pred_obj_score_head = MLP(c, c, 1, 3) if pred_obj_scores_mlp else nn.Linear(c, 1)

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
        high_res_features: Optional[List[Tensor]] = None,
    ):
        """image_embeddings: [N, C, h, w] (one per object); image_pe: [1, C, h, w];
        sparse: [N, P, C]; dense: [N, C, h, w]; high_res_features: [N, C/8, 4h, 4w] and
        [N, C/4, 2h, 2w]. Returns (masks [N, M, 4h, 4w] logits, iou_pred [N, M],
        sam_tokens_out [N, M', C] (the token(s) behind the returned masks),
        object_score_logits [N, 1]) with M = num_multimask_outputs if ``multimask_output`` else 1."""
        n, c, h, w = image_embeddings.shape
        tokens = [self.iou_token.weight, self.mask_tokens.weight]
        s = 0
        if self.pred_obj_scores:
            tokens = [self.obj_score_token.weight] + tokens
            s = 1
        output_tokens = torch.cat(tokens, dim=0).unsqueeze(0).expand(n, -1, -1)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings.to(output_tokens.dtype)], dim=1)
        src = image_embeddings + dense_prompt_embeddings
        pos_src = image_pe.expand(n, -1, -1, -1)
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, s]
        mask_tokens_out = hs[:, s + 1 : s + 1 + self.num_mask_tokens]

        src = src.transpose(1, 2).reshape(n, c, h, w)
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        if self.use_high_res_features:
            if high_res_features is None:
                raise ValueError("MaskDecoder(use_high_res_features=True) needs high_res_features")
            feat_s0, feat_s1 = high_res_features
            up = act1(ln1(dc1(src) + feat_s1))
            up = act2(dc2(up) + feat_s0)
        else:
            up = act2(dc2(act1(ln1(dc1(src)))))
        hyper_in = torch.stack([mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], 1)
        b, cu, hu, wu = up.shape
        masks = (hyper_in @ up.reshape(b, cu, hu * wu)).reshape(b, -1, hu, wu)
        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0])
        else:  # "always an object", as SAM 2 without object scores
            object_score_logits = 10.0 * iou_pred.new_ones(iou_pred.shape[0], 1)

        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        else:
            masks, iou_pred = masks[:, 0:1], iou_pred[:, 0:1]
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            sam_tokens_out = mask_tokens_out[:, 0:1]
        return masks, iou_pred, sam_tokens_out, object_score_logits
