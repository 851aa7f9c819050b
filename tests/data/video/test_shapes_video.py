"""The generated shapes_video dataset: deterministic, parameters in the folder name, annotations
equal to the visible pixels, and objects that really move, occlude, enter and leave."""

import os

import cv2
import numpy as np

from segtrain.config import get_cfg
from segtrain.data import DatasetCatalog, MetadataCatalog
from segtrain.data.datasets.shapes_video import (
    ensure_shapes_video,
    register_shapes_video,
    register_shapes_video_from_cfg,
    render_shapes_video,
)
from segtrain.data.datasets.ytvis import load_ytvis_json
from segtrain.evaluation.video_evaluation import video_gt_masks


def _files(folder):
    out = {}
    for dirpath, _, names in os.walk(folder):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = f.read()
    return out


def test_generation_is_deterministic(tmp_path):
    a = ensure_shapes_video(str(tmp_path / "a"), "train", 3, 4, 48)
    b = ensure_shapes_video(str(tmp_path / "b"), "train", 3, 4, 48)
    assert a.endswith(os.path.join("shapes_video", "train_n3_f4_s48"))
    fa, fb = _files(a), _files(b)
    assert len(fa) == 3 * 4 + 1 and fa == fb
    assert not [p for p in os.listdir(os.path.dirname(a)) if ".tmp-" in p]  # no temp folder left
    v = ensure_shapes_video(str(tmp_path / "a"), "val", 3, 4, 48)
    assert _files(v)["videos/00000/00000.jpg"] != fa["videos/00000/00000.jpg"]


def test_masks_are_visible_pixels():
    """Masks of one frame are disjoint (visible pixels only) and match the drawn frame."""
    frames, objects = render_shapes_video(np.random.default_rng([1, 2]), 6, 64)
    assert len(frames) == 6 and frames[0].shape == (64, 64, 3) and frames[0].dtype == np.uint8
    stack = np.stack([o["masks"] for o in objects])  # [K, T, H, W]
    assert stack.sum(axis=0).max() <= 1
    # the first object is "inside": visible in frame 0
    assert objects[0]["motion"] == "inside" and objects[0]["masks"][0].any()
    # pixels of a shape differ from the background at the same place in another frame where it is absent
    obj = objects[0]["masks"]
    moved = obj[0] & ~obj[-1] & ~stack[:, -1].any(axis=0)
    if moved.sum() > 20:
        diff = np.abs(frames[0].astype(int) - frames[-1].astype(int)).sum(axis=2)
        assert np.median(diff[moved]) > 20


def test_objects_move_occlude_enter_and_leave(tmp_path):
    d = ensure_shapes_video(str(tmp_path), "val", 12, 12, 96)
    videos = load_ytvis_json(os.path.join(d, "annotations.json"), d)
    assert len(videos) == 12
    enters = leaves = occluded = moved = 0
    for v in videos:
        assert v["length"] == 12 and len(v["file_names"]) == 12
        ids, gt = video_gt_masks(v)  # [T, N, H, W]
        present = gt.reshape(12, len(ids), -1).any(axis=2)  # [T, N]
        assert present[0].any(), "every video shows an object in frame 0"
        for n in range(len(ids)):
            ts = np.flatnonzero(present[:, n])
            enters += ts[0] > 0
            leaves += ts[-1] < 11
            area = gt[:, n].reshape(12, -1).sum(axis=1)
            # visible area shrinks while fully in frame: something is in front of it
            occluded += bool(((area[1:] < 0.8 * area[:-1]) & present[1:, n] & present[:-1, n]).any())
            if present[0, n] and present[-1, n]:
                ys, xs = np.nonzero(gt[0, n])
                ye, xe = np.nonzero(gt[-1, n])
                moved += np.hypot(xs.mean() - xe.mean(), ys.mean() - ye.mean()) > 2
    assert enters >= 2 and leaves >= 2 and occluded >= 1 and moved >= 3, (enters, leaves, occluded, moved)
    # JPEG frames decode at the annotated size
    img = cv2.imread(videos[0]["file_names"][0])
    assert img.shape == (96, 96, 3)


def test_registration_from_cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGTRAIN_DATASETS", str(tmp_path))
    cfg = get_cfg()
    sv = cfg.DATASETS.SHAPES_VIDEO
    assert (sv.NUM_TRAIN, sv.NUM_VAL, sv.NUM_FRAMES, sv.IMAGE_SIZE) == (300, 30, 12, 128)
    sv.NUM_TRAIN, sv.NUM_VAL, sv.NUM_FRAMES, sv.IMAGE_SIZE = 2, 2, 3, 40
    try:
        register_shapes_video_from_cfg(cfg)
        meta = MetadataCatalog.get("shapes_video_val")
        assert meta.evaluator_type == "video" and meta.num_frames == 3
        assert meta.json_file == os.path.join(str(tmp_path), "shapes_video", "val_n2_f3_s40", "annotations.json")
        assert not os.path.exists(meta.json_file)  # nothing generated before the first get
        dicts = DatasetCatalog.get("shapes_video_val")
        assert len(dicts) == 2 and dicts[0]["length"] == 3 and os.path.isfile(meta.json_file)
    finally:
        monkeypatch.delenv("SEGTRAIN_DATASETS")
        register_shapes_video()
