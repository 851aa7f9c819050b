"""VideoPredictor: the official SAM2VideoPredictor calls and semantics (prompts on several
frames, clear_old_points, corrections, reverse, max_frame_num_to_track, remove_object, hole
filling) on a tiny model, and the tracker's evaluation output fed to VideoEvaluator."""

import cv2
import numpy
import pytest
import torch
import torch.nn.functional as F

from segtrain.evaluation.video_evaluation import VideoEvaluator
from segtrain.modeling.sam2 import VideoPredictor
from segtrain.modeling.sam2.video_frames import fill_holes_in_mask_scores
from segtrain.modeling.sam2.video_tracker import NO_OBJ_SCORE
from segtrain.utils.errors import ConfigError


def _video(sam2_tools, num_frames=5, objects=(3,)):
    """uint8 frames [T, 40, 48, 3] (the 32 px clip resized: not the model's size) and GT masks."""
    batch = sam2_tools.make_batch(num_frames=num_frames, objects_per_video=objects)
    frames = F.interpolate(batch.img_batch[:, 0].float(), size=(40, 48), mode="nearest").to(torch.uint8)
    masks = F.interpolate(batch.masks.float(), size=(40, 48), mode="nearest").bool()
    return frames.permute(0, 2, 3, 1).numpy(), masks


def _present_model(sam2_tools):
    model = sam2_tools.make_tracker().eval()
    with torch.no_grad():  # "an object is there": masks are not replaced by NO_OBJ_SCORE
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(5.0)
    return model


def _all(predictor, state, **kw):
    return [(t, list(ids), logits.clone()) for t, ids, logits in predictor.propagate_in_video(state, **kw)]


def test_predictor_calls_and_outputs(sam2_tools):
    model = _present_model(sam2_tools)
    frames, gt = _video(sam2_tools)
    predictor = VideoPredictor(model, fill_hole_area=8)
    state = predictor.init_state(frames)
    assert (state["video_height"], state["video_width"], state["num_frames"]) == (40, 48, 5)
    t, ids, logits = predictor.add_new_mask(state, 0, "a", gt[0, 0])
    assert t == 0 and ids == ["a"] and logits.shape == (1, 1, 40, 48)
    _, ids, logits = predictor.add_new_points_or_box(state, 2, "b", box=[10, 14, 20, 22])
    assert ids == ["a", "b"] and (logits[0] == NO_OBJ_SCORE).all()  # "a" has no output on frame 2 yet
    predictor.add_new_points_or_box(state, 2, "c", points=[[5.0, 27.0]], labels=[1])
    out = _all(predictor, state)
    assert [(t, ids) for t, ids, _ in out] == [(t, ["a", "b", "c"]) for t in range(5)]
    assert all(lg.shape == (3, 1, 40, 48) and torch.isfinite(lg).all() for _, _, lg in out)
    mask_out = out[0][2][0, 0] > 0  # a mask prompt is its own output (through the 8x8 low-res mask)
    assert (mask_out == gt[0, 0]).float().mean() > 0.9
    assert list(state["cached_features"]) == [4]  # only the last frame's features are kept
    again = _all(predictor, state)  # propagating again gives the same masks
    assert all(torch.equal(a[2], b[2]) for a, b in zip(out, again))


def test_clear_old_points_and_corrections(sam2_tools):
    model = _present_model(sam2_tools)
    frames, _ = _video(sam2_tools)
    predictor = VideoPredictor(model)
    state = predictor.init_state(frames)
    predictor.add_new_points_or_box(state, 1, 7, points=[[10, 10]], labels=[1])
    predictor.add_new_points_or_box(state, 1, 7, points=[[30, 20]], labels=[0], clear_old_points=False)
    pts = state["point_inputs_per_obj"][0][1]
    assert pts["point_labels"].tolist() == [[1, 0]]
    # coordinates are scaled from the 48 x 40 video to the 32 px model input
    assert torch.allclose(pts["point_coords"], torch.tensor([[[10 * 32 / 48, 10 * 32 / 40], [20.0, 16.0]]]))
    predictor.add_new_points_or_box(state, 1, 7, points=[[12, 12]], labels=[1])
    assert state["point_inputs_per_obj"][0][1]["point_labels"].tolist() == [[1]]
    with pytest.raises(ValueError, match="cannot add box without clearing old points"):
        predictor.add_new_points_or_box(state, 1, 7, box=[1, 1, 5, 5], clear_old_points=False)
    ref = {t: lg for t, _, lg in _all(predictor, state)}
    # a click on a tracked frame is a correction, fed the frame's current logits; it stays a
    # non-conditioning frame (add_all_frames_to_correct_as_cond False, the official default)
    _, _, corrected = predictor.add_new_points_or_box(state, 3, 7, points=[[40, 30]], labels=[1])
    assert 3 in state["temp_output_dict_per_obj"][0]["non_cond_frame_outputs"]
    assert not torch.equal(corrected, ref[3])
    _all(predictor, state)
    assert list(state["output_dict_per_obj"][0]["cond_frame_outputs"]) == [1]
    predictor.clear_all_prompts_in_frame(state, 1, 7)
    assert not state["output_dict_per_obj"][0]["cond_frame_outputs"] and 1 not in state["point_inputs_per_obj"][0]
    # with add_all_frames_to_correct_as_cond the corrected frame conditions the tracking
    predictor = VideoPredictor(model, add_all_frames_to_correct_as_cond=True)
    state = predictor.init_state(frames)
    predictor.add_new_points_or_box(state, 1, 7, points=[[12, 12]], labels=[1])
    ref = {t: lg for t, _, lg in _all(predictor, state)}
    _, _, corrected = predictor.add_new_points_or_box(state, 3, 7, points=[[40, 30]], labels=[1])
    out = {t: lg for t, _, lg in _all(predictor, state)}
    assert sorted(state["output_dict_per_obj"][0]["cond_frame_outputs"]) == [1, 3]
    assert torch.equal(out[3], corrected) and torch.equal(out[1], ref[1])
    assert not torch.equal(out[4], ref[4])


