"""MultiScaleMaskedTransformerDecoder: shapes, official key semantics, masked attention."""

import pytest
import torch
import torch.nn.functional as F

from segtrain.config import get_cfg
from segtrain.modeling.mask2former.transformer_decoder import TRANSFORMER_DECODER_REGISTRY
from segtrain.modeling.mask2former.transformer_decoder.mask2former_transformer_decoder import (
    CrossAttentionLayer,
    MultiScaleMaskedTransformerDecoder,
    masked_attention_mask,
)

B, Q, K, C, HEADS, MASK_DIM = 2, 5, 3, 32, 4, 16
LEVEL_SIZES = [(2, 2), (4, 4), (8, 8)]  # strides 32, 16, 8 of a 64x64 image
MASK_SIZE = (16, 16)  # stride 4


def _decoder(dec_layers=9, in_channels=C, **kw):
    torch.manual_seed(0)
    args = dict(
        in_channels=in_channels,
        num_classes=K,
        hidden_dim=C,
        num_queries=Q,
        nheads=HEADS,
        dim_feedforward=64,
        dec_layers=dec_layers,
        pre_norm=False,
        mask_dim=MASK_DIM,
        enforce_input_project=False,
    )
    args.update(kw)
    return MultiScaleMaskedTransformerDecoder(**args).eval()


