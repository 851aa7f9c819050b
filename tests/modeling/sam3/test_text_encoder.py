"""SAM 3's text encoder against the official ``VETextEncoder``.

``data/text_encoder_official.pt`` was made with facebookresearch/sam3 (commit in its
``source``), ``sam3/model/text_encoder_ve.py``: ``VETextEncoder(d_model=32, width=64, heads=4,
layers=2, context_length=32)`` with the official tokenizer, every state-dict tensor overwritten
by ``conftest.fill_seeded(module, seed=26)``, run on three prompts (one longer than the context)
under ``torch.no_grad()`` in eval and in train mode; it stores the config, prompts, token ids,
the state-dict names and shapes and the three outputs.
"""

import os

import pytest
import torch

from segtrain.modeling.sam3 import SimpleTokenizer, VETextEncoder


@pytest.fixture(scope="module")
def official():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "text_encoder_official.pt")
    return torch.load(path, weights_only=True)


_TOKENIZER = SimpleTokenizer()


def make_encoder(official, seeded):
    encoder = VETextEncoder(tokenizer=_TOKENIZER, **official["config"])
    seeded(encoder, seed=official["seed"])
    return encoder


def test_parameter_names_and_shapes_are_official(official):
    encoder = VETextEncoder(tokenizer=_TOKENIZER, **official["config"])
    shapes = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    assert shapes == official["state_dict_shapes"]


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_outputs_equal_the_official_encoder(official, seeded, mode):
    encoder = make_encoder(official, seeded).train(mode == "train")
    assert torch.equal(encoder.tokenizer(official["prompts"], context_length=32), official["tokens"])
    with torch.no_grad():
        mask, memory, embeds = encoder(official["prompts"])
    expected = official["outputs"][mode]
    assert torch.equal(mask, expected["text_attention_mask"])
    assert mask.dtype == torch.bool and mask[0].sum() == 32 - 5  # "a red car": sot + 3 + eot
    scale = expected["text_memory_resized"].abs().max()
    torch.testing.assert_close(memory, expected["text_memory_resized"], atol=1e-5 * scale, rtol=0)
    torch.testing.assert_close(embeds, expected["inputs_embeds"], atol=1e-6, rtol=0)


def test_gradients_flow_with_activation_checkpointing(official, seeded):
    encoder = make_encoder(official, seeded).train()
    assert encoder.encoder.transformer.grad_checkpointing
    _, memory, _ = encoder(["a cat", "two dogs"])
    memory.sum().backward()
    # text_projection serves only the pooled output, which SAM 3 does not use (nor does the official model)
    no_grad = [n for n, p in encoder.named_parameters() if p.grad is None]
    assert no_grad == ["encoder.text_projection"]
    assert encoder.encoder.transformer.resblocks[0].attn.in_proj_weight.grad.abs().sum() > 0


def test_causal_attention_prefix_is_independent_of_later_tokens(official, seeded):
    encoder = make_encoder(official, seeded).eval()
    with torch.no_grad():
        _, short, _ = encoder(["red"])
        _, longer, _ = encoder(["red car on a road"])
    # position 0 (start token) and 1 ("red") see only themselves and earlier tokens
    torch.testing.assert_close(short[:2], longer[:2])
    assert not torch.allclose(short[2], longer[2])


def test_encoded_triple_passes_through_and_bad_input_fails(official, seeded):
    encoder = make_encoder(official, seeded).eval()
    mask = torch.zeros(2, 32, dtype=torch.bool)
    memory = torch.randn(32, 2, 32)
    embeds = torch.randn(2, 32, 64)
    out = encoder((mask, memory, {"inputs_embeds": embeds}))
    assert out[0] is mask and out[1] is memory and torch.equal(out[2], embeds.transpose(0, 1))
    with pytest.raises(ValueError, match="input_boxes"):
        encoder(["cat"], input_boxes=[torch.zeros(1, 4)])
    with pytest.raises(TypeError, match="list of prompts"):
        encoder([])
    with pytest.raises(ValueError, match="context_length 32"):
        encoder.encoder(torch.zeros(1, 40, dtype=torch.long))
