"""The parts of the SAM 3 image model built from its sizes, as the official
``build_sam3_image_model`` assembles them (the defaults are the released model's)."""

from typing import Dict, Optional, Sequence

from torch import nn

from .decoder import TransformerDecoder, TransformerDecoderLayer
from .encoder import TransformerEncoderFusion, TransformerEncoderLayer
from .geometry_encoders import SequenceGeometryEncoder
from .maskformer_segmentation import PixelDecoder, UniversalSegmentationHead
from .model_misc import MLP, DotProductScoring, TransformerWrapper
from .model_misc import MultiheadAttentionWrapper as MultiheadAttention
from .necks import Sam3DualViTDetNeck
from .position_encoding import PositionEmbeddingSine
from .text_encoder_ve import VETextEncoder
from .tokenizer_ve import SimpleTokenizer
from .vitdet import ViT
from .vl_combiner import SAM3VLBackbone

__all__ = ["sam3_components"]


def _encoder_layer(d_model, num_heads, dim_feedforward, dropout, batch_first, pos_at_attn, pos_at_keys):
    return TransformerEncoderLayer(
        activation="relu",
        d_model=d_model,
        dim_feedforward=dim_feedforward,
        dropout=dropout,
        pos_enc_at_attn=pos_at_attn,
        pos_enc_at_cross_attn_keys=pos_at_keys,
        pos_enc_at_cross_attn_queries=False,
        pre_norm=True,
        self_attention=MultiheadAttention(
            num_heads=num_heads, dropout=dropout, embed_dim=d_model, batch_first=batch_first
        ),
        cross_attention=MultiheadAttention(
            num_heads=num_heads, dropout=dropout, embed_dim=d_model, batch_first=batch_first
        ),
    )


def sam3_components(
    img_size: int = 1008,
    patch_size: int = 14,
    vit_embed_dim: int = 1024,
    vit_depth: int = 32,
    vit_num_heads: int = 16,
    vit_mlp_ratio: float = 4.625,
    vit_window_size: int = 24,
    vit_global_att_blocks: Sequence[int] = (7, 15, 23, 31),
    vit_pretrain_img_size: int = 336,
    vit_drop_path_rate: float = 0.1,
    text_width: int = 1024,
    text_heads: int = 16,
    text_layers: int = 24,
    text_context_length: int = 32,
    d_model: int = 256,
    num_heads: int = 8,
    dim_feedforward: int = 2048,
    dropout: float = 0.1,
    encoder_layers: int = 6,
    decoder_layers: int = 6,
    num_queries: int = 200,
    geometry_layers: int = 3,
    tokenizer: Optional[SimpleTokenizer] = None,
    use_act_checkpoint: bool = True,
    enable_segmentation: bool = True,
) -> Dict[str, nn.Module]:
    """``Sam3Image``'s constructor arguments: backbone, transformer, geometry encoder,
    segmentation head (``None`` without ``enable_segmentation``, as the official builder) and
    dot-product scoring, with fresh weights (no SAM 2 tracker)."""
    vit = ViT(
        img_size=img_size,
        pretrain_img_size=vit_pretrain_img_size,
        patch_size=patch_size,
        embed_dim=vit_embed_dim,
        depth=vit_depth,
        num_heads=vit_num_heads,
        mlp_ratio=vit_mlp_ratio,
        norm_layer="LayerNorm",
        drop_path_rate=vit_drop_path_rate,
        qkv_bias=True,
        use_abs_pos=True,
        tile_abs_pos=True,
        global_att_blocks=tuple(vit_global_att_blocks),
        use_rope=True,
        use_interp_rope=True,
        window_size=vit_window_size,
        pretrain_use_cls_token=True,
        ln_pre=True,
        ln_post=False,
        bias_patch_embed=False,
        use_act_checkpoint=use_act_checkpoint,
    )
    position_encoding = PositionEmbeddingSine(num_pos_feats=d_model, normalize=True, temperature=10000)
    neck = Sam3DualViTDetNeck(trunk=vit, position_encoding=position_encoding, d_model=d_model)
    text_encoder = VETextEncoder(
        d_model=d_model,
        tokenizer=tokenizer if tokenizer is not None else SimpleTokenizer(),
        width=text_width,
        heads=text_heads,
        layers=text_layers,
        context_length=text_context_length,
        use_act_checkpoint=use_act_checkpoint,
    )
    backbone = SAM3VLBackbone(visual=neck, text=text_encoder, scalp=1)

    encoder = TransformerEncoderFusion(
        layer=_encoder_layer(d_model, num_heads, dim_feedforward, dropout, True, True, False),
        num_layers=encoder_layers,
        d_model=d_model,
        num_feature_levels=1,
        add_pooled_text_to_img_feat=False,
        pool_text_with_mask=True,
        use_act_checkpoint=use_act_checkpoint,
    )
    decoder_layer = TransformerDecoderLayer(
        activation="relu",
        d_model=d_model,
        dim_feedforward=dim_feedforward,
        dropout=dropout,
        cross_attention=MultiheadAttention(num_heads=num_heads, dropout=dropout, embed_dim=d_model),
        n_heads=num_heads,
        use_text_cross_attention=True,
    )
    decoder = TransformerDecoder(
        d_model=d_model,
        layer=decoder_layer,
        num_layers=decoder_layers,
        num_queries=num_queries,
        return_intermediate=True,
        box_refine=True,
        dac=True,
        boxRPB="log",
        dac_use_selfatt_ln=True,
        use_act_checkpoint=use_act_checkpoint,
        presence_token=True,
        resolution=img_size,
        stride=patch_size,
    )
    transformer = TransformerWrapper(encoder=encoder, decoder=decoder, d_model=d_model)

    prompt_mlp = MLP(
        d_model, dim_feedforward, d_model, 2, dropout=dropout, residual=True, out_norm=nn.LayerNorm(d_model)
    )
    dot_prod_scoring = DotProductScoring(d_model=d_model, d_proj=d_model, prompt_mlp=prompt_mlp)
    segmentation_head = None
    if enable_segmentation:
        segmentation_head = UniversalSegmentationHead(
            hidden_dim=d_model,
            upsampling_stages=3,
            pixel_decoder=PixelDecoder(d_model, 3, interpolation_mode="nearest"),
            cross_attend_prompt=MultiheadAttention(num_heads=num_heads, dropout=0, embed_dim=d_model),
            act_ckpt=use_act_checkpoint,
        )
    geometry_encoder = SequenceGeometryEncoder(
        d_model=d_model,
        pos_enc=PositionEmbeddingSine(num_pos_feats=d_model, normalize=True, temperature=10000),
        num_layers=geometry_layers,
        layer=_encoder_layer(d_model, num_heads, dim_feedforward, dropout, False, False, True),
        use_act_ckpt=use_act_checkpoint,
    )
    return dict(
        backbone=backbone,
        transformer=transformer,
        input_geometry_encoder=geometry_encoder,
        segmentation_head=segmentation_head,
        dot_prod_scoring=dot_prod_scoring,
    )
