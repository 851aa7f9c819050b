"""SAM 2's clip sampling and augmentations: reverse time, the random affine (same for the whole
clip, masks and image together, keeping the first frame's objects), grey frames, colour jitter
once per clip or per frame."""

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from segtrain.config import get_cfg
from segtrain.data.transforms import AffineTransform, ColorJitter, RandomAffine, RandomGrayscale
from segtrain.data.video import ClipSampler, VideoDatasetMapper, build_video_augmentations
from segtrain.utils.errors import ConfigError


def _video(tmp_path, length=6, size=32, corner_object=False):
    """Identical frames (a gradient image); object 1 a square that moves right by 1 px per frame;
    with ``corner_object`` also a 2x2 object in the top-left corner of every frame."""
    frame = np.stack(np.meshgrid(np.arange(size) * 7 % 256, np.arange(size) * 3 % 256, indexing="xy"), axis=-1)
    frame = np.concatenate([frame, np.full((size, size, 1), 60)], axis=-1).astype(np.uint8)
    files = []
    for t in range(length):
        path = tmp_path / f"{t:05d}.jpg"
        Image.fromarray(frame).save(path, quality=100)
        files.append(str(path))
    annos = [
        {
            "id": 1,
            "category_id": 0,
            "segmentations": [[[8.0 + t, 8, 20 + t, 8, 20 + t, 20, 8.0 + t, 20]] for t in range(length)],
        }
    ]
    if corner_object:
        annos.append({"id": 2, "category_id": 0, "segmentations": [[[0.0, 0, 2, 0, 2, 2, 0, 2]]] * length})
    return {"video_id": 0, "height": size, "width": size, "length": length, "file_names": files, "annotations": annos}


def test_reverse_time_prob(tmp_path):
    video = _video(tmp_path)
    rng = np.random.RandomState(0)
    always = ClipSampler(4, 1, reverse_time_prob=1.0)
    for _ in range(10):
        frames, _ = always.sample(video, rng)
        assert np.all(np.diff(frames) == -1)
    half = ClipSampler(4, 1, reverse_time_prob=0.5)
    orders = {bool(np.diff(half.sample(video, rng)[0])[0] > 0) for _ in range(40)}
    assert orders == {True, False}
    with pytest.raises(ConfigError, match="REVERSE_TIME_PROB must be in"):
        ClipSampler(4, 1, reverse_time_prob=1.5)


def test_affine_moves_image_masks_and_coordinates_together():
    """A 90 degree rotation of a square image maps the pixel grid onto itself: the image, a mask
    and the polygon coordinates of the same pixel agree exactly; 0 / 0 is the identity."""
    img = np.zeros((9, 9, 3), np.uint8)
    img[1, 6] = 255
    mask = img[..., 0] > 0
    rot90 = AffineTransform(9, 9, [[0.0, -1.0], [1.0, 0.0]], interp=0)
    out, out_mask = rot90.apply_image(img), rot90.apply_segmentation(mask)
    ys, xs = np.nonzero(out[..., 0])
    assert (ys.tolist(), xs.tolist()) == (np.nonzero(out_mask)[0].tolist(), np.nonzero(out_mask)[1].tolist())
    ((cx, cy),) = rot90.apply_coords(np.array([[6.5, 1.5]]))  # the pixel's centre
    assert (int(cy), int(cx)) == (ys[0], xs[0]) and out_mask.sum() == 1
    np.random.seed(0)
    identity = RandomAffine(0.0, 0.0).get_transform(img)
    assert np.array_equal(identity.apply_image(img), img)


def _cfg(**video):
    cfg = get_cfg()
    cfg.INPUT.VIDEO.IMAGE_SIZE = 32
    cfg.INPUT.VIDEO.NUM_FRAMES = 4
    cfg.INPUT.VIDEO.RANDOM_FLIP = "none"
    for key, value in video.items():
        node = cfg.INPUT.VIDEO
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return cfg


