"""The full-size SAM 3 image model against the official state-dict layout, and loading the
released checkpoint's layout strictly.

``data/sam3_image_official_keys.json`` lists, in order, the name, shape and dtype of every
tensor of the official image model's ``state_dict()`` (facebookresearch/sam3, commit in its
``source``; the modules of ``sam3/model_builder.py build_sam3_image_model`` with
``enable_inst_interactivity=False``, built on the meta device). The released ``sam3.pt`` holds
these under ``detector.`` next to ``tracker.*`` and ``detector.backbone.vision_backbone.sam2_convs.*``.
Models here are built on the meta device: shapes without memory.
"""

import json
import os

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.modeling import build_model
from segtrain.modeling.sam3 import Sam3Image

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
PROJECT = os.path.join(os.path.dirname(__file__), "..", "..", "..", "projects", "sam3", "sam3_image.yaml")


@pytest.fixture(scope="module")
def official_keys():
    with open(os.path.join(DATA, "sam3_image_official_keys.json")) as f:
        return json.load(f)["keys"]


@pytest.fixture(scope="module")
def model():
    cfg = get_cfg()
    cfg.merge_from_file(PROJECT)
    with torch.device("meta"):
        return Sam3Image(cfg)


def released_layout(official_keys):
    """A checkpoint with the released file's layout (meta tensors)."""
    state = {
        f"detector.{name}": torch.empty(shape, dtype=getattr(torch, dtype), device="meta")
        for name, shape, dtype in official_keys
    }
    state["tracker.maskmem_tpos_enc"] = torch.empty(7, 1, 1, 64, device="meta")
    state["tracker.sam_mask_decoder.iou_token.weight"] = torch.empty(1, 256, device="meta")
    state["detector.backbone.vision_backbone.sam2_convs.0.conv_1x1.weight"] = torch.empty(256, 256, 1, 1, device="meta")
    return state


def test_full_size_model_has_the_official_tensors(model, official_keys):
    mine = [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()]
    assert len(mine) == len(official_keys) == 1134
    assert mine == official_keys
    assert sum(torch.Size(shape).numel() for _, shape, _ in official_keys) == 841_689_398


def test_released_checkpoint_layout_loads_strictly(model, official_keys):
    state, set_aside = model.convert_weights(released_layout(official_keys))
    assert sorted(set_aside) == [
        "detector.backbone.vision_backbone.sam2_convs.0.conv_1x1.weight",
        "tracker.maskmem_tpos_enc",
        "tracker.sam_mask_decoder.iou_token.weight",
    ]
    model.load_state_dict(state, strict=True)
    # segtrain's own checkpoints (no "detector." prefix) pass through unchanged
    own = {k: v for k, v in state.items()}
    assert model.convert_weights(own) == (own, [])


def test_any_other_mismatch_is_refused(model, official_keys):
    state, _ = model.convert_weights(released_layout(official_keys))
    missing = dict(state)
    del missing["transformer.decoder.presence_token.weight"]
    with pytest.raises(RuntimeError, match="presence_token"):
        model.load_state_dict(missing, strict=True)
    extra = dict(state, **{"detector_extra.weight": torch.empty(1, device="meta")})
    with pytest.raises(RuntimeError, match="detector_extra"):
        model.load_state_dict(extra, strict=True)
    reshaped = dict(state, **{"dot_prod_scoring.hs_proj.weight": torch.empty(256, 128, device="meta")})
    with pytest.raises(RuntimeError, match="hs_proj"):
        model.load_state_dict(reshaped, strict=True)


def test_config_keys_size_the_model(tiny_sam3_cfg):
    cfg = tiny_sam3_cfg("MODEL.SAM3.DECODER.NUM_LAYERS", 3)
    model = build_model(cfg)
    assert isinstance(model, Sam3Image)
    assert len(model.transformer.decoder.layers) == 3 and model.transformer.decoder.query_embed.num_embeddings == 8
    assert len(model.backbone.vision_backbone.trunk.blocks) == 2
    assert model.backbone.language_backbone.tokenizer.context_length == 77  # the tokenizer's own default
    assert model.backbone.language_backbone.context_length == 32
