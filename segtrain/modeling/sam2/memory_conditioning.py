"""How SAM 2 conditions a frame on its memory bank (the official
``SAM2Base._prepare_memory_conditioned_features``): which frames' memories and object
pointers enter, with which temporal encodings.

- Conditioning frames (prompted ones) enter with temporal slot ``maskmem_tpos_enc[num_maskmem
  - 1]``, all of them (or the ``max_cond_frames_in_attn`` closest), before or after the frame;
- the ``num_maskmem - 1`` previous frames (in the tracking direction; every
  ``memory_temporal_stride_for_eval``-th in eval beyond the first) enter with slots
  ``maskmem_tpos_enc[0]`` (the previous frame) to ``[num_maskmem - 2]``;
- object pointers: those of the conditioning frames (only the past ones in eval with
  ``only_obj_ptrs_in_the_past_for_eval``) and of the ``min(T, max_obj_ptrs_in_encoder) - 1``
  previous frames, with a 1-D sine encoding of their signed frame distance divided by
  ``min(T, max_obj_ptrs_in_encoder) - 1``, projected to the memory width; a pointer of C
  channels is split into C / mem_dim tokens. Pointer tokens are left out of RoPE.
"""

from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor

from .common import get_1d_sine_pe

__all__ = ["select_closest_cond_frames", "MemoryConditioning"]


def select_closest_cond_frames(
    frame_idx: int, cond_frame_outputs: Dict[int, Any], max_cond_frame_num: int
) -> Tuple[Dict[int, Any], Dict[int, Any]]:
    """(selected, unselected) conditioning frames: all of them when ``max_cond_frame_num`` is
    -1 or not exceeded; else the closest one before ``frame_idx``, the closest one at or after
    it, then the temporally closest others up to ``max_cond_frame_num`` (>= 2)."""
    if max_cond_frame_num == -1 or len(cond_frame_outputs) <= max_cond_frame_num:
        return cond_frame_outputs, {}
    if max_cond_frame_num < 2:
        raise ValueError(f"max_cond_frames_in_attn must be -1 or >= 2, got {max_cond_frame_num}")
    selected = {}
    idx_before = max((t for t in cond_frame_outputs if t < frame_idx), default=None)
    if idx_before is not None:
        selected[idx_before] = cond_frame_outputs[idx_before]
    idx_after = min((t for t in cond_frame_outputs if t >= frame_idx), default=None)
    if idx_after is not None:
        selected[idx_after] = cond_frame_outputs[idx_after]
    num_remain = max_cond_frame_num - len(selected)
    rest = sorted((t for t in cond_frame_outputs if t not in selected), key=lambda x: abs(x - frame_idx))
    selected.update((t, cond_frame_outputs[t]) for t in rest[:num_remain])
    unselected = {t: v for t, v in cond_frame_outputs.items() if t not in selected}
    return selected, unselected


