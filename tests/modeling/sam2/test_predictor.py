"""VideoPredictor: prompts on different frames, propagation through the clip, and the
tracker's evaluation output fed to VideoEvaluator."""

import pytest
import torch

from segtrain.evaluation.video_evaluation import VideoEvaluator
from segtrain.modeling.sam2 import VideoPredictor
from segtrain.modeling.sam2.video_tracker import NO_OBJ_SCORE
from segtrain.utils.errors import ConfigError


def test_predictor_propagates_from_each_prompt_frame(sam2_tools):
    model = sam2_tools.make_tracker()
    with torch.no_grad():  # "an object is there": masks are not replaced by NO_OBJ_SCORE
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(5.0)
    model.train()
    batch = sam2_tools.make_batch(num_frames=5, objects_per_video=(3,))
    images, gt = batch.img_batch[:, 0], batch.masks
    predictor = VideoPredictor(model)
    state = predictor.init_state(images)
    predictor.add_new_mask(state, 0, "a", gt[0, 0])
    predictor.add_new_box(state, 2, "b", [10, 14, 20, 22])
    predictor.add_new_points(state, 2, "c", [[5.0, 27.0]], [1])
    seen = []
    for t, ids, logits in predictor.propagate_in_video(state):
        seen.append((t, sorted(ids)))
        assert logits.shape == (len(ids), 1, 32, 32) and torch.isfinite(logits).all()
        if t == 0:
            assert torch.equal(logits[ids.index("a"), 0] > 0, gt[0, 0])  # a mask prompt is its own output
    assert seen == [(0, ["a"]), (1, ["a"]), (2, ["a", "b", "c"]), (3, ["a", "b", "c"]), (4, ["a", "b", "c"])]
    assert model.training, "propagation restores the model's mode"
    assert list(state["cached_features"]) == [4]  # only the last frame's features are kept

    ids, logits = predictor.propagate(state)
    assert ids == ["a", "b", "c"] and logits.shape == (5, 3, 32, 32)
    assert (logits[:2, 1:] == NO_OBJ_SCORE).all() and (logits[2:, 1:] != NO_OBJ_SCORE).any()
    # deterministic: propagating again gives the same masks
    assert torch.equal(predictor.propagate(state)[1], logits)


def test_predictor_memory_is_causal(sam2_tools):
    model = sam2_tools.make_tracker().eval()
    batch = sam2_tools.make_batch(num_frames=5, objects_per_video=(2,))
    images = batch.img_batch[:, 0]
    predictor = VideoPredictor(model)

    def run(imgs):
        st = predictor.init_state(imgs)
        predictor.add_new_mask(st, 0, 1, batch.masks[0, 0])
        predictor.add_new_mask(st, 0, 2, batch.masks[0, 1])
        return predictor.propagate(st)[1]

    ref = run(images)
    changed = images.clone()
    changed[3:] = 255 - changed[3:]
    out = run(changed)
    assert torch.equal(ref[:3], out[:3])


def test_prompt_errors(sam2_tools):
    model = sam2_tools.make_tracker()
    predictor = VideoPredictor(model)
    state = predictor.init_state(torch.zeros(3, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="frame_idx 3 is outside the video"):
        predictor.add_new_points(state, 3, 1, [[1, 1]], [1])
    with pytest.raises(ValueError, match="mask prompt is \\(16, 16\\)"):
        predictor.add_new_mask(state, 0, 1, torch.zeros(16, 16, dtype=torch.bool))
    with pytest.raises(ValueError, match="2 points but 1 labels"):
        predictor.add_new_points(state, 0, 1, [[1, 1], [2, 2]], [1])
    assert list(predictor.propagate_in_video(state)) == []


@pytest.mark.parametrize("prompt", ["mask", "box", "point"])
def test_eval_forward_feeds_the_video_evaluator(sam2_tools, prompt):
    model = sam2_tools.make_tracker(test_prompt=prompt).eval()
    batch = sam2_tools.make_batch(num_frames=4, objects_per_video=(2,))
    masks = batch.masks.clone()
    masks[:2, 1] = False  # object 1 appears on frame 2: it is prompted there
    clip = {
        "video_id": 7,
        "height": 48,
        "width": 40,
        "frame_indices": torch.arange(4),
        "images": batch.img_batch[:, 0],
        "masks": masks,
        "obj_ids": torch.tensor([11, 12]),
    }
    (out,) = model([clip])
    assert out["obj_ids"] == [11, 12]
    pred = out["pred_masks"]
    assert pred.dtype == torch.bool and pred.shape == (4, 2, 48, 40)
    assert not pred[:2, 1].any()  # nothing before the prompt frame
    if prompt == "mask":  # the prompt frame reproduces the prompt (resized to the original size)
        up = torch.nn.functional.interpolate(masks[0, :1][None].float() * 20 - 10, size=(48, 40), mode="bilinear")
        assert torch.equal(pred[0, 0], up[0, 0] > 0)
    gt = torch.nn.functional.interpolate(masks.float(), size=(48, 40), mode="nearest").bool()
    evaluator = VideoEvaluator(dataset_name=None, distributed=False)
    evaluator.reset()
    evaluator.process([{"video_id": 7, "frame_indices": list(range(4)), "gt_masks": gt, "gt_obj_ids": [11, 12]}], [out])
    res = evaluator.evaluate()["video"]
    assert res["num_objects"] == 2 and 0.0 <= res["J&F"] <= 100.0


def test_extra_prompt_kinds_are_predicted_and_scored(sam2_tools):
    """MODEL.SAM2.TEST.EXTRA_PROMPTS: the same objects prompted by box and point as well;
    each kind's masks equal a model whose primary prompt is that kind, and every frame is
    encoded once for all kinds."""
    batch = sam2_tools.make_batch(num_frames=3, objects_per_video=(2,))
    clip = {
        "video_id": 3,
        "height": batch.masks.shape[-2],
        "width": batch.masks.shape[-1],
        "frame_indices": torch.arange(3),
        "images": batch.img_batch[:, 0],
        "masks": batch.masks[:, :2],
        "obj_ids": torch.tensor([1, 2]),
    }
    model = sam2_tools.make_tracker(test_prompt="mask", test_extra_prompts=("box", "mask", "point")).eval()
    assert model.test_extra_prompts == ("box", "point")  # the primary kind is not predicted twice
    encoded = []
    model.encode_images = lambda x, _enc=model.encode_images: encoded.append(x.shape[0]) or _enc(x)
    (out,) = model([clip])
    assert encoded == [1, 1, 1]  # the three kinds share each frame's image features
    del model.encode_images
    assert sorted(out["pred_masks_by_prompt"]) == ["box", "point"]
    for kind in ("box", "point"):
        single = sam2_tools.make_tracker(test_prompt=kind).eval()
        single.load_state_dict(model.state_dict())
        (ref,) = single([clip])
        assert "pred_masks_by_prompt" not in ref
        assert torch.equal(out["pred_masks_by_prompt"][kind], ref["pred_masks"])
    evaluator = VideoEvaluator(dataset_name=None, distributed=False)
    evaluator.process(
        [{"video_id": 3, "frame_indices": [0, 1, 2], "gt_masks": clip["masks"], "gt_obj_ids": [1, 2]}], [out]
    )
    assert list(evaluator.evaluate()) == ["video", "video_box", "video_point"]
    with pytest.raises(ConfigError, match="MODEL.SAM2.TEST.EXTRA_PROMPTS.*'scribble'"):
        sam2_tools.make_tracker(test_extra_prompts=("scribble",))
