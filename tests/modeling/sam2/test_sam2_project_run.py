"""The SAM 2 project config through tools/train_net.py on a tiny shapes_video: the trainer
picks the video loaders, logs train/ and val/ loss keys and writes J / F / J&F."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


@pytest.mark.slow
def test_sam2_project_trains_and_reports_jf(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", SEGTRAIN_DATASETS=str(tmp_path / "data"))
    args = [
        sys.executable,
        os.path.join(ROOT, "tools", "train_net.py"),
        "--config-file",
        os.path.join(ROOT, "projects", "sam2", "sam2.1_tiny.yaml"),
        "OUTPUT_DIR",
        str(out),
        "MODEL.DEVICE",
        "cpu",
        "DATALOADER.NUM_WORKERS",
        "0",
        "DATASETS.SHAPES_VIDEO.NUM_TRAIN",
        "4",
        "DATASETS.SHAPES_VIDEO.NUM_VAL",
        "2",
        "DATASETS.SHAPES_VIDEO.NUM_FRAMES",
        "4",
        "DATASETS.SHAPES_VIDEO.IMAGE_SIZE",
        "32",
        "INPUT.VIDEO.IMAGE_SIZE",
        "32",
        "MODEL.SAM2.IMAGE_SIZE",
        "32",
        "INPUT.VIDEO.NUM_FRAMES",
        "2",
        "SOLVER.MAX_ITER",
        "3",
        "SOLVER.WARMUP_ITERS",
        "0",
        "SOLVER.CHECKPOINT_PERIOD",
        "3",
        "TEST.EVAL_PERIOD",
        "0",
        "TEST.VAL_LOSS.NUM_BATCHES",
        "1",
        "TEST.EARLY_STOP.PATIENCE",
        "0",
        "LOG_PERIOD",
        "1",
        "WRITERS.TENSORBOARD",
        "False",
        "MODEL.SAM2.TRAIN.NUM_CORRECTION_POINTS",
        "2",
    ]
    r = subprocess.run(args, capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines() if line.strip()]
    keys = set().union(*records)
    for k in ("total_loss", "loss_mask", "loss_dice", "loss_iou", "loss_class"):
        assert f"train/{k}" in keys and f"val/{k}" in keys, (k, sorted(keys))
    final = json.loads((out / "metrics_final.json").read_text())["results"]["video"]
    assert final["num_videos"] == 2 and 0.0 <= final["J&F"] <= 100.0
    assert (out / "model_final.pth").exists() and (out / "inference" / "video_metrics.json").exists()
