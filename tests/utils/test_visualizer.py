"""Visualizer: PNG of the right size whose masked pixels changed colour."""

import cv2
import numpy as np
import pytest
import torch

from segtrain.data.visualize import draw_dataset_dict
from segtrain.structures import Instances
from segtrain.utils.visualizer import PALETTE, Visualizer, class_color


class _Meta:
    thing_classes = ["circle", "square"]
    thing_colors = [(255, 0, 0), (0, 0, 255)]


# Scenes are drawn S times larger than their layout needs: label boxes have a fixed font size whose
# width differs between OpenCV releases (4.x, 5.0 and 5.1 all differ), and at S = 1 some releases put
# a label over a pixel these tests read.
S = 4


def _image(h=48, w=64):
    return np.full((h, w, 3), 100, dtype=np.uint8)


def test_draw_instance_predictions_writes_png(tmp_path):
    h, w = 48 * S, 64 * S
    masks = torch.zeros(3, h, w, dtype=torch.bool)
    masks[0, 20 * S : 40 * S, 5 * S : 25 * S] = True
    masks[1, 15 * S : 30 * S, 40 * S : 60 * S] = True  # its label sits above it
    masks[2, 30 * S : 45 * S, 45 * S : 60 * S] = True  # below the score threshold: not drawn
    boxes = torch.tensor([[5, 20, 25, 40], [40, 15, 60, 30], [45, 30, 60, 45]], dtype=torch.float32) * S
    inst = Instances(
        (h, w),
        pred_masks=masks,
        pred_boxes=boxes,
        scores=torch.tensor([0.9, 0.8, 0.2]),
        pred_classes=torch.tensor([0, 1, 1]),
    )
    vis = Visualizer(_image(h, w), _Meta(), alpha=0.5)
    out = vis.draw_instance_predictions(inst, score_threshold=0.5)
    path = tmp_path / "sub" / "pred.png"
    vis.save(str(path))
    png = cv2.imread(str(path))
    assert png.shape == (h, w, 3)
    assert np.array_equal(png[..., ::-1], out)  # saved as BGR, returned as RGB
    # mask interiors (away from contours, boxes and labels) blend towards the class colour
    assert tuple(out[32 * S, 15 * S]) == (178, 50, 50)  # 0.5 * 100 + 0.5 * (255, 0, 0)
    assert tuple(out[25 * S, 50 * S]) == (50, 50, 178)
    assert tuple(out[40 * S, 52 * S]) == (100, 100, 100)  # low score: untouched
    assert tuple(out[2 * S, 2 * S]) == (100, 100, 100)  # background untouched


def test_draw_dataset_dict_polygon_and_rle(tmp_path):
    import pycocotools.mask as mask_util

    h, w = 40 * S, 50 * S
    rle_mask = np.zeros((h, w), dtype=np.uint8, order="F")
    rle_mask[25 * S : 38 * S, 30 * S : 45 * S] = 1
    rle = mask_util.encode(rle_mask)
    rle["counts"] = rle["counts"].decode()
    d = {
        "file_name": "x.png",
        "height": h,
        "width": w,
        "image_id": 1,
        "annotations": [
            {
                "bbox": [2 * S, 2 * S, 20 * S, 15 * S],
                "bbox_mode": 1,
                "category_id": 0,
                "iscrowd": 0,
                "segmentation": [[v * S for v in (2, 2, 22, 2, 22, 17, 2, 17)]],
            },
            {
                "bbox": [30 * S, 25 * S, 15 * S, 13 * S],
                "bbox_mode": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentation": rle,
            },
        ],
    }
    out = draw_dataset_dict(Visualizer(_image(h, w), _Meta()), d)
    assert out.shape == (h, w, 3)
    assert tuple(out[12 * S, 15 * S]) == (178, 50, 50)
    assert tuple(out[33 * S, 38 * S]) == (50, 50, 178)
    assert tuple(out[30 * S, 10 * S]) == (100, 100, 100)


