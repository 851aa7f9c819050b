"""VideoTracker: tiny forward/backward shapes, the multistep outputs of the SAM 2 recipe,
corrective clicks in the error region of the previous step, padding objects, the simple
criterion path and building from the config."""

import os

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.modeling import build_model
from segtrain.modeling.criterion import CORE_LOSS_KEY, VideoSimpleCriterion
from segtrain.modeling.sam2 import PromptPlan
from segtrain.modeling.sam2.video_tracker import MULTISTEP_KEYS, NO_OBJ_SCORE
from segtrain.utils.errors import ConfigError


def test_forward_backward_shapes_and_losses(sam2_tools):
    model = sam2_tools.make_tracker()
    batch = sam2_tools.make_batch(num_frames=3, objects_per_video=(2, 1))
    torch.manual_seed(1)
    plan = PromptPlan(use_pt_input=True, init_cond_frames=[0], frames_to_correct=[0, 2])
    outs = model.forward_tracking(batch, plan)
    assert len(outs) == 3
    n = 3
    # frame 0: the click + 3 corrections; frame 1: tracked; frame 2: tracked + 3 corrections
    assert [len(o[MULTISTEP_KEYS[0]]) for o in outs] == [4, 1, 4]
    for o in outs:
        assert set(o) == set(MULTISTEP_KEYS)
        for masks, ious, obj in zip(*(o[k] for k in MULTISTEP_KEYS)):
            m = masks.shape[1]
            assert masks.shape == (n, m, 32, 32) and ious.shape == (n, m) and obj.shape == (n, 1)
    # one click (frame 0) and a tracked frame give 3 masks; 2+ clicks give the single mask
    assert outs[0][MULTISTEP_KEYS[0]][0].shape[1] == 3 and outs[0][MULTISTEP_KEYS[0]][1].shape[1] == 1
    assert outs[1][MULTISTEP_KEYS[0]][0].shape[1] == 3

    model.zero_grad()
    torch.manual_seed(2)
    losses = model(batch)
    assert set(losses) == {"loss_mask", "loss_dice", "loss_iou", "loss_class", "iou_target_mean", CORE_LOSS_KEY}
    assert all(torch.isfinite(v) for v in losses.values())
    losses[CORE_LOSS_KEY].backward()
    for name in ("image_encoder", "sam_mask_decoder", "sam_prompt_encoder", "memory_attention", "memory_encoder"):
        grads = [p.grad for n_, p in model.named_parameters() if n_.startswith(name) and p.grad is not None]
        assert grads and sum(g.abs().sum() for g in grads) > 0, name


def test_mask_prompts_are_the_output_on_conditioning_frames(sam2_tools):
    model = sam2_tools.make_tracker()
    batch = sam2_tools.make_batch(num_frames=2, objects_per_video=(2,))
    outs = model.forward_tracking(batch, PromptPlan(False, [0]))
    masks, ious, obj = (outs[0][k] for k in MULTISTEP_KEYS)
    assert len(masks) == 1 and masks[0].shape[1] == 1
    assert torch.equal(masks[0][:, 0] > 0, batch.masks[0])
    assert (ious[0] == 1).all() and (obj[0] == 10).all()


def test_correction_clicks_land_in_the_error_region_of_the_previous_step(sam2_tools, monkeypatch):
    model = sam2_tools.make_tracker(prob_to_sample_from_gt_for_train=0.0, num_correction_pt_per_frame=4)
    batch = sam2_tools.make_batch(num_frames=2, objects_per_video=(2, 1))
    gt = batch.masks[:, batch.obj_valid]
    calls = []
    original = type(model)._forward_sam_heads

    def spy(self, features, point_inputs=None, mask_inputs=None, high_res_features=None, multimask_output=False):
        out = original(self, features, point_inputs, mask_inputs, high_res_features, multimask_output)
        points = None if point_inputs is None else (point_inputs["point_coords"], point_inputs["point_labels"])
        calls.append((points, out[4][:, 0] > 0))  # out[4]: high_res_masks
        return out

    monkeypatch.setattr(type(model), "_forward_sam_heads", spy)
    torch.manual_seed(0)
    model.forward_tracking(batch, PromptPlan(True, [0], [0, 1], box_frames=[0]))
    # frame 0: box (2 points) + 4 clicks; frame 1: tracked (no points) + 4 clicks
    frame0, frame1 = calls[0:5], calls[5:10]
    checked = 0
    for frame_calls, target in ((frame0, gt[0]), (frame1, gt[1])):
        for (_, prev_pred), (points, _) in zip(frame_calls[:-1], frame_calls[1:]):
            coords, labels = points[0][:, -1], points[1][:, -1]  # the click added at this step
            xs, ys = coords[:, 0].long(), coords[:, 1].long()
            rows = torch.arange(coords.shape[0])
            at_gt, at_pred = target[rows, ys, xs], prev_pred[rows, ys, xs]
            for i in range(coords.shape[0]):
                if labels[i] == 1:
                    assert at_gt[i] and not at_pred[i]
                elif labels[i] == 0:
                    assert at_pred[i] and not at_gt[i]
                else:  # a padding point only when the previous step made no error
                    assert labels[i] == -1 and torch.equal(prev_pred[i], target[i])
                checked += 1
    assert checked == 2 * 4 * 3
    # the box on frame 0 surrounds each object
    box = frame0[1][0][0][:, :2]
    for i in range(3):
        ys, xs = gt[0, i].nonzero(as_tuple=True)
        assert box[i, 0, 0] <= xs.min() + 2 and box[i, 1, 0] >= xs.max() - 2
        assert box[i, 0, 1] <= ys.min() + 2 and box[i, 1, 1] >= ys.max() - 2


