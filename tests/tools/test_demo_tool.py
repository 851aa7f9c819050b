"""tools/demo.py on the tiny config: one PNG per input; one-line errors for bad input."""

import importlib.util
import os

import cv2
import numpy as np
import torch

from segtrain.config import load_config
from segtrain.modeling import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "projects", "m2f", "tiny.yaml")


def _demo():
    spec = importlib.util.spec_from_file_location("segtrain_demo_tool", os.path.join(ROOT, "tools", "demo.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_demo_writes_pngs(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGTRAIN_DATASETS", str(tmp_path / "datasets"))
    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save({"model": build_model(load_config(TINY)).state_dict()}, weights)
    for i, name in enumerate(["a.jpg", "b.png"]):
        img = np.full((70 + 10 * i, 90, 3), 200, np.uint8)
        cv2.circle(img, (40, 35), 15, (0, 0, 255), -1)
        cv2.imwrite(str(tmp_path / name), img)
    out = tmp_path / "vis"
    rc = _demo().main(
        [
            "--config-file",
            TINY,
            "--input",
            str(tmp_path / "*.jpg"),
            str(tmp_path / "b.png"),
            "--output",
            str(out),
            "--confidence-threshold",
            "0.0",
            "MODEL.WEIGHTS",
            str(weights),
        ]
    )
    assert rc == 0
    a = cv2.imread(str(out / "a.png"))
    assert a.shape == (70, 90, 3) and cv2.imread(str(out / "b.png")).shape == (80, 90, 3)


def test_demo_errors_are_one_line(tmp_path, capsys):
    rc = _demo().main(["--config-file", TINY, "--input", str(tmp_path / "missing.jpg"), "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "MODEL.WEIGHTS" in err
    rc = _demo().main(
        [
            "--config-file",
            TINY,
            "--input",
            str(tmp_path / "missing.jpg"),
            "--output",
            str(tmp_path),
            "MODEL.WEIGHTS",
            "w.pth",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "missing.jpg" in err


def test_demo_draws_the_panoptic_map_of_a_panoptic_model(tmp_path, monkeypatch):
    """PANOPTIC_ON: the PNG shows the panoptic segments; the log line counts them."""
    monkeypatch.setenv("SEGTRAIN_DATASETS", str(tmp_path / "datasets"))
    torch.manual_seed(0)
    model = build_model(load_config(TINY))
    head = model.sem_seg_head
    with torch.no_grad():  # every query: class 1 with certainty and a mask over the whole image
        head.predictor.class_embed.weight.zero_()
        head.predictor.class_embed.bias[:] = -10.0
        head.predictor.class_embed.bias[1] = 10.0
        head.pixel_decoder.mask_features.weight.zero_()
        head.pixel_decoder.mask_features.bias.fill_(1.0)
        head.predictor.mask_embed.layers[-1].weight.zero_()
        head.predictor.mask_embed.layers[-1].bias.fill_(0.1)
    weights = tmp_path / "w.pth"
    torch.save({"model": model.state_dict()}, weights)
    img = np.full((64, 64, 3), 200, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    out = tmp_path / "vis"
    rc = _demo().main(
        [
            "--config-file",
            TINY,
            "--input",
            str(tmp_path / "a.png"),
            "--output",
            str(out),
            "MODEL.WEIGHTS",
            str(weights),
            "MODEL.MASK_FORMER.TEST.PANOPTIC_ON",
            "True",
            "MODEL.MASK_FORMER.TEST.INSTANCE_ON",
            "False",
        ]
    )
    assert rc == 0
    drawn = cv2.imread(str(out / "a.png"))
    assert drawn.shape == (64, 64, 3) and (drawn != 200).any(axis=-1).mean() > 0.9  # one segment: the image
