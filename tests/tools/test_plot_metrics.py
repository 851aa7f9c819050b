"""tools/plot_metrics.py: a PNG grid from a synthetic metrics.json; one-line errors."""

import importlib.util
import json
import os

import cv2
import numpy as np
import pytest

_TOOL = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "plot_metrics.py")


def _load_tool():
    spec = importlib.util.spec_from_file_location("plot_metrics_tool", _TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _write_metrics(path, n=40):
    rng = np.random.default_rng(0)
    with open(path, "w") as f:
        for it in range(0, n * 20, 20):
            rec = {
                "iteration": it,
                "core_loss": 5.0 / (1 + it / 100),
                "lr": 1e-4,
                "time": 0.1,
                "loss_ce": float(rng.random()),
                "loss_mask": float(rng.random()),
                "name": "skip-me",
            }
            rec.update({f"loss_ce_{i}": float(rng.random()) for i in range(9)})
            if it % 200 == 0:
                rec.update({"segm/AP": it / 10, "segm/AP-circle": it / 9, "segm/AP-square": it / 11})
            f.write(json.dumps(rec) + "\n")
        f.write('{"iteration": 99')  # a run killed mid-write


def test_plot_metrics_writes_png(tmp_path):
    tool = _load_tool()
    metrics = tmp_path / "metrics.json"
    _write_metrics(metrics)
    out = tmp_path / "plots" / "m.png"
    assert tool.main([str(metrics), "--output", str(out)]) == 0
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100


def test_grouping_puts_aux_copies_with_their_main_key():
    tool = _load_tool()
    groups = tool.group_keys(
        [
            "core_loss",
            "loss_ce",
            "loss_ce_0",
            "loss_ce_8",
            "loss_mask_aux_1",
            "loss_mask",
            "AP50",
            "segm/AP-a",
            "segm/AP-b",
            "lr",
        ]
    )
    assert list(groups)[0] == "core_loss"
    assert groups["loss_ce"] == ["loss_ce", "loss_ce_0", "loss_ce_8"]
    assert groups["loss_mask"] == ["loss_mask", "loss_mask_aux_1"]
    assert groups["segm/AP-<class>"] == ["segm/AP-a", "segm/AP-b"]
    assert groups["AP50"] == ["AP50"]


def test_evaluation_variants_share_their_tasks_subplot():
    """video_box/J&F (the box-prompted evaluation) is drawn with video/J&F; a lone variant, and
    train/val prefixes, are not variants."""
    tool = _load_tool()
    groups = tool.group_keys(
        [
            "video/J&F",
            "video_box/J&F",
            "video_point/J&F",
            "video/J",
            "video_box/J",
            "solo_x/AP",
            "train/loss_iou",
            "val/loss_iou",
            "segm/AP",
            "bbox/AP",
        ]
    )
    assert groups["video/J&F"] == ["video/J&F", "video_box/J&F", "video_point/J&F"]
    assert groups["video/J"] == ["video/J", "video_box/J"]
    assert groups["solo_x/AP"] == ["solo_x/AP"] and groups["segm/AP"] == ["segm/AP"]
    assert groups["loss_iou"] == ["train/loss_iou", "val/loss_iou"]


def test_read_metrics_skips_non_numeric(tmp_path):
    tool = _load_tool()
    metrics = tmp_path / "metrics.json"
    _write_metrics(metrics, n=3)
    records, x_key = tool.read_metrics(str(metrics))
    assert x_key == "iteration" and len(records) == 3
    assert all("name" not in r for r in records)


@pytest.mark.parametrize(
    "content,expect",
    [
        (None, "not found"),
        ("", "empty"),
        ('{"iteration": 1, "loss": 2}\nnot json\n{"iteration": 2}\n', ":2: not a JSON object"),
        ('{"iteration": 1, "name": "x"}\n', "no numeric metrics"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, capsys, content, expect):
    tool = _load_tool()
    path = tmp_path / "metrics.json"
    if content is not None:
        path.write_text(content)
    assert tool.main([str(path), "--output", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert expect in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_trends_prints_table_and_exit_code(tmp_path, capsys):
    tool = _load_tool()
    metrics = tmp_path / "metrics.json"
    _write_metrics(metrics)  # core_loss falls; loss_ce, loss_mask, loss_ce_i are noise
    rc = tool.main([str(metrics), "--trends"])
    out = capsys.readouterr().out
    rows = {ln.split()[0]: ln for ln in out.splitlines()[1:] if ln and not ln.startswith("did not")}
    assert "core_loss" in rows and not rows["core_loss"].endswith("UP")
    assert "lr" not in rows and "segm/AP" not in rows
    rising = [k for k, ln in rows.items() if ln.endswith("UP")]
    assert rc == (1 if rising else 0)
    assert not (tmp_path / "metrics.png").exists()  # --trends does not plot
    # only the selected keys; a falling one gives exit code 0
    assert tool.main([str(metrics), "--trends", "--keys", "^core_loss$"]) == 0
    assert tool.main([str(metrics), "--trends", "--keys", "("]) == 2
    assert "not a valid regular expression" in capsys.readouterr().err


def test_read_metrics_keeps_the_latest_history(tmp_path):
    """metrics.json is appended to: a resumed run repeats the iterations after its checkpoint,
    a new run in the same folder starts again at 0. Only the latest history is read."""
    tool = _load_tool()
    path = tmp_path / "metrics.json"
    first = [{"iteration": i, "loss_a": 1.0} for i in (1, 3, 5, 7, 9)]
    resumed = [{"iteration": i, "loss_a": 2.0} for i in (5, 7, 9, 11)]  # resumed from a checkpoint at 4
    path.write_text("".join(json.dumps(r) + "\n" for r in first + resumed))
    records, x_key = tool.read_metrics(str(path))
    assert x_key == "iteration"
    assert [(r["iteration"], r["loss_a"]) for r in records] == [(1, 1), (3, 1), (5, 2), (7, 2), (9, 2), (11, 2)]
    again = [{"iteration": i, "loss_a": 3.0} for i in (1, 3)]  # a new run in the same folder
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in again))
    records, _ = tool.read_metrics(str(path))
    assert [(r["iteration"], r["loss_a"]) for r in records] == [(1, 3), (3, 3)]