def _inputs(in_channels=C, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = [torch.randn(B, in_channels, h, w, generator=g) for h, w in LEVEL_SIZES]
    mf = torch.randn(B, MASK_DIM, *MASK_SIZE, generator=g)
    return x, mf


def test_output_shapes_and_ten_predictions():
    dec = _decoder()
    x, mf = _inputs()
    out = dec(x, mf)
    assert out["pred_logits"].shape == (B, Q, K + 1)
    assert out["pred_masks"].shape == (B, Q, *MASK_SIZE)
    assert len(out["aux_outputs"]) == 9  # 10 predictions: queries' own + one per layer
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (B, Q, K + 1) and aux["pred_masks"].shape == (B, Q, *MASK_SIZE)
    # train mode: gradients reach the queries
    dec.train()
    out = dec(x, mf)
    (out["pred_logits"].sum() + out["pred_masks"].sum()).backward()
    assert dec.query_feat.weight.grad is not None and dec.query_embed.weight.grad is not None


def test_first_prediction_comes_from_the_learnable_queries():
    dec = _decoder()
    x, mf = _inputs()
    out = dec(x, mf)
    q = dec.decoder_norm(dec.query_feat.weight)
    expected = torch.einsum("qc,bchw->bqhw", dec.mask_embed(q), mf)
    torch.testing.assert_close(out["aux_outputs"][0]["pred_masks"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["aux_outputs"][0]["pred_logits"], dec.class_embed(q).expand(B, -1, -1))


def test_from_config_dec_layers_official_semantics():
    cfg = get_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = K
    cfg.MODEL.MASK_FORMER.HIDDEN_DIM = C
    cfg.MODEL.MASK_FORMER.NHEADS = HEADS
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = Q
    cfg.MODEL.MASK_FORMER.DIM_FEEDFORWARD = 64
    if "MASK_DIM" not in cfg.MODEL.SEM_SEG_HEAD:
        cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = MASK_DIM
    cfg.MODEL.SEM_SEG_HEAD.MASK_DIM = MASK_DIM
    assert cfg.MODEL.MASK_FORMER.DEC_LAYERS == 10
    dec = TRANSFORMER_DECODER_REGISTRY.get("MultiScaleMaskedTransformerDecoder")(cfg, 48, mask_classification=True)
    assert dec.num_layers == 9 and len(dec.transformer_cross_attention_layers) == 9
    assert all(hasattr(p, "weight") for p in dec.input_proj)  # 48 != 32 channels: 1x1 convs
    x, mf = _inputs(in_channels=48)
    assert len(dec(x, mf)["aux_outputs"]) == 9


def test_identity_input_proj_when_channels_match():
    dec = _decoder()
    assert all(len(list(p.parameters())) == 0 for p in dec.input_proj)
    dec2 = _decoder(enforce_input_project=True)
    assert all(p.weight.shape == (C, C, 1, 1) for p in dec2.input_proj)


def _official_attn_mask(mask_logits, size, nheads):
    """The official formula: resize, sigmoid < 0.5, repeat over heads, all-blocked rows freed."""
    m = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
    m = (m.sigmoid().flatten(2).unsqueeze(1).repeat(1, nheads, 1, 1).flatten(0, 1) < 0.5).bool()
    m[torch.where(m.sum(-1) == m.shape[-1])] = False
    return m


def test_attention_mask_matches_official_formula_and_fallback():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(B, Q, *MASK_SIZE, generator=g)
    logits[0, 1] = -5.0  # query blocked everywhere -> fallback frees the whole row
    logits[1, 2] = 5.0
    ours = masked_attention_mask(logits, (4, 4))
    assert ours.shape == (B, 1, Q, 16)
    assert not ours[0, 0, 1].any() and not ours[1, 0, 2].any()
    ref = _official_attn_mask(logits, (4, 4), HEADS)
    torch.testing.assert_close(ours.expand(B, HEADS, Q, 16).flatten(0, 1), ref)
    assert ours[0, 0, 0].any()  # other rows keep their blocked positions


def test_cross_attention_matches_multihead_attention_with_official_mask():
    torch.manual_seed(0)
    layer = CrossAttentionLayer(C, HEADS).eval()
    tgt, mem = torch.randn(B, Q, C), torch.randn(B, 16, C)
    qpos, pos = torch.randn(B, Q, C), torch.randn(B, 16, C)
    blocked = torch.rand(B, 1, Q, 16) < 0.5
    blocked[..., 0] = False  # no fully blocked row
    ours = layer(tgt, mem, attn_mask=blocked, pos=pos, query_pos=qpos)
    ref_attn = layer.multihead_attn(
        tgt + qpos, mem + pos, mem, attn_mask=blocked.expand(B, HEADS, Q, 16).flatten(0, 1)
    )[0]
    ref = layer.norm(tgt + ref_attn)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def _half_masked_decoder(all_blocked=False):
    """1 layer; every query's mask logits are > 0 on the left half of the image and < 0 on the
    right half (all_blocked: < 0 everywhere), through a constant mask embedding."""
    dec = _decoder(dec_layers=1)
    with torch.no_grad():
        last = dec.mask_embed.layers[2]
        last.weight.zero_()
        last.bias.fill_(1.0)
    x, _ = _inputs()
    mf = torch.ones(B, MASK_DIM, *MASK_SIZE)
    mf[..., MASK_SIZE[1] // 2 :] = -1.0
    return dec, x, (-mf.abs() if all_blocked else mf)


def test_masked_positions_do_not_change_the_output():
    dec, x, mf = _half_masked_decoder()
    mask = masked_attention_mask(dec(x, mf)["aux_outputs"][0]["pred_masks"], LEVEL_SIZES[0])
    assert mask[..., [1, 3]].all() and not mask[..., [0, 2]].any()  # right column of 2x2 blocked
    base = dec(x, mf)["pred_logits"]
    x_masked = [t.clone() for t in x]
    x_masked[0][..., :, 1] += 100.0  # blocked for every query: invisible
    torch.testing.assert_close(dec(x_masked, mf)["pred_logits"], base, rtol=0, atol=1e-6)
    x_open = [t.clone() for t in x]
    x_open[0][..., :, 0] += 1.0  # attended: must change the output
    assert (dec(x_open, mf)["pred_logits"] - base).abs().max() > 1e-3
    # levels 1 and 2 are not read by a 1-layer decoder
    x_other = [t.clone() for t in x]
    x_other[1] += 1.0
    torch.testing.assert_close(dec(x_other, mf)["pred_logits"], base, rtol=0, atol=1e-6)


def test_all_masked_fallback_attends_everywhere():
    dec, x, mf = _half_masked_decoder(all_blocked=True)
    logits = dec(x, mf)["aux_outputs"][0]["pred_masks"]
    assert (logits < 0).all()
    assert not masked_attention_mask(logits, LEVEL_SIZES[0]).any()
    base = dec(x, mf)["pred_logits"]
    assert torch.isfinite(base).all()
    for col in (0, 1):
        x2 = [t.clone() for t in x]
        x2[0][..., :, col] += 1.0
        assert (dec(x2, mf)["pred_logits"] - base).abs().max() > 1e-3


def test_pre_norm_variant_runs():
    dec = _decoder(dec_layers=2, pre_norm=True)
    x, mf = _inputs()
    out = dec(x, mf)
    assert len(out["aux_outputs"]) == 2 and torch.isfinite(out["pred_masks"]).all()


@pytest.mark.parametrize("bad", [dict(nheads=3)])
def test_bad_arguments_fail_clearly(bad):
    from segtrain.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="divisible"):
        _decoder(**bad)


def _official_style_forward(dec, x, mf):
    """Reference: the official formulation (sequence-first tensors, nn.MultiheadAttention with
    the mask repeated over heads, attention weights computed) on the same weights."""
    src, pos, sizes = [], [], []
    for i in range(3):
        sizes.append(x[i].shape[-2:])
        pos.append(dec.pe_layer(x[i], None).flatten(2).permute(2, 0, 1))
        src.append((dec.input_proj[i](x[i]).flatten(2) + dec.level_embed.weight[i][None, :, None]).permute(2, 0, 1))
    bs = x[0].shape[0]
    qe = dec.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)
    out = dec.query_feat.weight.unsqueeze(1).repeat(1, bs, 1)

    def heads(o, size):
        d = dec.decoder_norm(o).transpose(0, 1)
        m = torch.einsum("bqc,bchw->bqhw", dec.mask_embed(d), mf)
        return dec.class_embed(d), m, _official_attn_mask(m, size, dec.num_heads)

    c, m, a = heads(out, sizes[0])
    preds = [(c, m)]
    for i in range(dec.num_layers):
        lvl = i % 3
        ca, sa = dec.transformer_cross_attention_layers[i], dec.transformer_self_attention_layers[i]
        t2 = ca.multihead_attn(
            (out + qe).transpose(0, 1), (src[lvl] + pos[lvl]).transpose(0, 1), src[lvl].transpose(0, 1), attn_mask=a
        )[0].transpose(0, 1)
        out = ca.norm(out + t2)
        q = (out + qe).transpose(0, 1)
        out = sa.norm(out + sa.self_attn(q, q, out.transpose(0, 1))[0].transpose(0, 1))
        out = dec.transformer_ffn_layers[i].norm(
            out + dec.transformer_ffn_layers[i].linear2(F.relu(dec.transformer_ffn_layers[i].linear1(out)))
        )
        c, m, a = heads(out, sizes[(i + 1) % 3])
        preds.append((c, m))
    return preds


@pytest.mark.parametrize("in_channels", [C, 24])
def test_matches_official_formulation(in_channels):
    dec = _decoder(dec_layers=4, in_channels=in_channels)
    x, mf = _inputs(in_channels=in_channels)
    with torch.no_grad():
        out = dec(x, mf)
        ref = _official_style_forward(dec, x, mf)
    ours = [(a["pred_logits"], a["pred_masks"]) for a in out["aux_outputs"]] + [(out["pred_logits"], out["pred_masks"])]
    assert len(ours) == len(ref) == 5
    for (c, m), (rc, rm) in zip(ours, ref):
        torch.testing.assert_close(c, rc, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(m, rm, rtol=1e-4, atol=1e-4)


def test_runs_under_bf16_autocast():
    dec = _decoder(dec_layers=3).train()
    x, mf = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dec(x, mf)
    assert torch.isfinite(out["pred_masks"].float()).all() and len(out["aux_outputs"]) == 3
    out["pred_masks"].float().sum().backward()
    assert torch.isfinite(dec.query_feat.weight.grad).all()


def test_position_embedding_cache_matches_direct_computation():
    dec = _decoder(dec_layers=1)
    x, _ = _inputs()
    for _ in range(2):  # second call served from the cache
        for t in x:
            direct = dec.pe_layer(t, None).flatten(2).transpose(1, 2)
            torch.testing.assert_close(dec._position_embedding(t).expand_as(direct), direct)
    assert len(dec._pos_cache) == 3
