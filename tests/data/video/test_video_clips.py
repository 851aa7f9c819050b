"""Clip sampling (frames, objects), collation with object padding, the video mapper's clip-wide
augmentation, images as one-frame clips, and the video loaders (shapes, grouping, resume)."""

import numpy as np
import pytest
import torch

from segtrain.data import DatasetCatalog, register_coco_instances
from segtrain.data.datasets.ytvis import load_ytvis_json
from segtrain.data.transforms import RandomFlip
from segtrain.data.video import (
    BatchedVideoDatapoint,
    ClipSampler,
    ResizeSquare,
    VideoDatasetMapper,
    build_video_test_loader,
    build_video_train_loader,
    collate_video_clips,
    image_dict_to_video_dict,
)
from segtrain.evaluation.video_evaluation import video_gt_masks
from segtrain.utils.errors import ConfigError, DatasetError


def _video(length, n_obj, present):
    """A fake video dict; ``present(t, k)`` says whether object k is visible at frame t."""
    full = {"size": [4, 4], "counts": [0, 16]}  # all foreground, uncompressed
    return {
        "video_id": 5,
        "height": 4,
        "width": 4,
        "file_names": [f"{t}.jpg" for t in range(length)],
        "annotations": [
            {"id": 100 + k, "category_id": 0, "segmentations": [full if present(t, k) else None for t in range(length)]}
            for k in range(n_obj)
        ],
    }


def test_frames_are_strided_and_fit():
    rng = np.random.RandomState(0)
    video = _video(20, 1, lambda t, k: True)
    strides = set()
    for _ in range(200):
        frames, objs = ClipSampler(4, 3, max_frame_stride=3).sample(video, rng)
        d = np.diff(frames)
        assert len(frames) == 4 and (d == d[0]).all() and 1 <= d[0] <= 3 and 0 <= frames[0] and frames[-1] < 20
        strides.add(int(d[0]))
    assert strides == {1, 2, 3}
    # a stride that does not fit is capped: 4 frames of a 5-frame video are consecutive
    frames, _ = ClipSampler(4, 3, max_frame_stride=5).sample(_video(5, 1, lambda t, k: True), rng)
    assert np.all(np.diff(frames) == 1)
    with pytest.raises(DatasetError, match="video id 5 has 3 annotated frames, fewer than INPUT.VIDEO.NUM_FRAMES"):
        ClipSampler(4, 3).sample(_video(3, 1, lambda t, k: True), rng)
    with pytest.raises(ConfigError, match="OBJECT_SAMPLING"):
        ClipSampler(4, 3, object_sampling="random")


def test_object_sampling_modes():
    rng = np.random.RandomState(1)
    # object k is visible from frame 2k on: object 0 always, object 3 only from frame 6
    video = _video(8, 4, lambda t, k: t >= 2 * k)
    first = ClipSampler(2, 0)
    for _ in range(100):
        frames, objs = first.sample(video, rng)
        assert objs and all(frames[0] >= 2 * k for k in objs)  # visible in the first sampled frame
    anyf = ClipSampler(2, 0, object_sampling="any_frame")
    for _ in range(100):
        frames, objs = anyf.sample(video, rng)
        assert objs == [k for k in range(4) if frames[-1] >= 2 * k]
    # at most max_objects, in annotation order, varying
    seen = set()
    for _ in range(100):
        _, objs = ClipSampler(1, 2).sample(_video(1, 5, lambda t, k: True), rng)
        assert len(objs) == 2 and objs == sorted(objs)
        seen.add(tuple(objs))
    assert len(seen) > 3
    # nothing visible in the clip: no objects
    assert ClipSampler(2, 3).sample(_video(4, 2, lambda t, k: False), rng)[1] == []


def _clip(vid, t, n, h=6, w=6):
    return {
        "video_id": vid,
        "height": 10,
        "width": 12,
        "is_image": False,
        "images": torch.full((t, 3, h, w), vid, dtype=torch.uint8),
        "masks": torch.ones((t, n, h, w), dtype=torch.bool),
        "obj_ids": torch.arange(n) + 10 * vid,
        "category_ids": torch.zeros(n, dtype=torch.int64),
        "frame_indices": torch.arange(t) + vid,
    }


