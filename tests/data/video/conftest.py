"""A factory writing tiny YouTube-VIS-style datasets (real JPEG frames + JSON) for video data tests."""

import copy
import json

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

VH, VW = 24, 32  # frame size of the tiny videos


def rle(mask, compressed=True):
    """COCO RLE of a bool [H, W] mask; ``compressed=False`` gives int run lengths."""
    if compressed:
        r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": list(mask.shape), "counts": r["counts"].decode("ascii")}
    flat = mask.T.reshape(-1)  # column-major, starting with a run of zeros
    runs, cur, n = [], False, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = bool(v), 0
        n += 1
    runs.append(n)
    return {"size": list(mask.shape), "counts": runs}


def box_mask(y0, y1, x0, x1):
    m = np.zeros((VH, VW), bool)
    m[y0:y1, x0:x1] = True
    return m


def base_ytvis():
    """Two videos of 24x32: video 1 has 3 frames, video 2 has 4. Categories 4 ("a") and 8 ("b").
    Track 11 (video 1): compressed RLE, polygon, null. Track 12 (video 1): null, uncompressed RLE,
    compressed RLE (appears in frame 1). Track 21 (video 2): a square moving right by 4 px/frame."""
    poly = [[2.0, 2.0, 12.0, 2.0, 12.0, 10.0, 2.0, 10.0]]
    return {
        "videos": [
            {"id": 1, "file_names": [f"v1/{t}.jpg" for t in range(3)], "height": VH, "width": VW, "length": 3},
            {"id": 2, "file_names": [f"v2/{t}.jpg" for t in range(4)], "height": VH, "width": VW, "length": 4},
        ],
        "annotations": [
            {"id": 11, "video_id": 1, "category_id": 8, "segmentations": [rle(box_mask(0, 10, 0, 8)), poly, None]},
            {
                "id": 12,
                "video_id": 1,
                "category_id": 4,
                "segmentations": [None, rle(box_mask(12, 20, 16, 30), compressed=False), rle(box_mask(14, 22, 18, 30))],
            },
            {
                "id": 21,
                "video_id": 2,
                "category_id": 4,
                "segmentations": [rle(box_mask(4, 14, 2 + 4 * t, 12 + 4 * t)) for t in range(4)],
            },
        ],
        "categories": [{"id": 8, "name": "b"}, {"id": 4, "name": "a"}],
    }


@pytest.fixture
def ytvis_factory(tmp_path):
    """``make(data=None, edit=None, write_frames=True) -> (json_file, image_root)``; ``edit(data)``
    may change a deep copy of ``base_ytvis()`` first. Frames are random-pixel JPEGs whose left
    half is dark and right half bright (so a horizontal flip is visible)."""
    counter = {"n": 0}

    def make(data=None, edit=None, write_frames=True):
        counter["n"] += 1
        root = tmp_path / f"ytvis{counter['n']}"
        root.mkdir()
        data = copy.deepcopy(data if data is not None else base_ytvis())
        if edit is not None:
            edit(data)
        rng = np.random.default_rng(0)
        if write_frames:
            for v in data.get("videos", []):
                for name in v.get("file_names", []):
                    path = root / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    pix = rng.integers(0, 60, size=(VH, VW, 3), dtype=np.uint8)
                    pix[:, VW // 2 :] += 180
                    cv2.imwrite(str(path), pix)
        json_file = root / "ytvis.json"
        json_file.write_text(json.dumps(data))
        return str(json_file), str(root)

    return make


@pytest.fixture
def ytvis_tools():
    import types

    return types.SimpleNamespace(rle=rle, box_mask=box_mask, base_ytvis=base_ytvis, VH=VH, VW=VW)