def test_reverse_and_max_frame_num_to_track(sam2_tools):
    model = _present_model(sam2_tools)
    frames, gt = _video(sam2_tools, num_frames=6)
    predictor = VideoPredictor(model)
    state = predictor.init_state(frames)
    predictor.add_new_mask(state, 3, 1, gt[3, 0])
    assert [t for t, _, _ in _all(predictor, state, reverse=True)] == [3, 2, 1, 0]
    assert [t for t, _, _ in _all(predictor, state, start_frame_idx=3, max_frame_num_to_track=1)] == [3, 4]
    assert [t for t, _, _ in _all(predictor, state, start_frame_idx=5, reverse=True, max_frame_num_to_track=2)] == [
        5,
        4,
        3,
    ]
    assert state["frames_tracked_per_obj"][0][0] == {"reverse": True}


def test_remove_object_and_reset(sam2_tools):
    """Objects are tracked independently: removing one leaves the others' masks unchanged."""
    model = _present_model(sam2_tools)
    frames, gt = _video(sam2_tools)
    predictor = VideoPredictor(model)
    state = predictor.init_state(frames)
    predictor.add_new_mask(state, 0, "x", gt[0, 0])
    predictor.add_new_mask(state, 1, "y", gt[1, 1])
    predictor.add_new_mask(state, 0, "z", gt[0, 2])
    both = _all(predictor, state)
    ids, updated = predictor.remove_object(state, "y")
    assert ids == ["x", "z"] and [t for t, _ in updated] == [1]
    after = _all(predictor, state)
    assert all(torch.equal(a[2], b[2][[0, 2]]) for a, b in zip(after, both))
    assert predictor.remove_object(state, "nope") == (["x", "z"], [])
    with pytest.raises(RuntimeError, match="Cannot remove object id nope"):
        predictor.remove_object(state, "nope", strict=True)
    predictor.reset_state(state)
    assert state["obj_ids"] == []
    with pytest.raises(RuntimeError, match="No input points or masks"):
        _all(predictor, state)


def test_predictor_memory_is_causal(sam2_tools):
    model = sam2_tools.make_tracker().eval()
    frames, gt = _video(sam2_tools, objects=(2,))
    predictor = VideoPredictor(model)

    def run(video):
        st = predictor.init_state(video)
        predictor.add_new_mask(st, 0, 1, gt[0, 0])
        predictor.add_new_mask(st, 0, 2, gt[0, 1])
        return torch.stack([lg for _, _, lg in _all(predictor, st)])

    ref = run(frames)
    changed = frames.copy()
    changed[3:] = 255 - changed[3:]
    out = run(changed)
    assert torch.equal(ref[:3], out[:3]) and not torch.equal(ref[3:], out[3:])


def test_prompt_errors(sam2_tools):
    predictor = VideoPredictor(sam2_tools.make_tracker())
    state = predictor.init_state(numpy.zeros((3, 32, 32, 3), dtype=numpy.uint8))
    with pytest.raises(ValueError, match="frame_idx 3 is outside the video"):
        predictor.add_new_points_or_box(state, 3, 1, points=[[1, 1]], labels=[1])
    with pytest.raises(ValueError, match="2 points but 1 labels"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[1, 1], [2, 2]], labels=[1])
    with pytest.raises(ValueError, match="points and labels must be provided together"):
        predictor.add_new_points_or_box(state, 0, 1, points=[[1, 1]])
    with pytest.raises(ValueError, match="frames must be uint8"):
        predictor.init_state(numpy.zeros((3, 3, 32, 32), dtype=numpy.uint8))
    with pytest.raises(RuntimeError, match="No input points or masks are provided for any object"):
        list(predictor.propagate_in_video(state))


def test_fill_holes_matches_a_flood_fill_reference():
    """8-connected background regions of <= max_area pixels become 0.1, the rest is kept."""
    g = torch.Generator().manual_seed(0)
    mask = torch.randn(3, 1, 20, 24, generator=g) + 0.8
    out = fill_holes_in_mask_scores(mask, 4)
    bg = (mask <= 0).numpy()
    for i in range(3):
        num, labels = cv2.connectedComponents(bg[i, 0].astype(numpy.uint8), connectivity=8)
        areas = numpy.bincount(labels.ravel(), minlength=num)
        hole = (labels > 0) & (areas[labels] <= 4)
        expected = torch.where(torch.from_numpy(hole), torch.tensor(0.1), mask[i, 0])
        assert torch.equal(out[i, 0], expected)
    assert (out != mask).any() and ((out == 0.1) | (out == mask)).all()


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
    if prompt == "mask":  # the prompt frame's output is the prompt (logits +-10) through the low-res mask
        low = F.interpolate(masks[0, :1][None].float() * 20 - 10, size=(16, 16), mode="bilinear", antialias=True)
        up = F.interpolate(F.interpolate(low, size=(32, 32), mode="bilinear"), size=(48, 40), mode="bilinear")
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
    model.forward_image = lambda x, _enc=model.forward_image: encoded.append(x.shape[0]) or _enc(x)
    (out,) = model([clip])
    assert encoded == [1, 1, 1]  # the three kinds share each frame's image features
    del model.forward_image
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