def test_collate_pads_objects_with_valid_flags():
    clips = [_clip(1, 3, 1), _clip(2, 3, 2)]
    b = collate_video_clips(clips)
    assert isinstance(b, BatchedVideoDatapoint)
    assert b.img_batch.shape == (3, 2, 3, 6, 6) and b.masks.shape == (3, 3, 6, 6)
    assert b.obj_batch_idx.tolist() == [0, 1, 1] and b.obj_valid.all()
    assert b.num_frames == 3 and b.num_videos == 2 and b.num_objects == 3
    assert (b.img_batch[:, 1] == 2).all() and b.frame_indices[:, 1].tolist() == [2, 3, 4]
    assert b.orig_sizes.tolist() == [[10, 12], [10, 12]] and b.video_ids == [1, 2]

    p = collate_video_clips(clips, pad_objects_to=3)
    assert p.masks.shape == (3, 6, 6, 6)
    assert p.obj_valid.tolist() == [True, False, False, True, True, False]
    assert p.valid.shape == (3, 6) and (p.valid == p.obj_valid[None]).all()
    assert p.obj_ids.tolist() == [10, -1, -1, 20, 21, -1]
    assert not p.masks[:, [1, 2, 5]].any() and p.masks[:, [0, 3, 4]].all()
    assert p.obj_batch_idx.tolist() == [0, 0, 0, 1, 1, 1]
    # SAM 2's layout: (frame in clip, video in batch) per target; flat index into [T * B] images
    assert p.obj_to_frame_idx.shape == (3, 6, 2) and p.obj_to_frame_idx[2, 4].tolist() == [2, 1]
    assert p.flat_obj_to_img_idx[2].tolist() == [4, 4, 4, 5, 5, 5]
    assert torch.equal(p.flat_img_batch[5], p.img_batch[2, 1])
    moved = p.to("cpu")
    assert moved is not p and torch.equal(moved.masks, p.masks) and moved.video_ids == [1, 2]

    with pytest.raises(DatasetError, match="more than the padding size 1"):
        collate_video_clips(clips, pad_objects_to=1)
    with pytest.raises(DatasetError, match="video id 1 is 3x6x6 .* video id 3 is 2x6x6"):
        collate_video_clips([_clip(1, 3, 1), _clip(3, 2, 1)])


def test_mapper_targets_and_consistent_flip(ytvis_factory):
    json_file, root = ytvis_factory()
    v1, v2 = load_ytvis_json(json_file, root)
    mapper = VideoDatasetMapper(is_train=False, augmentations=[])
    out = mapper(v1)
    ids, gt = video_gt_masks(v1)
    assert out["images"].shape == (3, 3, 24, 32) and out["images"].dtype == torch.uint8
    assert out["obj_ids"].tolist() == ids and out["category_ids"].tolist() == [1, 0]
    assert torch.equal(out["masks"], torch.from_numpy(gt)) and out["frame_indices"].tolist() == [0, 1, 2]

    flip = VideoDatasetMapper(
        is_train=True, clip_sampler=ClipSampler(3, 3, object_sampling="any_frame"), augmentations=[RandomFlip(1.0)]
    )
    f = flip(v2)
    _, gt2 = video_gt_masks(v2, f["frame_indices"].tolist())
    assert torch.equal(f["masks"], torch.from_numpy(np.ascontiguousarray(gt2[..., ::-1])))
    # every frame is flipped: the bright half is on the left
    img = f["images"].float()
    assert (img[..., :16].mean(dim=(1, 2, 3)) > img[..., 16:].mean(dim=(1, 2, 3)) + 100).all()

    # a random flip is drawn once per clip: all frames agree, and both outcomes occur
    coin = VideoDatasetMapper(
        is_train=True, clip_sampler=ClipSampler(4, 3), augmentations=[ResizeSquare(16), RandomFlip(0.5)]
    )
    np.random.seed(0)
    outcomes = set()
    for _ in range(12):
        c = coin(v2)
        assert c["images"].shape == (4, 3, 16, 16) and c["masks"].shape == (4, 1, 16, 16)
        left_bright = c["images"][..., :8].float().mean(dim=(1, 2, 3)) > c["images"][..., 8:].float().mean(
            dim=(1, 2, 3)
        )
        assert left_bright.all() or not left_bright.any()
        # the square moves right in the original video: left when flipped
        xs = [c["masks"][t, 0].nonzero()[:, 1].float().mean().item() for t in range(4)]
        assert (np.diff(xs) < 0).all() == bool(left_bright[0])
        outcomes.add(bool(left_bright[0]))
    assert outcomes == {True, False}