def test_masks_without_metadata_use_palette_and_wrong_size_errors():
    h, w = 20, 20
    m = np.zeros((1, h, w), bool)
    m[0, 5:15, 5:15] = True
    vis = Visualizer(torch.full((3, h, w), 100, dtype=torch.uint8), alpha=1.0)  # CHW tensor input
    out = vis.overlay_instances(masks=m, class_ids=[3])
    assert tuple(out[10, 10]) == PALETTE[3] == class_color(3)
    with pytest.raises(ValueError, match="masks are 10x10 but the image is 20x20"):
        vis.overlay_instances(masks=np.ones((1, 10, 10), bool))


def test_draw_sem_seg():
    sem = np.full((64, 64), 255, dtype=np.uint8)
    sem[:32] = 1
    out = Visualizer(_image(64, 64), _Meta(), alpha=1.0).draw_sem_seg(sem)
    assert tuple(out[25, 10]) == (0, 0, 255)
    assert tuple(out[50, 10]) == (100, 100, 100)


def test_draw_panoptic_seg_and_stuff_class_names():
    """Each segment in its class colour (contiguous ids over stuff_classes, things and stuff);
    void and segments without pixels are left alone."""
    seg = np.zeros((40 * S, 40 * S), np.int64)
    seg[: 20 * S] = 7
    seg[20 * S :, : 10 * S] = 300

    class meta:  # noqa: N801  (a metadata stand-in)
        stuff_classes = ["cat", "grass"]
        thing_classes = ["cat"]

    vis = Visualizer(_image(40 * S, 40 * S), meta, alpha=1.0)
    assert vis.class_name(1) == "grass"
    out = vis.draw_panoptic_seg(
        seg, [{"id": 7, "category_id": 1}, {"id": 300, "category_id": 0}, {"id": 9, "category_id": 0}]
    )

    def mode(region):  # the most frequent colour (labels and outlines cover a few pixels)
        colors, counts = np.unique(region.reshape(-1, 3), axis=0, return_counts=True)
        return tuple(int(c) for c in colors[counts.argmax()])

    assert mode(out[: 20 * S]) == class_color(1, meta) and mode(out[20 * S :, : 10 * S]) == class_color(0, meta)
    assert mode(out[20 * S :, 10 * S :]) == (100, 100, 100)  # void


@pytest.mark.parametrize("source", ["annotation", "dataloader"])
def test_visualize_data_tool_on_small_shapes(tmp_path, tmp_datasets_root, source):
    import importlib.util
    import os

    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(
        "DATASETS:\n  SHAPES:\n    NUM_TRAIN: 3\n    NUM_VAL: 2\n    IMAGE_SIZE: 64\n"
        "SOLVER:\n  IMS_PER_BATCH: 2\nSEED: 0\n"
    )
    tool_path = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "visualize_data.py")
    spec = importlib.util.spec_from_file_location("visualize_data_tool", tool_path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "vis"
    rc = tool.main(["--config-file", str(cfg_file), "--source", source, "--output-dir", str(out), "--num", "3"])
    assert rc == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 3
    img = cv2.imread(str(pngs[0]))
    assert img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) > 0


def test_visualize_data_tool_bad_config_is_one_line(tmp_path, capsys):
    import importlib.util
    import os

    tool_path = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "visualize_data.py")
    spec = importlib.util.spec_from_file_location("visualize_data_tool", tool_path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--config-file", str(tmp_path / "missing.yaml"), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.yaml" in err and len(err.splitlines()) == 1


def test_visualize_data_tool_reads_a_model_config_in_a_fresh_process(tmp_path):
    """As a user runs it: a new interpreter, a project config with model keys."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, SEGTRAIN_DATASETS=str(tmp_path / "data"), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        os.path.join(root, "tools", "visualize_data.py"),
        "--config-file",
        os.path.join(root, "projects", "m2f", "tiny.yaml"),
        "--output-dir",
        str(tmp_path / "vis"),
        "--num",
        "1",
        "DATASETS.SHAPES.NUM_TRAIN",
        "2",
        "DATASETS.SHAPES.NUM_VAL",
        "1",
        "DATASETS.SHAPES.IMAGE_SIZE",
        "64",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((tmp_path / "vis").glob("*.png"))) == 1
