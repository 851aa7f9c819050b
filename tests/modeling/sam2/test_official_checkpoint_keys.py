"""The SAM 2.1 presets have exactly the official model's parameters: a state dict with the
official key set and shapes loads strictly into each of them.

``data/official_sam2.1_state_dict_keys.json`` lists (name, shape) of ``model.state_dict()``
for the official ``sam2.1_hiera_{t,s,b+,l}.yaml`` models, made once by instantiating them
with hydra from facebookresearch/sam2 at commit 2b90b9f5ceec907a1c18123530e92e794ad901a4
(the released checkpoints are ``{"model": state_dict}`` with these keys). The presets are
built on the meta device (no memory for the weights), so the full-size models are cheap.
"""

import json
import os

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.modeling.sam2 import PromptPlan, VideoTracker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
KEYS = os.path.join(os.path.dirname(__file__), "data", "official_sam2.1_state_dict_keys.json")
PRESETS = ("t", "s", "b+", "l")


def _official(name):
    with open(KEYS) as f:
        return {k: tuple(shape) for k, shape in json.load(f)[f"sam2.1_hiera_{name}"]}


def _build(name):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "projects", "sam2", f"sam2.1_hiera_{name}.yaml"))
    with torch.device("meta"):
        return VideoTracker(cfg)


def _meta_state(keys):
    return {k: torch.empty(shape, device="meta") for k, shape in keys.items()}


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loads_the_official_state_dict_strictly(name):
    official = _official(name)
    model = _build(name)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(official)) == [] and sorted(set(official) - set(ours)) == []
    assert {k: s for k, s in ours.items() if official[k] != s} == {}
    model.load_state_dict(_meta_state(official), strict=True, assign=True)


def test_tiny_counts_and_a_wrong_tensor_is_refused():
    official = _official("t")
    assert len(official) == 471  # the released sam2.1_hiera_tiny.pt holds 471 tensors
    model = _build("t")
    state = _meta_state(official)
    state["no_mem_pos_enc"] = torch.empty(1, 1, 128, device="meta")
    with pytest.raises(RuntimeError, match="no_mem_pos_enc"):
        model.load_state_dict(state, strict=True, assign=True)
    del state["no_mem_pos_enc"]
    with pytest.raises(RuntimeError, match="Missing key"):
        model.load_state_dict(state, strict=True, assign=True)


@pytest.mark.slow
def test_hiera_preset_trains_at_a_small_size(sam2_tools):
    """The sam2.1_hiera_t model (Hiera, RoPE memory attention, dropout) through the training
    loop at 128 px: every loss is finite and gradients reach the trunk and the memory."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "projects", "sam2", "sam2.1_hiera_t.yaml"))
    cfg.MODEL.SAM2.IMAGE_SIZE = cfg.INPUT.VIDEO.IMAGE_SIZE = 128
    torch.manual_seed(0)
    model = VideoTracker(cfg).train()
    batch = sam2_tools.clip_batch(128)
    losses = model.losses(batch, PromptPlan(True, [0], [0, 2]))
    assert all(torch.isfinite(v) for v in losses.values())
    losses["core_loss"].backward()
    for name in (
        "image_encoder.trunk.patch_embed.proj.weight",
        "memory_attention.layers.0.cross_attn_image.k_proj.weight",
    ):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
