"""``Sam3Processor`` / ``build_image_processor`` against the official ``Sam3Processor``.

``data/sam3_processor_official.pt`` was made with facebookresearch/sam3 (commit in its
``source``): the official ``Sam3Processor(model, resolution=112, device="cpu",
confidence_threshold=0.302)`` on the reduced official ``Sam3Image`` of
``sam3_image_official.pt`` (same sizes, weights ``conftest.fill_seeded(model, seed=11)``), with a
seeded uint8 image given as a [3, 48, 64] tensor (a shape the official code reads correctly).
Calls, in order: ``set_image``; ``set_text_prompt("a red car")``; ``add_geometric_prompt`` of a
positive then a negative box; ``set_confidence_threshold(0.305, state)``; ``reset_all_prompts``,
threshold back to 0.302, a positive box alone; ``set_confidence_threshold(0.9, state)``. After
each it stored ``scores``, ``boxes`` and ``masks`` (and ``masks_logits`` for the first two). It
also stores torchvision ``v2.Resize((112, 112))`` of a seeded uint8 [3, 150, 200] image.
"""

import os

import numpy as np
import pytest
import torch

from segtrain.modeling.sam3 import Sam3Processor, build_image_processor, predict_instances
from segtrain.modeling.sam3.sam3_image import build_sam3_image_model
from segtrain.modeling.sam3.sam3_image_processor import load_sam3_weights
from segtrain.utils.errors import CheckpointError

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@pytest.fixture(scope="module")
def official():
    return torch.load(os.path.join(DATA, "sam3_processor_official.pt"), weights_only=True)


def released_checkpoint(model, path):
    """The model's weights in the released file's layout: under "detector.", plus tracker keys."""
    state = {f"detector.{k}": v for k, v in model.state_dict().items()}
    state["tracker.maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 64)
    state["detector.backbone.vision_backbone.sam2_convs.0.conv_1x1.weight"] = torch.zeros(32, 48, 1, 1)
    torch.save(state, path)


@pytest.fixture(scope="module")
def processor(official, seeded, tiny_sam3_cfg, tmp_path_factory):
    reference = build_sam3_image_model(**official["sizes"])
    seeded(reference, seed=official["seed"])
    path = str(tmp_path_factory.mktemp("sam3") / "sam3.pt")
    released_checkpoint(reference, path)
    cfg = tiny_sam3_cfg("MODEL.WEIGHTS", path, "MODEL.SAM3.TEST.CONFIDENCE_THRESHOLD", official["threshold"])
    return build_image_processor(cfg)


def check_step(state, expected):
    name = expected["name"]
    assert state["scores"].shape == expected["scores"].shape, name
    torch.testing.assert_close(state["scores"], expected["scores"], atol=1e-5, rtol=0, msg=name)
    torch.testing.assert_close(state["boxes"], expected["boxes"], atol=1e-3, rtol=0, msg=name)
    assert state["masks"].dtype == torch.bool and state["masks"].shape == expected["masks"].shape, name
    assert (state["masks"] != expected["masks"]).sum() <= 1e-3 * expected["masks"].numel(), name
    if "masks_logits" in expected:
        torch.testing.assert_close(state["masks_logits"], expected["masks_logits"], atol=1e-5, rtol=0, msg=name)


def test_calls_and_results_equal_the_official_processor(processor, official):
    assert not processor.model.training
    steps = {s["name"]: s for s in official["steps"]}
    p = processor
    p.set_confidence_threshold(official["threshold"])
    state = p.set_image(official["image"])
    check_step(p.set_text_prompt("a red car", state), steps["text"])
    check_step(p.add_geometric_prompt([0.5, 0.5, 0.3, 0.4], True, state), steps["text+pos_box"])
    check_step(p.add_geometric_prompt([0.2, 0.3, 0.2, 0.2], False, state), steps["text+pos_box+neg_box"])
    check_step(p.set_confidence_threshold(0.305, state), steps["threshold_0.305"])
    p.reset_all_prompts(state)
    assert "scores" not in state and "language_features" not in state["backbone_out"]
    p.set_confidence_threshold(official["threshold"])
    check_step(p.add_geometric_prompt([0.4, 0.6, 0.5, 0.3], True, state), steps["box_only"])
    state = p.set_confidence_threshold(0.9, state)
    check_step(state, steps["nothing_kept"])
    assert state["masks_logits"].shape == (0, 1, 48, 64)
    # masks_logits hold probabilities, masks are them above 0.5
    assert torch.equal(p.set_confidence_threshold(0.0, state)["masks"], state["masks_logits"] > 0.5)
    assert state["masks_logits"].min() >= 0 and state["masks_logits"].max() <= 1


def test_numpy_images_are_read_as_height_width(processor, official):
    hwc = official["image"].permute(1, 2, 0).numpy()
    state = processor.set_image(np.ascontiguousarray(hwc))
    assert (state["original_height"], state["original_width"]) == (48, 64)
    processor.set_confidence_threshold(0.0)
    state = processor.set_text_prompt("a red car", state)
    assert state["masks"].shape[-2:] == (48, 64)
    assert float(state["boxes"][:, 0::2].max()) <= 64 * 2 and state["scores"].shape == (8,)


def test_resize_equals_torchvision(official):
    proc = Sam3Processor(build_sam3_image_model(**official["sizes"]), resolution=112, device="cpu")
    normalized = proc.preprocess(official["resize_input"])
    expected = (official["resize_output"].float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(normalized[0], expected, atol=1.01 * 2 / 255, rtol=0)
    assert (normalized[0] - expected).abs().gt(1e-6).float().mean() < 0.01


def test_tokenizer_at_the_official_module_path(processor):
    tokens = processor.model.backbone.language_backbone.tokenizer(["a red car"], context_length=32)
    assert tokens.shape == (1, 32) and tokens[0, :5].tolist() == [49406, 320, 736, 1615, 49407]


def test_bad_inputs_are_clear_errors(processor, tmp_path):
    with pytest.raises(ValueError, match="call set_image first"):
        processor.set_text_prompt("cat", {})
    with pytest.raises(ValueError, match=r"uint8 RGB array \[H, W, 3\]"):
        processor.set_image(np.zeros((4, 4), dtype=np.uint8))
    state = processor.set_image(np.zeros((8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="box must be"):
        processor.add_geometric_prompt([0.5, 0.5, 0.1], True, state)
    bad = tmp_path / "bad.pt"
    torch.save({"detector.transformer.decoder.norm.weight": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match=r"do not fit the model .* not in the file .* of another shape"):
        load_sam3_weights(processor.model, str(bad))


def test_predict_instances_collects_every_prompt(processor, official):
    processor.set_confidence_threshold(official["threshold"])
    hwc = np.ascontiguousarray(official["image"].permute(1, 2, 0).numpy())
    inst = predict_instances(processor, hwc, ["a red car", "person"])
    state = processor.set_text_prompt("a red car", processor.set_image(hwc))
    n = len(state["scores"])
    assert inst.image_size == (48, 64) and len(inst) >= n
    assert inst.pred_classes[:n].eq(0).all() and inst.pred_classes[n:].eq(1).all()
    torch.testing.assert_close(inst.scores[:n], state["scores"])
    assert inst.pred_masks.dtype == torch.bool and inst.pred_masks.shape[1:] == (48, 64)
    with pytest.raises(ValueError, match="non-empty list"):
        predict_instances(processor, hwc, "a red car")
