"""Pixel decoders (MSDeformAttnPixelDecoder, BasePixelDecoder) and the sine position embedding."""

import math

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.layers.position_encoding import PositionEmbeddingSine
from segtrain.modeling.mask2former import MSDeformAttnPixelDecoder
from segtrain.modeling.pixel_decoder import PIXEL_DECODER_REGISTRY, BasePixelDecoder, build_pixel_decoder
from segtrain.structures.shape_spec import ShapeSpec
from segtrain.utils.errors import ConfigError

SHAPES = {
    "res2": ShapeSpec(channels=8, stride=4),
    "res3": ShapeSpec(channels=16, stride=8),
    "res4": ShapeSpec(channels=24, stride=16),
    "res5": ShapeSpec(channels=40, stride=32),
}


def _features(B=2, H=64, W=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(B, s.channels, H // s.stride, W // s.stride, generator=g) for k, s in SHAPES.items()}


def _tiny_msdeform(**kw):
    args = dict(
        transformer_dropout=0.0,
        transformer_nheads=4,
        transformer_dim_feedforward=64,
        transformer_enc_layers=2,
        conv_dim=32,
        mask_dim=16,
        norm="GN",
        transformer_in_features=["res3", "res4", "res5"],
        common_stride=4,
    )
    args.update(kw)
    return MSDeformAttnPixelDecoder(SHAPES, **args)


def test_msdeform_shapes_and_names():
    torch.manual_seed(0)
    dec = _tiny_msdeform()
    mask, enc, ms = dec.forward_features(_features())
    assert mask.shape == (2, 16, 16, 24)
    assert enc.shape == (2, 32, 2, 3)
    assert [tuple(m.shape) for m in ms] == [(2, 32, 2, 3), (2, 32, 4, 6), (2, 32, 8, 12)]
    keys = set(dec.state_dict())
    for k in (
        "input_proj.0.0.weight",
        "input_proj.2.1.bias",
        "transformer.level_embed",
        "transformer.encoder.layers.1.self_attn.sampling_offsets.weight",
        "transformer.encoder.layers.0.linear1.weight",
        "transformer.encoder.layers.0.norm2.bias",
        "adapter_1.weight",
        "adapter_1.norm.weight",
        "layer_1.weight",
        "layer_1.norm.bias",
        "mask_features.weight",
    ):
        assert k in keys, k
    assert dec.transformer.level_embed.shape == (3, 32)
    # input_proj.0 projects the coarsest input (res5, 40 channels)
    assert dec.input_proj[0][0].in_channels == 40 and dec.input_proj[2][0].in_channels == 16
    assert not any(k.startswith(("lateral_convs", "output_convs")) for k in keys)


def test_msdeform_backward_reaches_every_parameter():
    torch.manual_seed(0)
    dec = _tiny_msdeform()
    feats = {k: v.requires_grad_(True) for k, v in _features(H=64, W=64).items()}
    mask, _, ms = dec.forward_features(feats)
    (mask.square().mean() + sum(m.square().mean() for m in ms)).backward()
    no_grad = [n for n, p in dec.named_parameters() if p.grad is None]
    assert not no_grad
    assert all(f.grad is not None for f in feats.values())


def test_msdeform_runs_in_float32_under_autocast():
    torch.manual_seed(0)
    dec = _tiny_msdeform(transformer_enc_layers=1)
    feats = {k: v.bfloat16() for k, v in _features(B=1, H=32, W=64).items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mask, _, ms = dec.forward_features(feats)
    assert mask.dtype == torch.float32 and all(m.dtype == torch.float32 for m in ms)


def test_msdeform_rejects_missing_transformer_feature():
    with pytest.raises(ConfigError, match="res6"):
        _tiny_msdeform(transformer_in_features=["res4", "res5", "res6"])


def test_base_pixel_decoder():
    torch.manual_seed(0)
    dec = BasePixelDecoder(SHAPES, conv_dim=32, mask_dim=16, norm="GN")
    mask, enc, ms = dec.forward_features(_features())
    assert enc is None and mask.shape == (2, 16, 16, 24)
    assert [tuple(m.shape) for m in ms] == [(2, 32, 2, 3), (2, 32, 4, 6), (2, 32, 8, 12)]
    keys = set(dec.state_dict())
    assert {"adapter_1.weight", "layer_4.weight", "layer_4.norm.weight", "mask_features.weight"} <= keys
    assert "adapter_4.weight" not in keys  # the coarsest level has no lateral conv
    no_bias = BasePixelDecoder(SHAPES, conv_dim=8, mask_dim=8, norm="")
    assert "layer_1.bias" in no_bias.state_dict()


def test_build_from_config():
    cfg = get_cfg()
    assert cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME in PIXEL_DECODER_REGISTRY.names()
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = 8
    cfg.MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS = 1
    cfg.MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_DIM_FEEDFORWARD = 32
    cfg.MODEL.MASK_FORMER.NHEADS = 4
    dec = build_pixel_decoder(cfg, SHAPES)
    assert isinstance(dec, MSDeformAttnPixelDecoder)
    assert dec.transformer.encoder.layers[0].linear1.out_features == 32
    assert dec.forward_features(_features(B=1, H=64, W=64))[0].shape == (1, 8, 16, 16)
    cfg.MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME = "BasePixelDecoder"
    assert isinstance(build_pixel_decoder(cfg, SHAPES), BasePixelDecoder)


def test_position_embedding_sine():
    pe = PositionEmbeddingSine(4, normalize=True)
    x = torch.zeros(1, 3, 2, 5)
    pos = pe(x)
    assert pos.shape == (1, 8, 2, 5)
    # channel 0 = sin(y_embed / 1), y_embed = row / H * 2pi (rows counted from 1)
    y = torch.tensor([1.0, 2.0]) / (2 + 1e-6) * 2 * math.pi
    torch.testing.assert_close(pos[0, 0, :, 0], torch.sin(y))
    # channel 5 = cos(x_embed / 10000 ** (2 * (1 // 2) / 4)) = cos(x_embed)
    xs = torch.arange(1.0, 6.0) / (5 + 1e-6) * 2 * math.pi
    torch.testing.assert_close(pos[0, 5, 0, :], torch.cos(xs))
    # channel 6 = sin(x_embed / 10000 ** (2 / 4)) = sin(x_embed / 100)
    torch.testing.assert_close(pos[0, 6, 1, :], torch.sin(xs / 100))
    # a padding mask changes the extent used for normalisation
    mask = torch.zeros(1, 2, 5, dtype=torch.bool)
    mask[:, :, 4:] = True
    assert not torch.allclose(pe(x, mask), pos)
    with pytest.raises(ValueError):
        PositionEmbeddingSine(4, normalize=False, scale=1.0)