def test_padding_objects_are_dropped(sam2_tools):
    model = sam2_tools.make_tracker()
    batch = sam2_tools.make_batch(num_frames=2, objects_per_video=(2, 1), pad_to=3)
    assert batch.num_objects == 6 and int(batch.obj_valid.sum()) == 3
    outs = model.forward_tracking(batch, PromptPlan(False, [0]))
    assert outs[1][MULTISTEP_KEYS[0]][0].shape[0] == 3
    torch.manual_seed(0)
    losses = model(batch)
    assert torch.isfinite(losses[CORE_LOSS_KEY])


def test_simple_criterion_gets_padded_per_video_masks(sam2_tools):
    model = sam2_tools.make_tracker(criterion=VideoSimpleCriterion())
    batch = sam2_tools.make_batch(num_frames=3, objects_per_video=(2, 1))
    torch.manual_seed(0)
    outs = model.forward_tracking(batch, PromptPlan(False, [0]))
    preds, targets = model._padded_final_masks(outs, batch)
    assert preds["pred_masks"].shape == (2, 3, 2, 32, 32)
    assert targets["valid"].tolist() == [[[True, True]] * 3, [[True, False]] * 3]
    assert torch.equal(targets["masks"][1, :, 0].bool(), batch.masks[:, 2])
    assert torch.equal(preds["pred_masks"][0, 0, 1] > 0, batch.masks[0, 1])  # frame 0: the mask prompt
    torch.manual_seed(0)
    losses = model(batch)
    assert set(losses) == {"loss_mask", "loss_dice", "loss_iou", "loss_temporal", CORE_LOSS_KEY}
    losses[CORE_LOSS_KEY].backward()


def test_object_score_gates_masks(sam2_tools):
    model = sam2_tools.make_tracker()
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(-100.0)
    batch = sam2_tools.make_batch(num_frames=2, objects_per_video=(1,))
    outs = model.forward_tracking(batch, PromptPlan(False, [0]))
    assert (outs[1][MULTISTEP_KEYS[2]][0] < 0).all()
    assert (outs[1][MULTISTEP_KEYS[0]][0] == NO_OBJ_SCORE).all()


def test_build_from_project_config():
    cfg = get_cfg()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    cfg.merge_from_file(os.path.join(root, "projects", "sam2", "sam2.1_tiny.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert type(model).__name__ == "VideoTracker" and model.image_size == cfg.INPUT.VIDEO.IMAGE_SIZE
    crit = model.criterion
    assert crit.weight_dict == {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0}
    assert crit.supervise_all_iou and crit.iou_use_l1_loss and crit.pred_obj_scores
    assert model.test_prompt == "mask" and model.test_extra_prompts == ("box", "point")  # the project's
    cfg.MODEL.SAM2.TEST.EXTRA_PROMPTS = ("box", "lasso")
    with pytest.raises(ConfigError, match="MODEL.SAM2.TEST.EXTRA_PROMPTS.*'lasso'"):
        build_model(cfg)
    cfg.MODEL.SAM2.TEST.PROMPT = "scribble"
    with pytest.raises(ConfigError, match="MODEL.SAM2.TEST.PROMPT.*mask, box, point"):
        build_model(cfg)


def test_a_batch_of_mask_prompted_frames_only_still_back_propagates(sam2_tools):
    """Two frames, both conditioning frames with GT-mask prompts: the outputs are the prompts
    themselves, the loss is a constant, and the step gets zero gradients instead of failing."""
    model = sam2_tools.make_tracker()
    batch = sam2_tools.make_batch(num_frames=2)
    plan = PromptPlan(use_pt_input=False, init_cond_frames=[0, 1])
    losses = model.losses(batch, plan)
    losses["core_loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(float(g.abs().max()) == 0.0 for g in grads)


def test_clicks_uniform_in_training_and_from_the_centre_in_eval(sam2_tools, monkeypatch):
    """As the official SAM2Train: initial and correction clicks are drawn uniformly from the
    error region in training, by MODEL.SAM2.FOR_EVAL.PT_SAMPLING ("center") in eval mode and in
    a validation-loss pass."""
    import segtrain.modeling.sam2.video_tracker as vt
    from segtrain.utils.env import validation_pass

    methods = []
    real = vt.get_next_point

    def spy(gt, pred, method, *args, **kwargs):
        methods.append(method)
        return real(gt, pred, method, *args, **kwargs)

    monkeypatch.setattr(vt, "get_next_point", spy)
    model = sam2_tools.make_tracker()
    batch = sam2_tools.make_batch(num_frames=3)
    plan = PromptPlan(use_pt_input=True, init_cond_frames=[0], frames_to_correct=[0, 2])
    torch.manual_seed(0)
    model.prob_to_sample_from_gt_for_train = 0.0
    model.forward_tracking(batch, plan)
    assert methods and set(methods) == {"uniform"}
    for mode in ("eval", "validation"):
        methods.clear()
        with torch.no_grad(), validation_pass() if mode == "validation" else torch.no_grad():
            model.train(mode == "validation")
            model.forward_tracking(batch, plan)
        assert methods and set(methods) == {"center"}, mode


def test_validation_loss_uses_the_eval_prompts(sam2_tools):
    """In a validation-loss pass the plan follows MODEL.SAM2.FOR_EVAL (default: the GT mask on
    frame 0, nothing corrected), whatever the training probabilities."""
    from segtrain.utils.env import validation_pass

    model = sam2_tools.make_tracker()
    model.train()
    model.prob_to_use_pt_input_for_train = 1.0
    assert all(model.sample_prompt_plan(4).use_pt_input for _ in range(5))
    with validation_pass():
        plans = [model.sample_prompt_plan(4) for _ in range(5)]
    assert all(not p.use_pt_input and p.init_cond_frames == [0] and p.frames_to_correct == [] for p in plans)
