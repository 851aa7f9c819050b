"""Mask format conversions and BoxMode."""

import numpy as np
import pytest
import torch

from segtrain.structures import (
    BoxMode,
    bitmask_to_rle,
    mask_to_box,
    masks_to_boxes,
    polygons_to_bitmask,
    rle_to_bitmask,
    segmentation_to_bitmask,
)


def _random_mask(seed, h=13, w=17):
    return np.random.default_rng(seed).random((h, w)) > 0.6


def test_polygon_rasterization():
    m = polygons_to_bitmask([[2, 1, 6, 1, 6, 4, 2, 4]], 8, 10)
    assert m.dtype == bool and m.shape == (8, 10)
    expected = np.zeros((8, 10), bool)
    expected[1:4, 2:6] = True  # pixel (i, j) covers [j, j+1] x [i, i+1]
    assert np.array_equal(m, expected)
    two = polygons_to_bitmask([[0, 0, 2, 0, 2, 2, 0, 2], [5, 5, 7, 5, 7, 7, 5, 7]], 8, 10)
    assert two.sum() == 8
    # parts outside the image are clipped
    assert polygons_to_bitmask([[-5, -5, 4, -5, 4, 3, -5, 3]], 8, 10).sum() == 12
    assert polygons_to_bitmask([], 4, 4).sum() == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rle_round_trip_compressed_and_uncompressed(seed):
    m = _random_mask(seed)
    rle = bitmask_to_rle(m)
    assert isinstance(rle["counts"], str) and rle["size"] == [13, 17]
    assert np.array_equal(rle_to_bitmask(rle), m)
    assert np.array_equal(rle_to_bitmask({"size": rle["size"], "counts": rle["counts"].encode()}), m)
    # uncompressed: column-major run lengths starting with zeros
    flat = m.T.reshape(-1)
    counts, cur, n = [], False, 0
    for v in flat:
        if v != cur:
            counts.append(n)
            cur, n = v, 0
        n += 1
    counts.append(n)
    assert np.array_equal(rle_to_bitmask({"size": [13, 17], "counts": counts}), m)
    assert np.array_equal(bitmask_to_rle(torch.from_numpy(m))["counts"], rle["counts"])


def test_segmentation_to_bitmask_checks_rle_size():
    rle = bitmask_to_rle(_random_mask(3))
    assert segmentation_to_bitmask(rle, 13, 17).shape == (13, 17)
    with pytest.raises(ValueError, match=r"\[13, 17\].*\[12, 17\]"):
        segmentation_to_bitmask(rle, 12, 17)


def test_mask_boxes():
    masks = torch.zeros(3, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 5, 7] = True
    boxes = masks_to_boxes(masks)
    assert boxes.dtype == torch.float32
    assert boxes.tolist() == [[2, 1, 5, 3], [7, 5, 8, 6], [0, 0, 0, 0]]
    assert mask_to_box(masks[0].numpy()) == [2, 1, 5, 3]
    assert masks_to_boxes(torch.zeros(0, 4, 4)).shape == (0, 4)


def test_box_mode_convert():
    xywh = [1.0, 2.0, 3.0, 4.0]
    assert BoxMode.convert(xywh, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS) == [1.0, 2.0, 4.0, 6.0]
    arr = np.array([[1, 2, 3, 4], [0, 0, 1, 1]], dtype=np.float32)
    out = BoxMode.convert(arr, BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.tolist() == [[1, 2, 4, 6], [0, 0, 1, 1]]
    t = torch.tensor([[1.0, 2.0, 4.0, 6.0]])
    back = BoxMode.convert(t, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS)
    assert back.tolist() == [[1, 2, 3, 4]] and t.tolist() == [[1, 2, 4, 6]]  # input not modified
    assert BoxMode.convert(xywh, 1, 1) is xywh
    assert int(BoxMode.XYXY_ABS) == 0 and int(BoxMode.XYWH_ABS) == 1


def test_pad_masks_pads_bottom_right_and_rejects_larger_masks():
    from segtrain.structures.masks import pad_masks
    from segtrain.utils.errors import DatasetError

    m = torch.ones(2, 3, 4, dtype=torch.bool)
    out = pad_masks(m, (5, 6))
    assert out.shape == (2, 5, 6) and out.dtype == torch.bool
    assert out[:, :3, :4].all() and not out[:, 3:].any() and not out[:, :, 4:].any()
    with pytest.raises(
        DatasetError, match=r"target 1: masks of size \(3, 4\) do not fit the padded batch size \(2, 6\)"
    ):
        pad_masks(m, (2, 6), what="target 1: masks")
