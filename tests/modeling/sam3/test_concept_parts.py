"""Concept detector parts: box helpers, prompt encoder, decoder (refinement, presence token,
one-to-many isolation), two-stage proposals, heads."""

import pytest
import torch

from segtrain.modeling.sam3 import (
    ConceptDecoder,
    ConceptPromptEncoder,
    DotProductScoring,
    EncoderProposals,
    FusionEncoder,
    MaskHead,
    box_sine_embed,
    grid_anchors,
    group_attention_mask,
    inverse_sigmoid,
)

C = 16


def test_inverse_sigmoid_and_box_embedding():
    x = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0])
    y = inverse_sigmoid(x)
    torch.testing.assert_close(y[1:4].sigmoid(), x[1:4])
    assert torch.isfinite(y).all() and y[0] < -10 and y[-1] > 10
    e = box_sine_embed(torch.rand(2, 3, 4), num_feats=8)
    assert e.shape == (2, 3, 32)
    # block order (cy, cx, w, h): the first block only depends on cy
    b = torch.tensor([[0.3, 0.6, 0.1, 0.2]])
    b2 = b.clone()
    b2[0, 0] = 0.9
    torch.testing.assert_close(box_sine_embed(b, 8)[:, :8], box_sine_embed(b2, 8)[:, :8])
    assert not torch.allclose(box_sine_embed(b, 8)[:, 8:16], box_sine_embed(b2, 8)[:, 8:16])


def test_prompt_encoder_rejects_unknown_concepts():
    enc = ConceptPromptEncoder(num_concepts=3, num_tokens=2, dim=C)
    assert enc(torch.tensor([0, 2, 2])).shape == (3, 2, C)
    with pytest.raises(ValueError, match=r"concept id 3 outside \[0, 3\)"):
        enc(torch.tensor([1, 3]))


def test_group_mask_blocks_only_across_groups():
    assert group_attention_mask(1, 3, 0) is None
    m = group_attention_mask(1, 2, 2)[0, 0]
    expected = torch.tensor(
        [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool
    )
    assert torch.equal(m, expected)


def _decoder(**kw):
    torch.manual_seed(0)
    args = dict(
        dim=C, nheads=2, dim_feedforward=32, num_layers=3, num_queries=4, num_o2m_queries=3, presence_token=True
    )
    args.update(kw)
    return ConceptDecoder(**args).eval()


def test_decoder_outputs_and_refinement():
    dec = _decoder()
    memory, pos, prompt = torch.randn(2, 12, C), torch.randn(1, 12, C), torch.randn(2, 2, C)
    layers = dec(memory, pos, prompt, with_o2m=True)
    assert len(layers) == 3
    for hs, boxes, presence in layers:
        assert hs.shape == (2, 7, C) and boxes.shape == (2, 7, 4) and presence.shape == (2, C)
        assert ((boxes > 0) & (boxes < 1)).all()
    # the last regression layer starts at zero: the first prediction is the reference itself
    torch.testing.assert_close(layers[0][1], dec.reference_boxes()[None].expand(2, -1, -1), atol=1e-6, rtol=0)
    torch.nn.init.normal_(dec.bbox_embed.layers[-1].weight, std=0.1)
    layers = dec(memory, pos, prompt)
    assert not torch.allclose(layers[1][1], layers[0][1])  # refined layer by layer


def test_one_to_many_queries_do_not_change_one_to_one_outputs():
    dec = _decoder()
    memory, pos, prompt = torch.randn(2, 12, C), torch.randn(1, 12, C), torch.randn(2, 2, C)
    with_o2m = dec(memory, pos, prompt, with_o2m=True)
    without = dec(memory, pos, prompt, with_o2m=False)
    for (h1, b1, p1), (h0, b0, p0) in zip(with_o2m, without):
        assert h0.shape[1] == 4
        torch.testing.assert_close(h1[:, :4], h0, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(b1[:, :4], b0, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(p1, p0, atol=1e-5, rtol=1e-5)


def test_decoder_without_presence_token():
    dec = _decoder(presence_token=False, num_o2m_queries=0)
    layers = dec(torch.randn(1, 6, C), None, torch.randn(1, 2, C), with_o2m=True)
    assert layers[-1][0].shape == (1, 4, C) and layers[-1][2] is None


def test_fusion_encoder_uses_the_prompt():
    torch.manual_seed(0)
    enc = FusionEncoder(C, 2, 32, num_layers=1).eval()
    src, pos = torch.randn(1, 9, C), torch.randn(1, 9, C)
    a = enc(src, torch.randn(1, 2, C), pos)
    b = enc(src, torch.randn(1, 2, C), pos)
    assert a.shape == (1, 9, C) and not torch.allclose(a, b)


def test_proposals_anchors_and_selection():
    anchors = grid_anchors(2, 4)
    torch.testing.assert_close(
        anchors[:, :2],
        torch.tensor(
            [
                [0.125, 0.25],
                [0.375, 0.25],
                [0.625, 0.25],
                [0.875, 0.25],
                [0.125, 0.75],
                [0.375, 0.75],
                [0.625, 0.75],
                [0.875, 0.75],
            ]
        ),
    )
    torch.testing.assert_close(anchors[0, 2:], torch.tensor([0.5, 1.0]))
    torch.manual_seed(0)
    prop = EncoderProposals(C)
    fs = prop(torch.randn(3, 8, C), torch.randn(3, 2, C), (2, 4))
    assert fs["pred_logits"].shape == (3, 8, 1) and fs["pred_boxes"].shape == (3, 8, 4)
    torch.testing.assert_close(fs["pred_boxes"], anchors.expand(3, -1, -1), atol=1e-4, rtol=0)  # zero-init regression
    sel = EncoderProposals.select(fs, 5)
    top = fs["pred_logits"][..., 0].topk(5, dim=1).indices
    torch.testing.assert_close(sel, torch.gather(fs["pred_boxes"], 1, top[..., None].expand(-1, -1, 4)))
    assert EncoderProposals.select(fs, 20).shape == (3, 8, 4) and not sel.requires_grad


def test_heads_shapes_and_priors():
    torch.manual_seed(0)
    scoring = DotProductScoring(C)
    hs, prompt = torch.randn(2, 5, C), torch.randn(2, 3, C)
    logits = scoring(hs, prompt)
    p = scoring.prompt_mlp(prompt).mean(1)
    torch.testing.assert_close(logits[..., 0], torch.einsum("bqc,bc->bq", scoring.query_proj(hs), p) / C**0.5)
    head = MaskHead(C, 8)
    px = head.pixel_embedding(torch.randn(2, 8, 6, 6), torch.randn(2, C, 3, 3))
    masks = head(hs, px)
    assert px.shape == (2, 8, 6, 6) and masks.shape == (2, 5, 6, 6)
    torch.testing.assert_close(head.mask_bias.sigmoid(), torch.tensor(0.1))  # background prior
    torch.testing.assert_close(masks, torch.einsum("bqc,bchw->bqhw", head.mask_embed(hs), px) + head.mask_bias)
