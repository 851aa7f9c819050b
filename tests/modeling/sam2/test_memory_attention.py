"""Memory selection as the official SAM 2: the conditioning frames (before or after the frame)
and the last few previous frames, their temporal slots, object-pointer offsets; a frame never
sees the memory of a later non-conditioning frame."""

import pytest
import torch

from segtrain.modeling.sam2 import (
    Attention,
    MemoryAttention,
    MemoryAttentionLayer,
    PromptPlan,
    select_closest_cond_frames,
)
from segtrain.modeling.sam2.common import get_1d_sine_pe


def test_select_closest_cond_frames():
    outs = {t: t for t in (0, 3, 8, 12)}
    assert select_closest_cond_frames(5, outs, -1) == (outs, {})
    sel, unsel = select_closest_cond_frames(5, outs, 3)
    assert sorted(sel) == [0, 3, 8] and sorted(unsel) == [12]  # before, after, then the closest
    sel, unsel = select_closest_cond_frames(12, outs, 2)
    assert sorted(sel) == [8, 12] and sorted(unsel) == [0, 3]


def test_memory_attention_shapes_and_locality_bias():
    torch.manual_seed(0)
    layer = MemoryAttentionLayer(
        activation="relu",
        cross_attention=Attention(16, 2, kv_in_dim=8),
        d_model=16,
        dim_feedforward=32,
        dropout=0.0,
        pos_enc_at_attn=True,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=True,
        self_attention=Attention(16, 2),
    )
    attn = MemoryAttention(16, True, layer, num_layers=2, locality_bias=True)
    curr = torch.randn(20, 3, 16)  # a 4x5 map, sequence first
    pos = torch.randn(20, 3, 16)
    memory = torch.randn(2 * 20 + 2, 3, 8)  # two 4x5 maps + two pointer tokens
    out = attn(curr, memory, pos, torch.randn_like(memory), num_obj_ptr_tokens=2, feat_size=(4, 5))
    assert out.shape == (20, 3, 16) and torch.isfinite(out).all()
    out.sum().backward()
    assert attn.locality_scale.grad is not None and attn.locality_scale.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="not whole 4x5 maps"):
        attn(curr, memory[:-3], pos, memory_pos=torch.randn_like(memory[:-3]), num_obj_ptr_tokens=2, feat_size=(4, 5))


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
    plan = PromptPlan(use_pt_input=False, init_cond_frames=[0])
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
    plan = PromptPlan(use_pt_input=False, init_cond_frames=[0])
    ref = _outputs(model, batch, plan)
    other = make_batch(num_frames=3)
    other.masks[0] = torch.roll(other.masks[0], shifts=6, dims=-1)  # a different frame-0 prompt
    out = _outputs(model, other, plan)
    assert not torch.allclose(_flat(ref[2]), _flat(out[2]))


def test_a_later_conditioning_frame_is_in_the_memory_of_earlier_frames(sam2_tools):
    """As the official SAM2Train: initial conditioning frames are processed first, so with
    conditioning frames 0 and 3, frames 1-2 attend to frame 3's memory too."""
    make_tracker, make_batch = sam2_tools.make_tracker, sam2_tools.make_batch
    model = make_tracker().eval()
    batch = make_batch(num_frames=4)
    one = _outputs(model, batch, PromptPlan(False, [0]))
    two = _outputs(model, batch, PromptPlan(False, [0, 3]))
    assert torch.equal(_flat(one[0]), _flat(two[0]))
    for t in (1, 2, 3):
        assert not torch.equal(_flat(one[t]), _flat(two[t]))


def _record_memory(model, monkeypatch):
    """Run-time record of what the memory attention gets: memory_pos and pointer counts."""
    calls = []
    forward = model.memory_attention.forward

    def spy(curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0, feat_size=None):
        calls.append({"memory_pos": memory_pos.clone(), "num_ptr": num_obj_ptr_tokens, "len": memory.shape[0]})
        return forward(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens, feat_size)

    monkeypatch.setattr(model.memory_attention, "forward", spy)
    tpos = []
    model.obj_ptr_tpos_proj.register_forward_hook(lambda m, i, o: tpos.append(i[0].clone()))
    return calls, tpos


def test_memory_temporal_slots_and_pointer_offsets_are_the_official_ones(sam2_tools, monkeypatch):
    """Frame 3 of a 4-frame clip prompted on frame 0 (num_maskmem 3): the conditioning frame
    gets slot maskmem_tpos_enc[2], the previous frame (2) slot [0], frame 1 slot [1]; the
    pointers of frames 0, 2, 1 get sine encodings of 3, 1, 2 divided by min(T, 4) - 1 = 3."""
    model = sam2_tools.make_tracker().eval()
    with torch.no_grad():
        model.maskmem_tpos_enc.copy_(torch.arange(3.0).view(3, 1, 1, 1) * 100)
    calls, tpos = _record_memory(model, monkeypatch)
    _outputs(model, sam2_tools.make_batch(num_frames=4), PromptPlan(False, [0]))
    last = calls[-1]
    hw = 16  # a 32 px frame at stride 8
    assert last["len"] == 3 * hw + last["num_ptr"] and last["num_ptr"] == 3 * 2  # 3 pointers of 32 = 2 x 16 ch
    spatial = last["memory_pos"][: 3 * hw].reshape(3, hw, -1, 16)
    plain = spatial - torch.tensor([200.0, 100.0, 0.0]).view(3, 1, 1, 1)  # cond (slot 2), frame 1, frame 2
    assert plain.abs().max() < 2.0  # what is left is the sine encoding, in [-1, 1]
    expected = get_1d_sine_pe(torch.tensor([3.0, 1.0, 2.0]) / 3, 32)
    assert torch.allclose(tpos[-1], expected)


def test_eval_pointers_come_from_past_conditioning_frames_only(sam2_tools, monkeypatch):
    """In eval (only_obj_ptrs_in_the_past_for_eval), frame 1 of a clip prompted on frames 0 and 3
    reads pointers of frame 0 (+1) only; in training also frame 3's (signed offset -2)."""
    model = sam2_tools.make_tracker()
    calls, tpos = _record_memory(model, monkeypatch)
    batch = sam2_tools.make_batch(num_frames=4)
    plan = PromptPlan(False, [0, 3])
    model.eval()
    _outputs(model, batch, plan)
    assert torch.allclose(tpos[0], get_1d_sine_pe(torch.tensor([1.0]) / 3, 32))
    model.train()
    tpos.clear()
    with torch.no_grad():
        model.forward_tracking(batch, plan)
    assert torch.allclose(tpos[0], get_1d_sine_pe(torch.tensor([1.0, -2.0]) / 3, 32))
