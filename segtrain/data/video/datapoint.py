"""``BatchedVideoDatapoint`` (the SAM 2 training batch) and the collate function that builds it
from video-mapper outputs.

Objects of all videos of a batch are concatenated along one axis ``N`` (as in SAM 2): object
``n`` belongs to video ``obj_batch_idx[n]``, and its target at clip frame ``t`` is
``masks[t, n]``, to be compared with the prediction on image ``img_batch[t, obj_batch_idx[n]]``.
This is the ``[T, N, H, W]`` target layout of ``MultiStepMultiMasksAndIous`` (docs/losses.md).
"""

import logging
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Sequence

import torch

from segtrain.utils.errors import DatasetError

__all__ = ["BatchedVideoDatapoint", "collate_video_clips"]

logger = logging.getLogger(__name__)


@dataclass
class BatchedVideoDatapoint:
    """A batch of B clips of T frames with N objects in total.

    img_batch: uint8 [T, B, 3, H, W] RGB frames (the model normalizes; uint8 keeps the
        host-to-device copy 4x smaller).
    masks: bool [T, N, H, W] per-frame targets (empty where the object is absent or padding).
    obj_to_frame_idx: int32 [T, N, 2]: (frame index in the clip, video index in the batch)
        of every target, SAM 2's layout.
    obj_batch_idx: int64 [N] video index in the batch of every object.
    obj_valid: bool [N] False for padding slots (``PAD_OBJECTS``), True for real objects.
    valid: bool [T, N] True where ``masks[t, n]`` is a real target: ``obj_valid`` on every
        frame (an absent object is a valid, empty target).
    obj_ids: int64 [N] annotation ids (-1 for padding); category_ids: int64 [N] (-1 for padding).
    frame_indices: int64 [T, B] index of each clip frame in its original video.
    orig_sizes: int64 [B, 2] original (height, width) of each video.
    is_image: bool [B] True for a single image adapted as a one-frame clip.
    video_ids: list [B] of the dataset's video ids.
    """

    img_batch: torch.Tensor
    masks: torch.Tensor
    obj_to_frame_idx: torch.Tensor
    obj_batch_idx: torch.Tensor
    obj_valid: torch.Tensor
    valid: torch.Tensor
    obj_ids: torch.Tensor
    category_ids: torch.Tensor
    frame_indices: torch.Tensor
    orig_sizes: torch.Tensor
    is_image: torch.Tensor
    video_ids: List[Any]

    @property
    def num_frames(self) -> int:
        return int(self.img_batch.shape[0])

    @property
    def num_videos(self) -> int:
        return int(self.img_batch.shape[1])

    @property
    def num_objects(self) -> int:
        return int(self.masks.shape[1])

    @property
    def flat_img_batch(self) -> torch.Tensor:
        """[T * B, 3, H, W]: frame-major, image ``t * B + b`` is frame t of video b."""
        return self.img_batch.flatten(0, 1)

    @property
    def flat_obj_to_img_idx(self) -> torch.Tensor:
        """int64 [T, N]: index into ``flat_img_batch`` of the image each target belongs to."""
        t, b = self.obj_to_frame_idx.unbind(-1)
        return t.long() * self.num_videos + b.long()

    def _map(self, fn) -> "BatchedVideoDatapoint":
        kw = {}
        for f in fields(self):
            v = getattr(self, f.name)
            kw[f.name] = fn(v) if isinstance(v, torch.Tensor) else v
        return BatchedVideoDatapoint(**kw)

    def to(self, device, non_blocking: bool = False) -> "BatchedVideoDatapoint":
        """A copy with every tensor on ``device``."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "BatchedVideoDatapoint":
        """A copy in page-locked memory (``DataLoader(pin_memory=True)`` calls this)."""
        return self._map(lambda t: t.pin_memory())


def collate_video_clips(
    clips: Sequence[Dict[str, Any]], *, pad_objects_to: Optional[int] = None
) -> BatchedVideoDatapoint:
    """Stack video-mapper outputs (``VideoDatasetMapper``) into a ``BatchedVideoDatapoint``.

    Each clip holds ``images`` uint8 [T, 3, H, W], ``masks`` bool [T, N_i, H, W], ``obj_ids`` /
    ``category_ids`` int64 [N_i], ``frame_indices`` int64 [T], ``video_id``, ``height``,
    ``width`` and ``is_image``. All clips must share T, H and W. With ``pad_objects_to`` every
    clip contributes exactly that many object slots (extra ones empty, ``obj_valid`` False).
    """
    clips = [c for c in clips if c is not None]
    if not clips:
        raise DatasetError("collate_video_clips got an empty batch (every clip was skipped)")
    t0, _, h0, w0 = clips[0]["images"].shape
    for c in clips[1:]:
        t, _, h, w = c["images"].shape
        if (t, h, w) != (t0, h0, w0):
            raise DatasetError(
                f"clips of one batch must share frames and size: video id {clips[0]['video_id']} is "
                f"{t0}x{h0}x{w0} (TxHxW), video id {c['video_id']} is {t}x{h}x{w}"
            )
    masks, obj_batch, obj_valid, obj_ids, cat_ids = [], [], [], [], []
    for b, c in enumerate(clips):
        m = c["masks"]
        n = int(m.shape[1])
        if pad_objects_to is not None:
            if n > pad_objects_to:
                raise DatasetError(
                    f"video id {c['video_id']} has {n} objects in its clip, more than the padding size {pad_objects_to}"
                )
            extra = pad_objects_to - n
            m = torch.cat([m, m.new_zeros((t0, extra, h0, w0))], dim=1)
        else:
            extra = 0
        masks.append(m)
        obj_batch.append(torch.full((n + extra,), b, dtype=torch.int64))
        obj_valid.append(torch.cat([torch.ones(n, dtype=torch.bool), torch.zeros(extra, dtype=torch.bool)]))
        obj_ids.append(torch.cat([c["obj_ids"].long(), torch.full((extra,), -1, dtype=torch.int64)]))
        cat_ids.append(torch.cat([c["category_ids"].long(), torch.full((extra,), -1, dtype=torch.int64)]))
    obj_batch_idx = torch.cat(obj_batch)
    valid_obj = torch.cat(obj_valid)
    n_total = int(obj_batch_idx.numel())
    frame_of = torch.arange(t0, dtype=torch.int32)[:, None].expand(t0, n_total)
    video_of = obj_batch_idx.to(torch.int32)[None, :].expand(t0, n_total)
    return BatchedVideoDatapoint(
        img_batch=torch.stack([c["images"] for c in clips], dim=1),
        masks=torch.cat(masks, dim=1).bool(),
        obj_to_frame_idx=torch.stack([frame_of, video_of], dim=-1).contiguous(),
        obj_batch_idx=obj_batch_idx,
        obj_valid=valid_obj,
        valid=valid_obj[None, :].expand(t0, n_total).clone(),
        obj_ids=torch.cat(obj_ids),
        category_ids=torch.cat(cat_ids),
        frame_indices=torch.stack([torch.as_tensor(c["frame_indices"], dtype=torch.int64) for c in clips], dim=1),
        orig_sizes=torch.tensor([[int(c["height"]), int(c["width"])] for c in clips], dtype=torch.int64),
        is_image=torch.tensor([bool(c.get("is_image", False)) for c in clips], dtype=torch.bool),
        video_ids=[c["video_id"] for c in clips],
    )
