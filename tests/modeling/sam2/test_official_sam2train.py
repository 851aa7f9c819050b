"""Parity of ``VideoTracker.forward_tracking`` (training mode) with the official ``SAM2Train``.

``data/official_sam2train.pt`` was made once with facebookresearch/sam2 at commit
2b90b9f5ceec907a1c18123530e92e794ad901a4: ``SAM2Train`` instantiated from ``sam2.1_hiera_t.yaml``
with ``++model.image_size=128`` and the memory attention's dropout 0 (so that training mode is
deterministic), weights from ``synthetic_state_dict`` (conftest.py), in training mode, on
``clip_batch(128)`` (conftest.py: 3 frames, 2 objects; the images normalized by segtrain's
``normalize_frames``), with the prompts set by hand: GT masks on the initial conditioning
frames 0 and 2, no correction clicks; ``forward_tracking``'s multistep outputs stored (masks
at every 4th pixel). Frame 1 attends to both conditioning frames, the later one included, and
to both pointers with signed offsets, as the official training does.
"""

import os

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.modeling.sam2 import PromptPlan, VideoTracker

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FIXTURE = os.path.join(os.path.dirname(__file__), "data", "official_sam2train.pt")


@pytest.mark.slow
def test_training_forward_matches_official_sam2train(sam2_tools, synthetic_weights):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "projects", "sam2", "sam2.1_hiera_t.yaml"))
    cfg.MODEL.SAM2.IMAGE_SIZE = cfg.INPUT.VIDEO.IMAGE_SIZE = 128
    cfg.MODEL.SAM2.MEMORY_ATTENTION.DROPOUT = 0.0
    model = VideoTracker(cfg)
    model.load_state_dict(synthetic_weights({k: list(v.shape) for k, v in model.state_dict().items()}), strict=True)
    model.train()
    with torch.no_grad():
        outs = model.forward_tracking(sam2_tools.clip_batch(128), PromptPlan(False, [0, 2]))
    ref = torch.load(FIXTURE, weights_only=True)["results"]
    assert len(outs) == len(ref) == 3
    for t, (out, r) in enumerate(zip(outs, ref)):
        masks = out["multistep_pred_multimasks_high_res"]
        assert [m.shape[1] for m in masks] == [m.shape[1] for m in r["masks"]], t
        for a, b in zip(masks, r["masks"]):
            assert float((a[..., ::4, ::4] - b).abs().max()) <= 1e-3 * max(float(b.abs().max()), 1.0), t
        for a, b in zip(out["multistep_pred_ious"], r["ious"]):
            assert torch.allclose(a, b, atol=1e-4), t
        for a, b in zip(out["multistep_object_score_logits"], r["obj"]):
            assert torch.allclose(a, b, atol=1e-4), t
