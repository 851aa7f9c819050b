"""Parity of ``build_video_predictor`` with the official ``SAM2VideoPredictor``.

``data/official_video_predictor.pt`` was made once with facebookresearch/sam2 at commit
2b90b9f5ceec907a1c18123530e92e794ad901a4: ``build_sam2_video_predictor`` of
``sam2.1_hiera_t.yaml`` with ``++model.image_size=128`` on CPU (so the official post-processing
is on: dynamic multimask via stability, binarized click masks in memory, holes up to 8
pixels filled), its state dict replaced by ``synthetic_state_dict`` (conftest.py; every tensor
drawn from a generator seeded by the CRC32 of its name: weights that are not an
initialization), a 5-frame 96 x 128 video of two moving squares on noise (saved as JPEG
frames; the decoded frames are in the fixture), then the calls listed in ``results``: clicks
(one positive, then a negative one with ``clear_old_points=False``), a box, a mask, forward
propagation, a correction click on a tracked frame, reverse propagation from frame 4,
``max_frame_num_to_track=2`` from frame 1, ``remove_object``, propagation again,
``clear_all_prompts_in_frame``. Two things were patched in the official run, both because the
official code needs CUDA for them: the hole filling's connected components (its CUDA
extension; replaced by OpenCV's 8-connected components) and reading bfloat16 memories in
float32 when a frame has no object pointer (a frame tracked in reverse before any past pointer:
the official code fails there on CPU, and with pointers it reads them in float32 anyway).
Each result stores the mask logits at every 4th pixel, their sum and the count of positives.
"""

import os

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.modeling.sam2 import build_video_predictor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
FIXTURE = os.path.join(os.path.dirname(__file__), "data", "official_video_predictor.pt")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory, synthetic_weights):
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "projects", "sam2", "sam2.1_hiera_t.yaml"))
    cfg.MODEL.SAM2.IMAGE_SIZE = 128
    cfg.MODEL.DEVICE = "cpu"
    probe = build_video_predictor(cfg)
    shapes = {k: list(v.shape) for k, v in probe.model.state_dict().items()}
    path = str(tmp_path_factory.mktemp("weights") / "sam2.1_hiera_t_synthetic.pt")
    torch.save({"model": synthetic_weights(shapes)}, path)  # the released file's layout
    cfg.MODEL.WEIGHTS = path
    return build_video_predictor(cfg)


def _check(result, out, tol=1e-3):
    t, ids, logits = out
    assert t == result["frame_idx"] and list(ids) == result["obj_ids"], (result["call"], t, ids)
    sub = logits[:, :, ::4, ::4]
    ref = result["sub"]
    # logits of absent objects are -1024 (NO_OBJ_SCORE): compare on the scale of the present ones
    scale = max(float(ref[ref > -500].abs().max()) if (ref > -500).any() else 1.0, 1.0)
    err = float((sub - ref).abs().max())
    assert err <= tol * scale, (result["call"], result["kwargs"], t, err, scale)
    assert abs(int((logits > 0).sum()) - result["pos"]) <= 0.002 * logits[0].numel(), (result["call"], t)


@pytest.mark.slow
def test_video_predictor_matches_official(predictor):
    fx = torch.load(FIXTURE, weights_only=False)
    results = iter(fx["results"])
    state = predictor.init_state(fx["frames"].numpy())
    assert (state["video_height"], state["video_width"]) == (96, 128)

    def call(name, *args, **kwargs):
        r = next(results)
        assert r["call"] == name
        return r, getattr(predictor, name)(state, *args, **kwargs)

    def propagate(**kwargs):
        outs = list(predictor.propagate_in_video(state, **kwargs))
        for out in outs:
            r = next(results)
            assert r["call"] == "propagate_in_video" and r["kwargs"] == kwargs
            _check(r, out)

    _check(*call("add_new_points_or_box", 0, 5, points=[[25.0, 35.0]], labels=[1]))
    _check(*call("add_new_points_or_box", 0, 5, points=[[60.0, 30.0]], labels=[0], clear_old_points=False))
    _check(*call("add_new_points_or_box", 2, 3, box=[50.0, 50.0, 100.0, 90.0]))
    _check(*call("add_new_mask", 1, 9, fx["mask9"]))
    propagate()
    _check(*call("add_new_points_or_box", 3, 5, points=[[45.0, 30.0]], labels=[1]))
    propagate(start_frame_idx=4, reverse=True)
    propagate(start_frame_idx=1, max_frame_num_to_track=2)
    r = next(results)
    ids, updated = predictor.remove_object(state, 3)
    assert r["call"] == "remove_object" and ids == r["obj_ids"] == [5, 9]
    assert [t for t, _ in updated] == [t for t, _ in r["updated"]]
    for (_, m), (_, ref) in zip(updated, r["updated"]):
        assert float((m[:, :, ::4, ::4] - ref).abs().max()) <= 1e-3 * max(float(ref[ref > -500].abs().max()), 1.0)
    propagate()
    _check(*call("clear_all_prompts_in_frame", 1, 9))
    assert next(results, None) is None