def test_images_are_one_frame_clips(coco_factory, tiny_cfg):
    json_file, image_root = coco_factory()
    name = "_test_video_coco_images"
    register_coco_instances(name, {}, json_file, image_root)
    dicts = DatasetCatalog.get(name)
    v = image_dict_to_video_dict(dicts[1])
    assert v["is_image"] and v["length"] == 1 and len(v["annotations"]) == 1  # the crowd region is dropped
    mapper = VideoDatasetMapper(tiny_cfg, is_train=True)
    out = mapper(dicts[0])  # the image dict itself goes through the video mapper
    assert out["is_image"] and out["images"].shape == (1, 3, 128, 128)
    assert out["masks"].shape == (1, 2, 128, 128) and out["obj_ids"].tolist() == [11, 12]

    tiny_cfg.DATASETS.TRAIN = (name,)
    tiny_cfg.INPUT.VIDEO.IMAGE_SIZE = 32
    batch = next(iter(build_video_train_loader(tiny_cfg)))
    assert batch.img_batch.shape == (1, 2, 3, 32, 32) and batch.is_image.all()


@pytest.fixture
def video_cfg(tiny_cfg):
    sv = tiny_cfg.DATASETS.SHAPES_VIDEO
    sv.NUM_TRAIN, sv.NUM_VAL, sv.NUM_FRAMES, sv.IMAGE_SIZE = 6, 2, 5, 48
    tiny_cfg.INPUT.VIDEO.NUM_FRAMES = 3
    tiny_cfg.INPUT.VIDEO.IMAGE_SIZE = 32
    tiny_cfg.DATASETS.TRAIN = ("shapes_video_train",)
    return tiny_cfg


def test_shapes_video_loader_and_resume(video_cfg):
    video_cfg.INPUT.VIDEO.PAD_OBJECTS = True
    loader = build_video_train_loader(video_cfg)
    it = iter(loader)
    batches = [next(it) for _ in range(4)]
    for b in batches:
        assert b.img_batch.shape == (3, 2, 3, 32, 32) and b.masks.shape == (3, 6, 32, 32)
        assert b.obj_valid.view(2, 3)[:, 0].all()  # every clip has at least one object
        # first-frame sampling: every real object is visible in the clip's first frame
        assert b.masks[0, b.obj_valid].flatten(1).any(dim=1).all()
    state = loader.state_dict()
    after = next(it)
    resumed = build_video_train_loader(video_cfg)
    resumed.load_state_dict(state)
    again = next(iter(resumed))
    # the same videos come next (augmentation seeds follow the position, as in the image loader)
    assert again.video_ids == after.video_ids
    fresh = next(iter(build_video_train_loader(video_cfg, start_iter=4)))
    assert fresh.video_ids == after.video_ids


def test_mixed_images_and_videos_batch_apart(video_cfg):
    video_cfg.DATASETS.TRAIN = ("shapes_video_train", "shapes_train")
    video_cfg.INPUT.VIDEO.IMAGE_BATCH_PROB = 0.5
    it = iter(build_video_train_loader(video_cfg))
    kinds = set()
    for _ in range(8):
        b = next(it)
        assert b.is_image.all() or not b.is_image.any()
        assert b.num_frames == (1 if b.is_image.all() else 3)
        kinds.add(bool(b.is_image[0]))
    assert kinds == {True, False}


def test_test_loader_yields_whole_videos(video_cfg):
    loader = build_video_test_loader(video_cfg, "shapes_video_val")
    batches = list(loader)
    assert len(batches) == 2 and all(len(b) == 1 for b in batches)
    clip = batches[0][0]
    n = len(DatasetCatalog.get("shapes_video_val")[0]["annotations"])
    assert clip["images"].shape == (5, 3, 32, 32) and clip["masks"].shape == (5, n, 32, 32)
    assert clip["frame_indices"].tolist() == list(range(5))
    assert collate_video_clips(batches[0]).img_batch.shape == (5, 1, 3, 32, 32)


def test_box_only_image_annotation_is_a_one_line_error():
    d = {
        "file_name": "a.jpg",
        "height": 8,
        "width": 8,
        "image_id": 3,
        "annotations": [{"id": 7, "category_id": 0, "bbox": [1, 1, 3, 3], "bbox_mode": 1}],
    }
    with pytest.raises(DatasetError, match=r"a\.jpg: annotation id 7 has a box but no segmentation"):
        image_dict_to_video_dict(d)
