"""tools/demo.py on the tiny config: one PNG per input; one-line errors for bad input; a tiny
SAM 3 image model prompted with text and exemplar boxes."""

import importlib.util
import os

import cv2
import numpy as np
import pytest
import torch

from segtrain.config import load_config
from segtrain.modeling import build_model
from tests.tools.sam3_tiny_sizes import TINY_SAM3 as SAM3_SIZES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "projects", "m2f", "tiny.yaml")
SAM3 = os.path.join(ROOT, "projects", "sam3", "sam3_image.yaml")
TINY_SAM3 = ["MODEL.DEVICE", "cpu"] + SAM3_SIZES


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


@pytest.fixture(scope="module")
def sam3_checkpoint(tmp_path_factory):
    """A training checkpoint (Checkpointer format) of a tiny Sam3Image with seeded weights."""
    from segtrain.checkpoint import Checkpointer

    torch.manual_seed(0)
    model = build_model(load_config(SAM3, TINY_SAM3))
    return Checkpointer(model, str(tmp_path_factory.mktemp("sam3_run"))).save("model_final", iteration=3)


def _sam3_image(path, h=60, w=80):
    img = np.full((h, w, 3), 90, np.uint8)
    cv2.rectangle(img, (10, 12), (40, 44), (0, 0, 230), -1)
    cv2.imwrite(str(path), img)
    return img


def test_demo_prompts_a_sam3_model_with_text(tmp_path, sam3_checkpoint, caplog):
    caplog.set_level("INFO", logger="demo")
    img = _sam3_image(tmp_path / "a.jpg")
    out = tmp_path / "vis"
    argv = ["--config-file", SAM3, "--input", str(tmp_path / "a.jpg"), "--output", str(out), "--text", "red box"]
    rc = _demo().main(argv + ["--confidence-threshold", "0.0", "MODEL.WEIGHTS", sam3_checkpoint] + TINY_SAM3)
    assert rc == 0
    drawn = cv2.imread(str(out / "a.png"))
    assert drawn.shape == img.shape
    assert "8 detections for 'red box'" in caplog.text  # threshold 0: every query of the find
    assert (np.abs(drawn.astype(int) - cv2.imread(str(tmp_path / "a.jpg")).astype(int)).sum(-1) > 30).mean() > 0.05
    # nothing above a threshold of 1: the image comes back as it was read
    rc = _demo().main(argv + ["--confidence-threshold", "1.0", "MODEL.WEIGHTS", sam3_checkpoint] + TINY_SAM3)
    assert rc == 0 and np.array_equal(cv2.imread(str(out / "a.png")), cv2.imread(str(tmp_path / "a.jpg")))


def test_demo_sam3_text_prompts_with_exemplar_boxes(tmp_path, sam3_checkpoint, caplog):
    caplog.set_level("INFO", logger="demo")
    _sam3_image(tmp_path / "b.png")
    out = tmp_path / "vis"
    rc = _demo().main(
        ["--config-file", SAM3, "--input", str(tmp_path / "b.png"), "--output", str(out)]
        + ["--text", "red box", "--text", "a green disc", "--box", "10", "12", "40", "44"]
        + ["--negative-box", "50", "5", "75", "30", "--confidence-threshold", "0.0"]
        + ["MODEL.WEIGHTS", sam3_checkpoint]
        + TINY_SAM3
    )
    assert rc == 0 and cv2.imread(str(out / "b.png")).shape == (60, 80, 3)
    assert "for 'red box'" in caplog.text and "for 'a green disc'" in caplog.text
    # exemplar boxes alone
    rc = _demo().main(
        ["--config-file", SAM3, "--input", str(tmp_path / "b.png"), "--output", str(out)]
        + ["--box", "10", "12", "40", "44", "MODEL.WEIGHTS", sam3_checkpoint]
        + TINY_SAM3
    )
    assert rc == 0 and "for 'exemplar'" in caplog.text


def test_demo_prompt_errors_are_one_line(tmp_path, sam3_checkpoint, capsys):
    _sam3_image(tmp_path / "a.png")
    base = ["--input", str(tmp_path / "a.png"), "--output", str(tmp_path / "vis")]
    cases = [
        (["--config-file", TINY] + base + ["--text", "cat", "MODEL.WEIGHTS", "w.pth"], "takes no prompts"),
        (["--config-file", SAM3] + base + ["MODEL.WEIGHTS", sam3_checkpoint] + TINY_SAM3, "needs a prompt"),
        (
            ["--config-file", SAM3, "--input", str(tmp_path / "nope.jpg"), "--output", str(tmp_path), "--text", "cat"]
            + ["MODEL.WEIGHTS", sam3_checkpoint]
            + TINY_SAM3,
            "nope.jpg",
        ),
        (
            ["--config-file", SAM3]
            + base
            + ["--box", "30", "10", "20", "40", "MODEL.WEIGHTS", sam3_checkpoint]
            + TINY_SAM3,
            "--box 30 10 20 40",
        ),
        (
            ["--config-file", SAM3]
            + base
            + ["--negative-box", "200", "10", "220", "40"]
            + ["MODEL.WEIGHTS", sam3_checkpoint]
            + TINY_SAM3,
            "outside the 80x60 image",
        ),
    ]
    for argv, message in cases:
        rc = _demo().main(argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "\n" not in err and message in err, (message, err)
