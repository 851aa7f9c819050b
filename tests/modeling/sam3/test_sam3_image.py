"""The SAM 3 image model (ViT + neck, text encoder, geometry encoder, fusion encoder, decoder
with presence token / boxRPB / DAC, dot-product scoring, segmentation head) against the
official ``Sam3Image``.

``data/sam3_image_official.pt`` was made with facebookresearch/sam3 (commit in its ``source``):
the official modules assembled as ``sam3/model_builder.py`` does, at the reduced ``sizes`` it
stores (112 px images, ViT width 48 / depth 2 / window 4 / global block 1, text width 32,
d_model 32, 8 queries, 2 + 2 layers, 1 geometry layer), every state-dict tensor overwritten by
``conftest.fill_seeded(model, seed=7)``; ``forward_grounding`` on one seeded image for three
cases (a text prompt; text + a positive and a negative box; two finds with two texts on one
image) in eval mode, and the box case in training mode (dropout and drop-path 0) for the DAC
one-to-many and auxiliary outputs. The box pooling's ``pin_memory`` was made a no-op (no CUDA
driver there). It also stores the official state-dict names, shapes and dtypes.
``data/roi_align_torchvision.pt`` holds torchvision's ``roi_align`` on seeded features.
"""

import os

import pytest
import torch

from segtrain.modeling.sam3.geometry_encoders import Prompt, concat_padded_sequences
from segtrain.modeling.sam3.roi_align import roi_align
from segtrain.modeling.sam3.sam3_image import FindStage, build_sam3_image_model

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@pytest.fixture(scope="module")
def official():
    return torch.load(os.path.join(DATA, "sam3_image_official.pt"), weights_only=True)


def run_case(model, image, case):
    backbone_out = model.backbone.forward_image(image)
    backbone_out.update(model.backbone.forward_text(case["captions"]))
    prompt = model._get_dummy_prompt(len(case["img_ids"]))
    for box, label in case["boxes"]:
        prompt.append_boxes(torch.tensor(box).view(1, 1, 4), torch.tensor([label]).view(1, 1))
    find = FindStage(img_ids=torch.tensor(case["img_ids"]), text_ids=torch.tensor(case["text_ids"]))
    out = model.forward_grounding(backbone_out, find, prompt)
    out.update({k: backbone_out[k] for k in ("vision_features", "language_features", "language_mask")})
    return out


def assert_matches(actual, expected, name):
    if isinstance(expected, list):
        assert len(actual) == len(expected), name
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert sorted(a) == sorted(e), f"{name}[{i}]"
            for key in e:
                assert_matches(a[key], e[key], f"{name}[{i}].{key}")
        return
    assert actual.shape == expected.shape, name
    if expected.dtype == torch.bool:
        assert torch.equal(actual, expected), name
        return
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, atol=1e-4 * max(scale, 1e-3), rtol=0, msg=name)


def test_state_dict_names_shapes_and_dtypes_are_official(official):
    model = build_sam3_image_model(**official["sizes"])
    mine = {k: (tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items()}
    assert mine == official["state_dict_shapes"]


@pytest.mark.parametrize("case", ["text", "text_and_boxes", "two_finds"])
def test_eval_outputs_equal_the_official_model(official, seeded, case):
    model = build_sam3_image_model(**official["sizes"]).eval()
    seeded(model, seed=official["seed"])
    with torch.no_grad():
        out = run_case(model, official["image"], official["cases"][case])
    expected = official["outputs"][case]
    for key, value in expected.items():
        assert_matches(out[key], value, key)
    assert "aux_outputs" not in out and "pred_logits_o2m" not in out


def test_training_outputs_equal_the_official_model(official, seeded):
    model = build_sam3_image_model(**official["sizes"], dropout=0.0, vit_drop_path_rate=0.0).train()
    seeded(model, seed=official["seed"])
    out = run_case(model, official["image"], official["cases"]["text_and_boxes"])
    expected = official["outputs"]["train_text_and_boxes"]
    for key, value in expected.items():
        assert_matches(out[key], value, key)
    num_queries = official["sizes"]["num_queries"]
    assert out["pred_logits_o2m"].shape[1] == num_queries and len(out["aux_outputs"]) == 1
    loss = out["pred_logits"].sum() + out["pred_masks_o2m"].mean() + out["presence_logit_dec"].sum()
    loss.backward()
    assert model.backbone.vision_backbone.trunk.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.transformer.decoder.presence_token.weight.grad.abs().sum() > 0
    assert model.geometry_encoder.boxes_pool_project.weight.grad.abs().sum() > 0


def test_box_prompts_change_the_prediction(official, seeded):
    out = official["outputs"]
    assert not torch.allclose(out["text"]["pred_logits"], out["text_and_boxes"]["pred_logits"])
    model = build_sam3_image_model(**official["sizes"]).eval()
    seeded(model, seed=official["seed"])
    negative = dict(official["cases"]["text_and_boxes"], boxes=[([0.5, 0.5, 0.3, 0.4], False)])
    positive = dict(official["cases"]["text_and_boxes"], boxes=[([0.5, 0.5, 0.3, 0.4], True)])
    with torch.no_grad():
        a = run_case(model, official["image"], negative)["pred_logits"]
        b = run_case(model, official["image"], positive)["pred_logits"]
    assert not torch.allclose(a, b)


def test_roi_align_equals_torchvision():
    ref = torch.load(os.path.join(DATA, "roi_align_torchvision.pt"), weights_only=True)
    out = roi_align(ref["features"], ref["boxes"], 7)
    torch.testing.assert_close(out, ref["output"], atol=1e-6, rtol=0)
    assert roi_align(ref["features"], [torch.zeros(0, 4), torch.zeros(0, 4)], 7).shape == (0, 3, 7, 7)


def test_padded_sequences_and_prompt_appending():
    seq1 = torch.tensor([[[1.0], [4.0]], [[2.0], [0.0]]])  # [2, B=2, 1]; item 1 has one valid entry
    mask1 = torch.tensor([[False, False], [False, True]])
    seq2 = torch.tensor([[[3.0], [5.0]]])
    out, mask = concat_padded_sequences(seq1, mask1, seq2, torch.zeros(2, 1, dtype=torch.bool))
    assert out[:, 0, 0].tolist() == [1.0, 2.0, 3.0] and out[:2, 1, 0].tolist() == [4.0, 5.0]
    assert mask.tolist() == [[False, False, False], [False, False, True]]
    prompt = Prompt(box_embeddings=torch.zeros(0, 1, 4), box_mask=torch.zeros(1, 0, dtype=torch.bool))
    prompt.append_boxes(torch.full((1, 1, 4), 0.5), torch.tensor([[True]]))
    prompt.append_boxes(torch.full((1, 1, 4), 0.25), torch.tensor([[False]]))
    assert prompt.box_embeddings[:, 0, 0].tolist() == [0.5, 0.25] and prompt.box_labels[:, 0].tolist() == [1, 0]
    with pytest.raises(ValueError, match="box_labels has shape"):
        Prompt(box_embeddings=torch.zeros(2, 1, 4), box_labels=torch.ones(3, 1))
