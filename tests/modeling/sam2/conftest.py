"""A tiny VideoTracker (32 px frames, 4x4 embedding) and synthetic clips of moving squares."""

import zlib

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.data.video import BatchedVideoDatapoint
from segtrain.modeling.criterion import MultiStepMultiMasksAndIous
from segtrain.modeling.sam2.build_sam import sam2_base_kwargs
from segtrain.modeling.sam2.video_tracker import VideoTracker

SIZE = 32


def tiny_cfg(size: int = SIZE):
    """The config of a tiny SAM 2 model at ``size`` px: a conv trunk (8/16/32 channels at
    strides 2/4/8), d_model 32, memories of 16 channels, one-layer heads."""
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.SAM2.IMAGE_SIZE", size,
            "MODEL.SAM2.D_MODEL", 32,
            "MODEL.SAM2.MEM_DIM", 16,
            "MODEL.SAM2.TRUNK.NAME", "TinyConv",
            "MODEL.SAM2.TINY_BACKBONE.CHANNELS", [8, 16, 32],
            "MODEL.SAM2.TINY_BACKBONE.BLOCKS", [0, 0, 1],
            "MODEL.SAM2.NECK.FPN_TOP_DOWN_LEVELS", [0, 1, 2],
            "MODEL.SAM2.NECK.SCALP", 0,
            "MODEL.SAM2.NUM_MASKMEM", 3,
            "MODEL.SAM2.MAX_OBJ_PTRS", 4,
            "MODEL.SAM2.MEMORY_ATTENTION.NUM_LAYERS", 1,
            "MODEL.SAM2.MEMORY_ATTENTION.DIM_FEEDFORWARD", 32,
            "MODEL.SAM2.MEMORY_ATTENTION.DROPOUT", 0.0,
            "MODEL.SAM2.MEMORY_ATTENTION.USE_ROPE", False,
            "MODEL.SAM2.MEMORY_ATTENTION.POS_ENC_AT_ATTN", True,
            "MODEL.SAM2.MEMORY_ATTENTION.POS_ENC_AT_CROSS_ATTN_QUERIES", True,
            "MODEL.SAM2.MEMORY_ENCODER.NUM_FUSER_LAYERS", 1,
            "MODEL.SAM2.PROMPT_ENCODER.MASK_IN_CHANS", 8,
            "MODEL.SAM2.MASK_DECODER.DEPTH", 1,
            "MODEL.SAM2.MASK_DECODER.NUM_HEADS", 2,
            "MODEL.SAM2.MASK_DECODER.MLP_DIM", 32,
            "MODEL.SAM2.MASK_DECODER.IOU_HEAD_HIDDEN_DIM", 16,
        ]
    )  # fmt: skip
    return cfg


def make_tracker(**overrides) -> VideoTracker:
    torch.manual_seed(0)
    criterion = MultiStepMultiMasksAndIous(
        {"loss_mask": 20.0, "loss_dice": 1.0, "loss_iou": 1.0, "loss_class": 1.0},
        supervise_all_iou=True,
        iou_use_l1_loss=True,
        pred_obj_scores=True,
    )
    kwargs = dict(sam2_base_kwargs(tiny_cfg()), criterion=criterion, num_correction_pt_per_frame=3)
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


def clip_batch(size: int) -> BatchedVideoDatapoint:
    """One 3-frame video at ``size`` px (>= 128) with two coloured boxes moving in opposite directions."""
    g = torch.Generator().manual_seed(0)
    t, n = 3, 2
    imgs = torch.randint(0, 60, (t, 1, 3, size, size), generator=g).to(torch.uint8)
    masks = torch.zeros(t, n, size, size, dtype=torch.bool)
    for k in range(t):
        masks[k, 0, 20:60, 10 + 8 * k : 50 + 8 * k] = True
        masks[k, 1, 70:110, 80 - 6 * k : 120 - 6 * k] = True
        imgs[k, 0][:, masks[k, 0]] = torch.tensor([220, 60, 40], dtype=torch.uint8)[:, None]
        imgs[k, 0][:, masks[k, 1]] = torch.tensor([40, 200, 90], dtype=torch.uint8)[:, None]
    frame_of = torch.arange(t, dtype=torch.int32)[:, None].expand(t, n)
    return BatchedVideoDatapoint(
        img_batch=imgs,
        masks=masks,
        obj_to_frame_idx=torch.stack([frame_of, torch.zeros(t, n, dtype=torch.int32)], -1),
        obj_batch_idx=torch.zeros(n, dtype=torch.int64),
        obj_valid=torch.ones(n, dtype=torch.bool),
        valid=torch.ones(t, n, dtype=torch.bool),
        obj_ids=torch.arange(n),
        category_ids=torch.zeros(n, dtype=torch.int64),
        frame_indices=torch.arange(t)[:, None],
        orig_sizes=torch.tensor([[size, size]]),
        is_image=torch.zeros(1, dtype=torch.bool),
        video_ids=[0],
    )


@pytest.fixture
def sam2_tools():
    """``make_tracker(**overrides)``, ``make_batch(...)``, ``square(y, x, s)``, ``clip_batch(size)``, ``SIZE``."""
    import types

    return types.SimpleNamespace(
        make_tracker=make_tracker, make_batch=make_batch, square=square, clip_batch=clip_batch, SIZE=SIZE
    )


def synthetic_state_dict(shapes):
    """{name: shape} -> deterministic weights: each tensor from its own generator seeded by the
    CRC32 of its name; 1-d weights 1 + 0.1 N, 1-d biases / other 1-d 0.02 N (gamma: 0.1 N),
    matrices and kernels N / sqrt(fan_in), the random-Fourier matrix N."""
    out = {}
    for name, shape in shapes.items():
        g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
        x = torch.randn(tuple(shape), generator=g)
        if name.endswith("positional_encoding_gaussian_matrix"):
            out[name] = x
        elif len(shape) <= 1 and name.endswith("weight"):
            out[name] = 1 + 0.1 * x
        elif len(shape) <= 1 and name.endswith("gamma"):
            out[name] = 0.1 * x
        elif len(shape) <= 1:
            out[name] = 0.02 * x
        else:
            fan_in = 1
            for d in shape[1:]:
                fan_in *= d
            out[name] = x / max(fan_in, 1) ** 0.5
    return out


@pytest.fixture(scope="session")
def synthetic_weights():
    """``synthetic_state_dict``: the deterministic weights the official-predictor fixtures used."""
    return synthetic_state_dict
