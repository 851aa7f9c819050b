"""tools/export_vos_folder.py writes the built-in shapes videos in the DAVIS layout, and
``register_vos_folder`` reads them back as the same objects."""

import importlib.util
import os

import numpy as np

from segtrain.data import DatasetCatalog
from segtrain.data.datasets import load_vos_folder
from segtrain.data.datasets.shapes_video import register_shapes_video
from segtrain.evaluation.video_evaluation import video_gt_masks

_TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "export_vos_folder.py")
_spec = importlib.util.spec_from_file_location("export_vos_folder", _TOOL)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)

SIZES = ["DATASETS.SHAPES_VIDEO.NUM_VAL", "3", "DATASETS.SHAPES_VIDEO.NUM_FRAMES", "5"]
SIZES += ["DATASETS.SHAPES_VIDEO.IMAGE_SIZE", "48"]


def test_round_trip_through_the_davis_layout(tmp_datasets_root, tmp_path):
    out = tmp_path / "davis"
    config = os.path.join(os.path.dirname(_TOOL), "..", "projects", "sam2", "sam2.1_tiny.yaml")
    argv = ["--dataset", "shapes_video_val", "--output", str(out), "--config-file", config] + SIZES
    try:
        assert tool.main(argv) == 0
        originals = DatasetCatalog.get("shapes_video_val")
    finally:
        register_shapes_video()
    read = load_vos_folder(str(out / "JPEGImages"), str(out / "Annotations"))
    assert [d["video_id"] for d in read] == sorted(str(d["video_id"]) for d in originals)
    by_id = {str(d["video_id"]): d for d in originals}
    for video in read:
        original = by_id[video["video_id"]]
        assert video["length"] == 5 and (video["height"], video["width"]) == (48, 48)
        _, masks = video_gt_masks(original)  # [T, N, H, W]
        painted = np.zeros((5, 48, 48), np.int64)
        for n in range(masks.shape[1]):
            painted[masks[:, n]] = n + 1
        ids, back = video_gt_masks(video)
        assert ids == sorted(set(np.unique(painted).tolist()) - {0})
        for n, k in enumerate(ids):
            assert np.array_equal(back[:, n], painted == k)
