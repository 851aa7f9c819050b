"""Training prompts: the per-batch plan, clicks inside the object, boxes around it, and
corrective clicks in the error region (positive on misses, negative on false alarms)."""

import numpy as np
import pytest
import torch

from segtrain.modeling.sam2 import (
    concat_points,
    get_next_point,
    mask_to_box_inclusive,
    sample_box_points,
    sample_one_point_from_error_center,
    sample_prompt_plan,
    sample_random_points_from_errors,
)
from segtrain.structures.masks import masks_to_boxes


def _random_masks(n=6, h=20, w=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, h, w, dtype=torch.bool)
    for i in range(n):
        y0, x0 = torch.randint(0, h - 6, (1,), generator=g).item(), torch.randint(0, w - 6, (1,), generator=g).item()
        hh, ww = torch.randint(2, 6, (1,), generator=g).item(), torch.randint(2, 6, (1,), generator=g).item()
        masks[i, y0 : y0 + hh, x0 : x0 + ww] = True
        masks[i, y0, min(x0 + ww + 1, w - 1)] = True  # a detached pixel: the box must include it
    return masks


def _at(masks, coords):
    """Values of bool masks [N, H, W] at (x, y) coords [N, 2]."""
    xs, ys = coords[:, 0].long(), coords[:, 1].long()
    return masks[torch.arange(masks.shape[0]), ys, xs]


def test_uniform_clicks_fall_inside_the_object():
    masks = _random_masks()
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        coords, labels = sample_random_points_from_errors(masks, None, g)
        assert coords.shape == (6, 1, 2) and labels.shape == (6, 1)
        assert (labels == 1).all()
        assert _at(masks, coords[:, 0]).all()
        assert (coords == coords.round()).all()  # pixel coordinates
    # an empty object gives a padding point, not a click somewhere
    coords, labels = sample_random_points_from_errors(torch.zeros(2, 5, 5, dtype=torch.bool), None, g)
    assert (labels == -1).all()


def test_inclusive_box_is_the_structures_box_minus_one_on_x1_y1():
    masks = torch.cat([_random_masks(), torch.zeros(2, 20, 24, dtype=torch.bool)])
    masks[-1, 19, 23] = True  # a single pixel in the last row and column
    exclusive = masks_to_boxes(masks)
    inclusive = mask_to_box_inclusive(masks)
    assert inclusive.dtype == torch.float32 and inclusive.shape == (8, 4)
    nonempty = masks.flatten(1).any(dim=1)
    assert nonempty.tolist() == [True] * 6 + [False, True]
    torch.testing.assert_close(
        inclusive[nonempty], exclusive[nonempty] - torch.tensor([0.0, 0.0, 1.0, 1.0]), rtol=0, atol=0
    )
    assert inclusive[~nonempty].eq(0).all()
    assert inclusive[-1].tolist() == [23.0, 19.0, 23.0, 19.0]


def test_boxes_enclose_the_object():
    masks = _random_masks()
    coords, labels = sample_box_points(masks, noise=0.0)
    assert coords.shape == (6, 2, 2) and (labels == torch.tensor([2, 3])).all()
    for i in range(6):
        ys, xs = masks[i].nonzero(as_tuple=True)
        (x0, y0), (x1, y1) = coords[i].tolist()
        # tight: every foreground pixel inside, and the box touches the mask on all four sides
        assert (x0, y0, x1, y1) == (xs.min().item(), ys.min().item(), xs.max().item(), ys.max().item())
    # with noise, corners move by at most noise * side (capped by noise_bound) and stay in the image
    tight = mask_to_box_inclusive(masks)
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        noisy, _ = sample_box_points(masks, noise=0.2, noise_bound=1, generator=g)
        noisy = noisy.reshape(6, 4)
        side = torch.stack([tight[:, 2] - tight[:, 0], tight[:, 3] - tight[:, 1]] * 2, dim=1)
        assert ((noisy - tight).abs() <= torch.clamp(0.2 * side, max=1) + 1e-5).all()
        assert (noisy >= 0).all() and (noisy[:, 0::2] <= 23).all() and (noisy[:, 1::2] <= 19).all()
    _, labels = sample_box_points(torch.zeros(1, 4, 4, dtype=torch.bool))
    assert (labels == -1).all()


def test_corrective_clicks_land_in_the_error_region():
    g = torch.Generator().manual_seed(5)
    gt = _random_masks(8, seed=2)
    for trial in range(10):
        pred = torch.rand(gt.shape, generator=g) < 0.1  # scattered false positives
        pred |= gt & (torch.rand(gt.shape, generator=g) < 0.5)  # half the object found
        for method in ("center", "uniform"):
            coords, labels = get_next_point(gt, pred, method, generator=g)
            at_gt, at_pred = _at(gt, coords[:, 0]), _at(pred, coords[:, 0])
            pos = labels[:, 0] == 1
            neg = labels[:, 0] == 0
            assert (pos | neg).all()
            assert (at_gt & ~at_pred)[pos].all(), "a positive click must be on a missed pixel"
            assert (~at_gt & at_pred)[neg].all(), "a negative click must be on a false positive"


def test_center_click_is_the_deepest_error_pixel():
    gt = torch.zeros(1, 20, 20, dtype=torch.bool)
    gt[0, 2:13, 2:13] = True  # an 11x11 square, nothing predicted: the click is its centre
    coords, labels = sample_one_point_from_error_center(gt, torch.zeros_like(gt))
    assert labels.item() == 1 and coords[0, 0].tolist() == [7.0, 7.0]
    # a one-pixel miss vs a 6-row false alarm: the negative click goes deep inside the false alarm
    pred = gt.clone()
    pred[0, 7, 7] = False
    pred[0, 14:20, :] = True
    coords, labels = sample_one_point_from_error_center(gt, pred)
    assert labels.item() == 0 and 16 <= coords[0, 0, 1].item() <= 17
    # no error at all: a padding point
    _, labels = sample_one_point_from_error_center(gt, gt)
    assert labels.item() == -1


