"""A tiny VideoTracker (32 px frames, 4x4 embedding) and synthetic clips of moving squares."""

import pytest
import torch

from segtrain.data.video import BatchedVideoDatapoint
from segtrain.modeling.criterion import MultiStepMultiMasksAndIous
from segtrain.modeling.sam2 import TinyConvBackbone
from segtrain.modeling.sam2.video_tracker import VideoTracker

SIZE = 32


def make_tracker(**overrides) -> VideoTracker:
    torch.manual_seed(0)
    criterion = MultiStepMultiMasksAndIous(
        {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0},
        supervise_all_iou=True,
        iou_use_l1_loss=True,
        pred_obj_scores=True,
    )
    kwargs = dict(
        backbone=TinyConvBackbone(3, [8, 16, 32], [0, 0, 1], ["stage1", "stage2", "stage3"]),
        in_features=["stage1", "stage2", "stage3"],
        d_model=32,
        mem_dim=16,
        image_size=SIZE,
        criterion=criterion,
        pixel_mean=[123.7, 116.3, 103.5],
        pixel_std=[58.4, 57.1, 57.4],
        num_maskmem=3,
        max_obj_ptrs=4,
        memory_attention_layers=1,
        memory_attention_ff=32,
        num_fuser_layers=1,
        mask_in_chans=8,
        decoder_depth=1,
        decoder_heads=2,
        decoder_mlp_dim=32,
        iou_head_hidden_dim=16,
        num_correction_pt_per_frame=3,
    )
    kwargs.update(overrides)
    return VideoTracker(**kwargs)


def square(y: int, x: int, s: int = 8) -> torch.Tensor:
    m = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    m[max(y, 0) : max(y + s, 0), max(x, 0) : max(x + s, 0)] = True
    return m


def make_batch(num_frames: int = 4, objects_per_video=(2, 1), pad_to: int = 0, seed: int = 0) -> BatchedVideoDatapoint:
    """B videos of squares moving right by 2 px per frame on noise; object k of a video has
    its own colour. ``pad_to`` adds empty padding slots (obj_valid False) per video."""
    g = torch.Generator().manual_seed(seed)
    b = len(objects_per_video)
    imgs = torch.randint(0, 40, (num_frames, b, 3, SIZE, SIZE), generator=g, dtype=torch.int64)
    masks, obj_b, valid = [], [], []
    for v, n in enumerate(objects_per_video):
        for k in range(n):
            y, x = 2 + 12 * k, 2 + 6 * v
            color = torch.tensor([200, 60 + 60 * k, 30 * v])[:, None]
            track = torch.stack([square(y, x + 2 * t) for t in range(num_frames)])
            for t in range(num_frames):
                imgs[t, v][:, track[t]] = color
            masks.append(track)
            obj_b.append(v)
            valid.append(True)
        for _ in range(max(pad_to - n, 0)):
            masks.append(torch.zeros(num_frames, SIZE, SIZE, dtype=torch.bool))
            obj_b.append(v)
            valid.append(False)
    masks = torch.stack(masks, dim=1)
    obj_b = torch.tensor(obj_b)
    n_tot = len(obj_b)
    frame_of = torch.arange(num_frames, dtype=torch.int32)[:, None].expand(num_frames, n_tot)
    return BatchedVideoDatapoint(
        img_batch=imgs.to(torch.uint8),
        masks=masks,
        obj_to_frame_idx=torch.stack([frame_of, obj_b.to(torch.int32)[None].expand(num_frames, n_tot)], -1),
        obj_batch_idx=obj_b,
        obj_valid=torch.tensor(valid),
        valid=torch.tensor(valid)[None].expand(num_frames, n_tot).clone(),
        obj_ids=torch.arange(n_tot),
        category_ids=torch.zeros(n_tot, dtype=torch.int64),
        frame_indices=torch.arange(num_frames)[:, None].expand(num_frames, b).clone(),
        orig_sizes=torch.tensor([[SIZE, SIZE]] * b),
        is_image=torch.zeros(b, dtype=torch.bool),
        video_ids=list(range(b)),
    )


@pytest.fixture
def sam2_tools():
    """``make_tracker(**overrides)``, ``make_batch(...)``, ``square(y, x, s)`` and ``SIZE``."""
    import types

    return types.SimpleNamespace(make_tracker=make_tracker, make_batch=make_batch, square=square, SIZE=SIZE)
