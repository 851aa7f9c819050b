"""tools/inspect_loss.py end to end on the built-in data at tiny sizes: the table names every
component of the criterion (here the video tracker's, whose batch is a BatchedVideoDatapoint)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_inspect_loss_on_the_video_tracker(tmp_path):
    env = dict(os.environ, SEGTRAIN_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "inspect_loss.py"),
        "--config-file",
        os.path.join(ROOT, "projects", "sam2", "sam2.1_tiny.yaml"),
        "DATASETS.SHAPES_VIDEO.NUM_TRAIN",
        "4",
        "DATASETS.SHAPES_VIDEO.NUM_VAL",
        "2",
        "DATASETS.SHAPES_VIDEO.NUM_FRAMES",
        "4",
        "DATASETS.SHAPES_VIDEO.IMAGE_SIZE",
        "64",
        "DATALOADER.NUM_WORKERS",
        "0",
        "SEED",
        "0",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "one batch of 2 clips of 4 frames from shapes_video_train" in text
    for key in ("loss_mask", "loss_dice", "loss_iou", "loss_class", "iou_target_mean", "core_loss"):
        assert f"| {key} " in text, key