class MemoryConditioning:
    """The memory-conditioning step of ``SAM2Base`` (module docstring)."""

    def _prepare_memory_conditioned_features(
        self,
        frame_idx: int,
        is_init_cond_frame: bool,
        current_vision_feats: List[Tensor],
        current_vision_pos_embeds: List[Tensor],
        feat_sizes: List[Tuple[int, int]],
        output_dict: Dict[str, Dict[int, Dict[str, Any]]],
        num_frames: int,
        track_in_reverse: bool = False,
    ) -> Tensor:
        """current_vision_feats / _pos_embeds: [[HW, B, C]] (the embedding level); output_dict:
        {"cond_frame_outputs": {t: out}, "non_cond_frame_outputs": {t: out}} with each out's
        ``maskmem_features`` [B, Cm, H, W], ``maskmem_pos_enc`` [[B, Cm, H, W]] and ``obj_ptr``
        [B, C]. Returns the memory-conditioned features [B, C, H, W]."""
        b = current_vision_feats[-1].size(1)
        c = self.hidden_dim
        h, w = feat_sizes[-1]
        device = current_vision_feats[-1].device
        if self.num_maskmem == 0:
            return current_vision_feats[-1].permute(1, 2, 0).reshape(b, c, h, w)
        if is_init_cond_frame:
            if self.directly_add_no_mem_embed:
                pix = current_vision_feats[-1] + self.no_mem_embed
                return pix.permute(1, 2, 0).reshape(b, c, h, w)
            memory = [self.no_mem_embed.expand(1, b, self.mem_dim)]
            memory_pos = [self.no_mem_pos_enc.expand(1, b, self.mem_dim)]
            num_obj_ptr_tokens = 0
        else:
            if not output_dict["cond_frame_outputs"]:
                raise ValueError(f"SAM 2: frame {frame_idx} is tracked but no frame has a prompt yet")
            memory, memory_pos, num_obj_ptr_tokens = self._gather_memory(
                frame_idx, output_dict, num_frames, track_in_reverse, b, device, current_vision_feats[-1].dtype
            )
        out = self.memory_attention(
            curr=current_vision_feats,
            curr_pos=current_vision_pos_embeds,
            memory=torch.cat(memory, dim=0),
            memory_pos=torch.cat(memory_pos, dim=0),
            num_obj_ptr_tokens=num_obj_ptr_tokens,
            feat_size=(h, w),
        )
        return out.permute(1, 2, 0).reshape(b, c, h, w)

    def _gather_memory(self, frame_idx, output_dict, num_frames, track_in_reverse, b, device, dtype):
        """The memory tokens [L, B, Cm] and their encodings of a tracked frame, as lists, and
        the number of object-pointer tokens at the end. Memories stored in another precision
        (the predictor keeps them in bfloat16) are read in ``dtype``: the official model gets
        the same by concatenating them with the float32 pointers, and without pointers (a frame
        before the object's first prompt) it would fail."""
        memory, memory_pos = [], []
        selected, unselected = select_closest_cond_frames(
            frame_idx, output_dict["cond_frame_outputs"], self.max_cond_frames_in_attn
        )
        t_pos_and_prevs = [(0, out) for out in selected.values()]
        stride = 1 if self.training else self.memory_temporal_stride_for_eval
        for t_pos in range(1, self.num_maskmem):
            t_rel = self.num_maskmem - t_pos  # frames before the current one
            if t_rel == 1:
                prev = frame_idx + t_rel if track_in_reverse else frame_idx - t_rel
            elif not track_in_reverse:
                prev = ((frame_idx - 2) // stride) * stride - (t_rel - 2) * stride
            else:
                prev = -(-(frame_idx + 2) // stride) * stride + (t_rel - 2) * stride
            out = output_dict["non_cond_frame_outputs"].get(prev, unselected.get(prev))
            t_pos_and_prevs.append((t_pos, out))
        for t_pos, prev in t_pos_and_prevs:
            if prev is None:
                continue
            memory.append(prev["maskmem_features"].to(device=device, dtype=dtype).flatten(2).permute(2, 0, 1))
            enc = prev["maskmem_pos_enc"][-1].to(device).flatten(2).permute(2, 0, 1)
            memory_pos.append(enc + self.maskmem_tpos_enc[self.num_maskmem - t_pos - 1])

        num_obj_ptr_tokens = 0
        if self.use_obj_ptrs_in_encoder:
            ptrs, pos = self._gather_obj_ptrs(
                frame_idx, selected, unselected, output_dict, num_frames, track_in_reverse
            )
            if ptrs is not None:
                memory.append(ptrs)
                memory_pos.append(pos)
                num_obj_ptr_tokens = ptrs.shape[0]
        return memory, memory_pos, num_obj_ptr_tokens

    def _gather_obj_ptrs(self, frame_idx, selected, unselected, output_dict, num_frames, track_in_reverse):
        """Object-pointer tokens [P * C / Cm, B, Cm] and their encodings, or (None, None)."""
        max_ptrs = min(num_frames, self.max_obj_ptrs_in_encoder)
        sign = -1 if track_in_reverse else 1
        if not self.training and self.only_obj_ptrs_in_the_past_for_eval:
            cond = {t: o for t, o in selected.items() if (t >= frame_idx if track_in_reverse else t <= frame_idx)}
        else:
            cond = selected
        pos_and_ptrs = [
            ((frame_idx - t) * sign if self.use_signed_tpos_enc_to_obj_ptrs else abs(frame_idx - t), o["obj_ptr"])
            for t, o in cond.items()
        ]
        for t_diff in range(1, max_ptrs):
            t = frame_idx + t_diff if track_in_reverse else frame_idx - t_diff
            if t < 0 or (num_frames is not None and t >= num_frames):
                break
            o = output_dict["non_cond_frame_outputs"].get(t, unselected.get(t))
            if o is not None:
                pos_and_ptrs.append((t_diff, o["obj_ptr"]))
        if not pos_and_ptrs:
            return None, None
        pos_list, ptr_list = zip(*pos_and_ptrs)
        obj_ptrs = torch.stack(ptr_list, dim=0)  # [P, B, C]
        b, c = obj_ptrs.shape[1], obj_ptrs.shape[2]
        if self.add_tpos_enc_to_obj_ptrs:
            tpos_dim = c if self.proj_tpos_enc_in_obj_ptrs else self.mem_dim
            obj_pos = torch.tensor(pos_list, device=obj_ptrs.device)
            obj_pos = get_1d_sine_pe(obj_pos / (max_ptrs - 1), dim=tpos_dim)
            obj_pos = self.obj_ptr_tpos_proj(obj_pos).unsqueeze(1).expand(-1, b, self.mem_dim)
        else:
            obj_pos = obj_ptrs.new_zeros(len(pos_list), b, self.mem_dim)
        if self.mem_dim < c:
            split = c // self.mem_dim
            obj_ptrs = obj_ptrs.reshape(-1, b, split, self.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            obj_pos = obj_pos.repeat_interleave(split, dim=0)
        return obj_ptrs, obj_pos
