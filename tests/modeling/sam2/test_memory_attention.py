"""Memory selection and the tracker's causality: a frame attends only to PAST frames
(conditioning frames and the last few), so changing later frames cannot change it."""

import torch

from segtrain.modeling.sam2 import MemoryAttention, PromptPlan, select_memory_frames, select_obj_ptr_frames


def test_select_memory_frames_only_past():
    # conditioning frames 0 and 6 (6 is in the future of frame 4), every frame has a memory
    avail = range(10)
    sel = select_memory_frames(4, [0, 6], avail, num_maskmem=3)
    assert sel == [(0, 0), (3, 1), (2, 2)]
    for t in range(10):
        for s, t_pos in select_memory_frames(t, [0, 6], avail, num_maskmem=7):
            assert s < t
            assert t_pos == 0 or t_pos == t - s
    # a conditioning frame among the recent ones enters once, as a conditioning frame
    assert select_memory_frames(7, [0, 6], avail, num_maskmem=3) == [(0, 0), (6, 0), (5, 2)]
    # frames without a memory (not processed yet) never enter
    assert select_memory_frames(5, [0], [0, 1], num_maskmem=7) == [(0, 0), (1, 4)]
    assert select_memory_frames(0, [0], avail, num_maskmem=7) == []


def test_select_obj_ptr_frames_only_past_and_capped():
    ptrs = select_obj_ptr_frames(9, [0, 12], range(20), max_obj_ptrs=4)
    assert ptrs == [(0, 9), (8, 1), (7, 2), (6, 3)]
    assert all(s < 9 for s, _ in ptrs)
    assert select_obj_ptr_frames(0, [0], range(3), max_obj_ptrs=4) == []


def test_memory_attention_shapes_and_locality_bias():
    torch.manual_seed(0)
    attn = MemoryAttention(d_model=16, mem_dim=8, num_layers=2, num_heads=2, dim_feedforward=32, locality_bias=True)
    curr = torch.randn(3, 16, 4, 5)
    pos = torch.randn(3, 16, 4, 5)
    memory = torch.randn(3, 2 * 20 + 2, 8)  # two 4x5 maps + two pointer tokens
    out = attn(curr, pos, memory, torch.randn_like(memory), num_spatial_memory=40)
    assert out.shape == (3, 16, 4, 5) and torch.isfinite(out).all()
    out.sum().backward()
    assert attn.locality_scale.grad is not None and attn.locality_scale.grad.abs().sum() > 0


def _flat(frame_out):
    """Every prediction of one frame (masks, IoUs, object scores of every step) as one vector."""
    return torch.cat([x.flatten() for key in sorted(frame_out) for x in frame_out[key]])


def _outputs(model, batch, plan):
    torch.manual_seed(0)
    with torch.no_grad():
        return model.forward_tracking(batch, plan)


def test_tracker_frames_do_not_see_the_future(sam2_tools):
    make_tracker, make_batch = sam2_tools.make_tracker, sam2_tools.make_batch
    model = make_tracker().eval()
    batch = make_batch(num_frames=5)
    plan = PromptPlan(use_pt_input=False, use_box_input=False, init_cond_frames=[0])
    ref = _outputs(model, batch, plan)
    # change frames 3 and 4 completely (images and the GT that is not used as a prompt)
    changed = make_batch(num_frames=5)
    changed.img_batch[3:] = 255 - changed.img_batch[3:]
    changed.masks[3:] = ~changed.masks[3:]
    out = _outputs(model, changed, plan)
    for t in range(3):
        for key in ref[t]:
            for a, b in zip(ref[t][key], out[t][key]):
                assert torch.equal(a, b), (t, key)
    assert not torch.equal(_flat(ref[4]), _flat(out[4]))


def test_tracked_frames_do_use_the_memory(sam2_tools):
    """Frame 2 has no prompt: its prediction changes with the frame-0 prompt (through memory)."""
    make_tracker, make_batch = sam2_tools.make_tracker, sam2_tools.make_batch
    model = make_tracker().eval()
    batch = make_batch(num_frames=3)
    plan = PromptPlan(use_pt_input=False, use_box_input=False, init_cond_frames=[0])
    ref = _outputs(model, batch, plan)
    other = make_batch(num_frames=3)
    other.masks[0] = torch.roll(other.masks[0], shifts=6, dims=-1)  # a different frame-0 prompt
    out = _outputs(model, other, plan)
    assert not torch.allclose(_flat(ref[2]), _flat(out[2]))


def test_second_conditioning_frame_is_not_used_before_it_is_reached(sam2_tools):
    """With conditioning frames 0 and 3, frames 1-2 are the same as with frame 0 alone."""
    make_tracker, make_batch = sam2_tools.make_tracker, sam2_tools.make_batch
    model = make_tracker().eval()
    batch = make_batch(num_frames=4)
    one = _outputs(model, batch, PromptPlan(False, False, [0]))
    two = _outputs(model, batch, PromptPlan(False, False, [0, 3]))
    for t in (1, 2):
        assert torch.equal(_flat(one[t]), _flat(two[t]))
    assert not torch.equal(_flat(one[3]), _flat(two[3]))
