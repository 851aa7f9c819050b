"""INPUT.SQUARE_RESIZE (SAM 3's fine-tuning resize): a random square size from the official
list, the aspect ratio not kept, padding to PAD_SIZE with the content at a random place; boxes,
polygons and masks follow the image."""

import numpy as np
import pytest

from segtrain.config import get_cfg
from segtrain.data.transforms import PadTransform, RandomPadToSize, RandomSquareResize, build_augmentations
from segtrain.data.transforms.build import square_resize_sizes
from segtrain.utils.errors import ConfigError


def _cfg(**square):
    cfg = get_cfg()
    cfg.INPUT.SQUARE_RESIZE.ENABLED = True
    cfg.INPUT.RANDOM_FLIP = "none"
    for k, v in square.items():
        cfg.INPUT.SQUARE_RESIZE[k] = v
    return cfg


def test_official_sizes():
    # get_random_resize_scales(1008, min_size=480, rounded=False): 480, 512, ..., 992
    sizes = square_resize_sizes(_cfg().INPUT.SQUARE_RESIZE)
    assert sizes[0] == 480 and sizes[-1] == 992 and len(sizes) == 17
    assert square_resize_sizes(_cfg(MIN_SIZE=470, MAX_SIZE=512).INPUT.SQUARE_RESIZE) == [480, 512]


def test_resize_and_pad_move_boxes_and_masks_with_the_image():
    np.random.seed(3)
    image = np.zeros((30, 60, 3), np.uint8)
    image[10:20, 20:40] = 255
    mask = image[..., 0] > 0
    augs = build_augmentations(_cfg(MIN_SIZE=32, MAX_SIZE=64, STEP=32, PAD_SIZE=80, PAD_VALUE=7.0), is_train=True)
    assert [type(a) for a in augs] == [RandomSquareResize, RandomPadToSize]
    img, tfms = image, []
    for aug in augs:
        t = aug.get_transform(img)
        img = t.apply_image(img)
        tfms.append(t)
    assert img.shape == (80, 80, 3)
    resize, pad = tfms
    side = resize.new_h
    assert resize.new_w == side and side in (32, 64)
    assert pad.pad_top + pad.pad_bottom == 80 - side and pad.pad_left + pad.pad_right == 80 - side
    m = mask
    for t in tfms:
        m = t.apply_segmentation(m)
    ys, xs = np.nonzero(m)
    corners = np.array([[20.0, 10.0], [40.0, 20.0]])
    for t in tfms:
        corners = t.apply_coords(corners)
    # the box of the moved mask is the moved box (to a pixel of nearest-neighbour rounding)
    assert abs(xs.min() - corners[0, 0]) <= 1 and abs(xs.max() + 1 - corners[1, 0]) <= 1
    assert abs(ys.min() - corners[0, 1]) <= 1 and abs(ys.max() + 1 - corners[1, 1]) <= 1
    assert (img[: pad.pad_top] == 7).all() and (img[:, : pad.pad_left] == 7).all()


def test_placement_is_random_and_test_time_is_one_square_resize():
    np.random.seed(0)
    aug = RandomPadToSize(10)
    offsets = {(t.pad_top, t.pad_left) for t in (aug.get_transform(np.zeros((4, 6))) for _ in range(50))}
    assert len(offsets) > 10
    test = build_augmentations(_cfg(MAX_SIZE=96), is_train=False)
    t = test[0].get_transform(np.zeros((30, 60, 3), np.uint8))
    assert (t.new_h, t.new_w) == (96, 96)


def test_pad_transform_top_left():
    t = PadTransform(1, 2, 0.0, pad_top=3, pad_left=4)
    assert t.apply_image(np.ones((2, 2))).shape == (6, 8)
    assert t.output_size(2, 2) == (6, 8)
    assert t.apply_coords(np.array([[1.0, 1.0]])).tolist() == [[5.0, 4.0]]


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"STEP": 0}, "STEP"),
        ({"MIN_SIZE": 600, "MAX_SIZE": 500}, "MIN_SIZE"),
        ({"PAD_SIZE": 512}, "PAD_SIZE 512 is below MAX_SIZE 1008"),
    ],
)
def test_bad_settings_are_one_line_errors(settings, match):
    with pytest.raises(ConfigError, match=match):
        build_augmentations(_cfg(**settings), is_train=True)


def test_square_resize_and_lsj_exclusive():
    cfg = _cfg()
    cfg.INPUT.LSJ.ENABLED = True
    with pytest.raises(ConfigError, match="choose one resize"):
        build_augmentations(cfg, is_train=True)