def test_prompt_plan_follows_sam2_rules():
    torch.manual_seed(0)
    seen = {"pt": 0, "mask": 0, "box": 0, "two_cond": 0, "extra_corr": 0, "box_and_click": 0}
    for _ in range(300):
        plan = sample_prompt_plan(
            8,
            prob_to_use_pt_input=0.5,
            prob_to_use_box_input=0.5,
            num_init_cond_frames=2,
            rand_init_cond_frames=True,
            num_frames_to_correct=3,
            rand_frames_to_correct=True,
        )
        assert plan.init_cond_frames[0] == 0 and 1 <= len(plan.init_cond_frames) <= 2
        assert len(set(plan.init_cond_frames)) == len(plan.init_cond_frames)
        assert all(0 <= t < 8 for t in plan.init_cond_frames + plan.frames_to_correct)
        if plan.use_pt_input:
            seen["pt"] += 1
            assert set(plan.box_frames) <= set(plan.init_cond_frames)
            seen["box"] += bool(plan.box_frames)
            # drawn per conditioning frame: a box on one and a click on the other happens
            seen["box_and_click"] += 0 < len(plan.box_frames) < len(plan.init_cond_frames)
            # the conditioning frames are always corrected, then up to 3 frames in all
            assert plan.frames_to_correct[: len(plan.init_cond_frames)] == plan.init_cond_frames
            assert len(plan.frames_to_correct) <= 3 and len(set(plan.frames_to_correct)) == len(plan.frames_to_correct)
            seen["extra_corr"] += len(plan.frames_to_correct) > len(plan.init_cond_frames)
        else:
            seen["mask"] += 1
            assert plan.frames_to_correct == [] and plan.box_frames == []
        seen["two_cond"] += len(plan.init_cond_frames) == 2
    assert all(v > 30 for k, v in seen.items() if k != "box_and_click") and seen["box_and_click"] > 5, seen
    # a one-frame clip (an image): points, one conditioning frame, corrected (as officially)
    plan = sample_prompt_plan(
        1,
        prob_to_use_pt_input=0.0,
        prob_to_use_box_input=0.0,
        num_init_cond_frames=2,
        rand_init_cond_frames=True,
        num_frames_to_correct=2,
        rand_frames_to_correct=True,
    )
    assert plan.use_pt_input and plan.init_cond_frames == [0] and plan.frames_to_correct == [0]


def test_concat_points():
    a = (torch.zeros(2, 1, 2), torch.ones(2, 1, dtype=torch.int64))
    c, lab = concat_points(a, torch.ones(2, 1, 2), torch.zeros(2, 1, dtype=torch.int64))
    assert c.shape == (2, 2, 2) and lab.tolist() == [[1, 0], [1, 0]]
    assert concat_points(None, *a) == a
    with pytest.raises(ValueError, match="uniform, center"):
        get_next_point(torch.zeros(1, 2, 2, dtype=torch.bool), None, "random")
    assert np.isfinite(c.numpy()).all()


def _deepest_reference(region):
    """Brute force: for each region pixel, the distance to the nearest pixel outside the
    region, the ring just outside the image counting as outside; the first maximum in
    row-major order."""
    h, w = region.shape
    outside = [
        (y, x)
        for y in range(-1, h + 1)
        for x in range(-1, w + 1)
        if not (0 <= y < h and 0 <= x < w) or not region[y, x]
    ]
    out = np.array(outside, dtype=np.float64)
    best, where = 0.0, None
    for y in range(h):
        for x in range(w):
            if region[y, x]:
                d = np.sqrt(((out - (y, x)) ** 2).sum(1)).min()
                if d > best:
                    best, where = d, (y, x)
    return best, where


def test_center_click_matches_exact_distance_reference_and_opencv():
    """The click is the exact deepest error pixel (brute-force reference, first in row-major
    order among ties), and its depth is what OpenCV's precise distance transform (used by
    SAM 2) gives, within its float32 round-off. Repeated calls give the same clicks."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for trial in range(40):
        h, w = int(rng.integers(6, 18)), int(rng.integers(6, 18))
        yy, xx = np.mgrid[:h, :w]
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, 8)
        gt = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        pred = gt ^ (rng.random((h, w)) < 0.15)
        if trial % 5 == 0:
            pred = np.zeros_like(gt)  # from an empty prediction: the click is the deepest GT pixel
        coords, labels = sample_one_point_from_error_center(torch.from_numpy(gt)[None], torch.from_numpy(pred)[None])
        fn_d, fn_at = _deepest_reference(gt & ~pred)
        fp_d, fp_at = _deepest_reference(~gt & pred)
        if fn_at is None and fp_at is None:
            assert labels.item() == -1
            continue
        positive = fn_d > fp_d
        y, x = fn_at if positive else fp_at
        assert labels.item() == int(positive)
        assert coords[0, 0].tolist() == [float(x), float(y)], trial
        region = (gt & ~pred) if positive else (~gt & pred)
        ocv = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, 0)[1:-1, 1:-1]
        assert abs(float(ocv.max()) - (fn_d if positive else fp_d)) < 1e-5
        again, _ = sample_one_point_from_error_center(torch.from_numpy(gt)[None], torch.from_numpy(pred)[None])
        assert torch.equal(again, coords)