def test_clip_wide_affine_is_the_same_on_every_frame_and_keeps_first_frame_objects(tmp_path):
    video = _video(tmp_path, corner_object=True)
    cfg = _cfg(**{"AFFINE.ENABLED": True, "AFFINE.DEGREES": 45.0, "AFFINE.SHEAR": 0.0, "MAX_OBJECTS": 2})
    mapper = VideoDatasetMapper(cfg, is_train=True)
    assert [type(a).__name__ for a in mapper.augmentations] == ["RandomAffine", "ResizeSquare"]
    np.random.seed(0)
    moved = 0
    for _ in range(20):
        out = mapper(video)
        images = out["images"].numpy()
        assert all(np.array_equal(images[0], images[i]) for i in range(1, 4))  # identical frames stay identical
        assert out["masks"][0].flatten(1).any(dim=1).all()  # the corner object survives on the first frame
        moved += int(not np.array_equal(out["masks"][0, 0].numpy(), _square()))
    assert moved > 10  # most draws do rotate


def _square():
    m = np.zeros((32, 32), bool)
    m[8:20, 8:20] = True
    return m


def test_grayscale_is_clip_wide_and_jitter_per_frame(tmp_path):
    video = _video(tmp_path)
    cfg = _cfg(GRAYSCALE_PROB=1.0, PER_FRAME_COLOR_JITTER=[0.5, 0.0, 0.0])
    mapper = VideoDatasetMapper(cfg, is_train=True)
    assert [type(a).__name__ for a in mapper.augmentations] == ["ResizeSquare", "RandomGrayscale", "ColorJitter"]
    np.random.seed(1)
    out = mapper(video)
    images = out["images"].numpy().astype(np.int64)  # [T, 3, H, W]
    assert (images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all()  # grey frames
    means = images.mean(axis=(1, 2, 3))
    assert len(set(np.round(means, 3).tolist())) == 4  # a brightness of its own for every frame
    assert out["masks"][:, 0].sum(dim=(1, 2)).tolist() == [144] * 4  # photometric: masks untouched
    with pytest.raises(ConfigError, match="drawn per frame must come after"):
        VideoDatasetMapper(is_train=False, augmentations=[ColorJitter(0.1, per_frame=True), RandomGrayscale(0.5)])


def test_color_jitter_is_pil_image_enhance_in_a_random_order():
    img = (np.arange(5 * 7 * 3).reshape(5, 7, 3) * 5 % 256).astype(np.uint8)
    np.random.seed(3)
    tfm = ColorJitter(0.4, 0.4, 0.4).get_transform(img)
    np.random.seed(3)
    order = np.random.permutation(3)
    factors = [np.random.uniform(0.6, 1.4) for _ in range(3)]
    pil = Image.fromarray(img)
    for i in order:
        pil = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)[i](pil).enhance(factors[i])
    assert np.array_equal(tfm.apply_image(img), np.asarray(pil))


def test_mose_recipe_order():
    """Flip, affine, square resize, clip-wide jitter, grey, per-frame jitter (SAM 2's MOSE list)."""
    cfg = _cfg(**{"AFFINE.ENABLED": True, "GRAYSCALE_PROB": 0.05, "PER_FRAME_COLOR_JITTER": [0.1, 0.05, 0.05]})
    cfg.INPUT.VIDEO.RANDOM_FLIP = "horizontal"
    cfg.INPUT.COLOR_JITTER.ENABLED = True
    cj = cfg.INPUT.COLOR_JITTER
    cj.BRIGHTNESS, cj.CONTRAST, cj.SATURATION = 0.1, 0.03, 0.03
    augs = build_video_augmentations(cfg, is_train=True)
    names = [type(a).__name__ for a in augs]
    assert names == ["RandomFlip", "RandomAffine", "ResizeSquare", "ColorJitter", "RandomGrayscale", "ColorJitter"]
    assert [getattr(a, "per_frame", False) for a in augs] == [False] * 5 + [True]
    assert (augs[1].degrees, augs[1].shear) == (25.0, 20.0)
