"""Hand-made inputs on which segtrain's metrics are compared with the official metric code.

``test_official_parity.py`` scores them with segtrain; the official numbers in
``data/official_parity.json`` were produced once by running the official code on exactly these
inputs, written out in its own file formats (see that test's docstring).
"""

from typing import Any, Dict, List

import numpy as np

# ---------------------------------------------------------------------------- panoptic
# non-contiguous dataset ids, as in COCO panoptic; two things and a stuff category
PANOPTIC_CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 3, "name": "car", "isthing": 1},
    {"id": 7, "name": "sky", "isthing": 0},
]


def _box(seg: np.ndarray, sid: int, y0: int, y1: int, x0: int, x1: int) -> None:
    seg[y0:y1, x0:x1] = sid


def _info(seg: np.ndarray, segments: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """``segments`` with the ``area`` of each in ``seg`` (as a COCO panoptic JSON has it)."""
    return [{**s, "area": int((seg == s["id"]).sum())} for s in segments]


def panoptic_cases() -> List[Dict[str, Any]]:
    """Images of segment-id maps ``int64 [10, 10]`` (0 = void) with their segments_info (dataset
    category ids): ``{"name", "gt", "gt_info", "pred", "pred_info"}``."""
    cases = []

    # two crowd segments of one category (a prediction over the first one), a match, IoU
    # exactly 0.5 (not a match), void
    gt = np.zeros((10, 10), np.int64)
    _box(gt, 1, 0, 4, 0, 4)  # person, 16 px
    _box(gt, 2, 6, 10, 0, 5)  # car crowd, first
    _box(gt, 3, 6, 10, 5, 10)  # car crowd, last
    _box(gt, 4, 0, 4, 5, 10)  # sky, 20 px
    pred = np.zeros((10, 10), np.int64)
    _box(pred, 11, 0, 4, 0, 4)  # the person exactly
    _box(pred, 12, 6, 10, 0, 5)  # a car on the first crowd segment
    _box(pred, 13, 0, 2, 5, 10)  # sky: 10 of its 20 pixels, IoU exactly 0.5
    cases.append(
        {
            "name": "crowd_twice_iou_half",
            "gt": gt,
            "gt_info": _info(
                gt,
                [
                    {"id": 1, "category_id": 1, "iscrowd": 0},
                    {"id": 2, "category_id": 3, "iscrowd": 1},
                    {"id": 3, "category_id": 3, "iscrowd": 1},
                    {"id": 4, "category_id": 7, "iscrowd": 0},
                ],
            ),
            "pred": pred,
            "pred_info": [{"id": 11, "category_id": 1}, {"id": 12, "category_id": 3}, {"id": 13, "category_id": 7}],
        }
    )

    # an image with no annotation: one prediction on void (ignored)
    pred = np.zeros((10, 10), np.int64)
    _box(pred, 5, 2, 6, 2, 6)
    cases.append(
        {
            "name": "no_annotation",
            "gt": np.zeros((10, 10), np.int64),
            "gt_info": [],
            "pred": pred,
            "pred_info": [{"id": 5, "category_id": 3}],
        }
    )

    # ragged segments; a prediction half on void; a GT segment with no pixel left (area 0);
    # a wrong-category prediction; a crowd region of another category under a prediction
    rng = np.random.default_rng(0)
    gt = np.zeros((10, 10), np.int64)
    _box(gt, 1, 0, 5, 0, 5)
    _box(gt, 2, 0, 5, 5, 10)
    _box(gt, 3, 5, 10, 0, 10)
    gt[rng.random((10, 10)) < 0.1] = 0
    _box(gt, 4, 8, 10, 8, 10)
    pred = np.zeros((10, 10), np.int64)
    _box(pred, 1, 0, 6, 0, 4)
    _box(pred, 2, 1, 5, 6, 10)
    _box(pred, 3, 6, 10, 0, 8)
    _box(pred, 4, 8, 10, 8, 10)
    pred[rng.random((10, 10)) < 0.1] = 0
    cases.append(
        {
            "name": "ragged",
            "gt": gt,
            "gt_info": _info(
                gt,
                [
                    {"id": 1, "category_id": 1, "iscrowd": 0},
                    {"id": 2, "category_id": 3, "iscrowd": 0},
                    {"id": 3, "category_id": 7, "iscrowd": 0},
                    {"id": 4, "category_id": 1, "iscrowd": 1},
                    {"id": 9, "category_id": 3, "iscrowd": 0},  # no pixel in the map
                ],
            ),
            "pred": pred,
            "pred_info": [
                {"id": 1, "category_id": 1},
                {"id": 2, "category_id": 1},  # wrong category: not a match
                {"id": 3, "category_id": 7},
                {"id": 4, "category_id": 3},  # on the person crowd region: not excused
            ],
        }
    )
    return cases


# ---------------------------------------------------------------------------- semantic
SEM_SEG_NUM_CLASSES = 4
SEM_SEG_IGNORE = 255


def sem_seg_cases() -> List[Dict[str, np.ndarray]]:
    """Label maps ``int64 [12, 12]``: ``gt`` (255 ignored; class 3 never present) and ``pred``
    (class 2 never predicted, class 3 predicted)."""
    rng = np.random.default_rng(1)
    cases = []
    for _ in range(2):
        gt = rng.integers(0, 3, size=(12, 12))
        gt[rng.random((12, 12)) < 0.15] = SEM_SEG_IGNORE
        pred = np.where(rng.random((12, 12)) < 0.7, gt, rng.integers(0, 4, size=(12, 12)))
        pred[pred == SEM_SEG_IGNORE] = 3
        pred[pred == 2] = 0
        cases.append({"gt": gt, "pred": pred})
    return cases


# ---------------------------------------------------------------------------- DAVIS
def davis_cases() -> List[Dict[str, Any]]:
    """Videos as label maps ``uint8 [T, 16, 16]`` (object ``k`` = pixel value ``k``, every object
    present in frame 0 as DAVIS requires): ``{"name", "gt", "pred"}``."""
    rng = np.random.default_rng(2)
    cases = []

    # two objects; object 2 leaves the view on frames 2-3 and the prediction keeps it on frame 3
    t = 7
    gt = np.zeros((t, 16, 16), np.uint8)
    pred = np.zeros_like(gt)
    for f in range(t):
        gt[f, 2:8, 1 + f : 7 + f] = 1
        if f not in (2, 3):
            gt[f, 10:15, 9:14] = 2
        pred[f, 2 : 8 + (f % 2), 1 + f : 7 + f] = 1
        if f != 2:
            pred[f, 10 + (f % 3) : 15, 9:14] = 2
    noise = rng.random(gt.shape) < 0.03
    pred[noise] = 0
    cases.append({"name": "leaves_the_view", "gt": gt, "pred": pred})

    # one object never predicted after the first frame
    t = 5
    gt = np.zeros((t, 16, 16), np.uint8)
    for f in range(t):
        gt[f, 4:12, 4 + f // 2 : 10 + f // 2] = 1
    pred = np.zeros_like(gt)
    pred[0] = gt[0]
    cases.append({"name": "lost", "gt": gt, "pred": pred})
    return cases


def short_davis_case() -> Dict[str, Any]:
    """A video of 2 frames: the toolkit leaves out its first and last frames, so none is scored."""
    gt = np.zeros((2, 16, 16), np.uint8)
    gt[:, 4:12, 4:12] = 1
    return {"name": "two_frames", "gt": gt, "pred": gt.copy()}


def void_case() -> Dict[str, np.ndarray]:
    """One object over 3 frames with a void band (``void`` bool [3, 16, 16]) that the prediction
    spills into: ``gt``, ``pred`` bool [3, 16, 16]."""
    gt = np.zeros((3, 16, 16), bool)
    gt[:, 4:10, 3:9] = True
    pred = np.zeros_like(gt)
    pred[:, 5:12, 4:12] = True
    void = np.zeros_like(gt)
    void[:, :, 10:13] = True
    return {"gt": gt, "pred": pred, "void": void}
