"""Validation loss (val/<key>), training-key prefix (WRITERS.TRAIN_PREFIX), prediction images
(TEST.VIS) and the start-up line that says whether --resume or MODEL.WEIGHTS was used; on the
engine test model (conv + BN + dropout) and dataset."""

import json
import logging
import os
import re
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from segtrain.config import get_cfg
from segtrain.engine import DefaultTrainer
from segtrain.engine.hooks import ValidationLoss, VisualizationHook, loss_mode
from segtrain.structures.instances import Instances
from segtrain.utils.env import seed_all_rng
from segtrain.utils.errors import CheckpointError, ConfigError
from segtrain.utils.imports import import_user_modules

COMPONENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_engine_components.py")
comp = import_user_modules([COMPONENTS])[0]


class NoEvalTrainer(DefaultTrainer):
    """DATASETS.TEST is the engine test dataset, which has no evaluator: evaluation returns {}."""

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        return {}


def _cfg(out, **overrides):
    base = {
        "DATASETS.TEST": (comp.TRAIN_NAME,),
        "TEST.VAL_LOSS.ENABLED": True,
        "TEST.VAL_LOSS.NUM_BATCHES": 2,
        "TEST.EVAL_PERIOD": 4,
    }
    cfg = comp.configure(get_cfg(), out, **{**base, **overrides})
    cfg.freeze()
    return cfg


def _trainer(cfg, resume=False):
    seed_all_rng(cfg.SEED)
    t = NoEvalTrainer(cfg)
    t.resume_or_load(resume=resume)
    return t


def _metrics(out):
    return [json.loads(x) for x in open(os.path.join(out, "metrics.json"))]


def _val_hook(trainer):
    return next(h for h in trainer._hooks if isinstance(h, ValidationLoss))


def _expected_val_loss(model, num_images=4, batch=2):
    """From the eval-mode forward (BN running statistics, no dropout), independently of the hook:
    the mean over batches of mse + 0.5 * l1 between the prediction and the image mean."""
    mapper = comp.EngineTestMapper(None, is_train=False)
    dicts = comp._dicts()[:num_images]
    model.eval()
    values = []
    with torch.no_grad():
        for s in range(0, num_images, batch):
            inputs = [mapper(d) for d in dicts[s : s + batch]]
            pred = torch.stack([o["pred"] for o in model(inputs)])
            target = torch.stack([x["image"].float().mean() / 255.0 for x in inputs])
            mse, l1 = ((pred - target) ** 2).mean(), (pred - target).abs().mean()
            values.append({"mse": float(mse), "l1": float(l1), "core": float(mse + 0.5 * l1)})
    model.train()
    return {k: sum(v[k] for v in values) / len(values) for k in values[0]}


def test_validation_loss_values_and_no_side_effects(tmp_path):
    t = _trainer(_cfg(tmp_path))
    t.train()
    lines = _metrics(tmp_path)
    val = [x for x in lines if "val/total_loss" in x]
    assert [x["iteration"] for x in val] == [3, 7]  # at the evaluation period and after the last iteration
    assert {"val/core_loss", "val/loss_mse", "val/loss_l1", "val/total_loss"} <= set(val[-1])
    assert val[-1]["val/total_loss"] == val[-1]["val/core_loss"]
    model = t.model
    expected = _expected_val_loss(model)
    assert val[-1]["val/core_loss"] == pytest.approx(expected["core"], abs=1e-6)
    assert val[-1]["val/loss_mse"] == pytest.approx(expected["mse"], abs=1e-6)
    assert val[-1]["val/loss_l1"] == pytest.approx(expected["l1"], abs=1e-6)

    # another pass: same numbers; BN statistics, module modes and the RNG streams untouched
    hook = _val_hook(t)
    bn = model.backbone[1]
    buffers = {k: v.clone() for k, v in bn.state_dict().items()}
    rng = torch.get_rng_state()
    np_rng = np.random.get_state()[1].copy()
    again = hook.compute()
    assert again["core_loss"] == pytest.approx(val[-1]["val/core_loss"], abs=1e-7)
    assert all(torch.equal(buffers[k], v) for k, v in bn.state_dict().items())
    assert model.training and bn.training and model.dropout.training
    assert torch.equal(rng, torch.get_rng_state()) and np.array_equal(np_rng, np.random.get_state()[1])


def test_loss_mode_sets_only_bn_and_dropout_to_eval():
    model = comp.EngineTestNet(None).eval()
    with loss_mode(model):
        assert model.training and model.head.training and model.backbone[0].training
        assert not model.backbone[1].training and not model.dropout.training
    assert not model.training and not model.head.training  # restored


def test_validation_loss_needs_a_test_dataset(tmp_path):
    with pytest.raises(ConfigError, match=r"TEST.VAL_LOSS.ENABLED needs .*DATASETS.TEST"):
        NoEvalTrainer.build_val_loss_loader(_cfg(tmp_path, **{"DATASETS.TEST": ()}))


def test_validation_loss_of_a_model_without_losses_is_a_clear_error():
    class EvalOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, batch):
            return [{"pred": self.w}]

    with pytest.raises(ConfigError, match="returned no 'core_loss' in training mode"):
        ValidationLoss(0, [[{"x": 1}]], model=EvalOnly()).compute()


def test_train_prefix_keys_console_and_best_on_val_loss(tmp_path, caplog, monkeypatch):
    cfg = _cfg(
        tmp_path,
        **{
            "WRITERS.TRAIN_PREFIX": "train/",
            "TEST.BEST_CHECKPOINT.METRIC": "val/total_loss",
            "TEST.BEST_CHECKPOINT.MODE": "min",
        },
    )
    monkeypatch.setattr(logging.getLogger("segtrain"), "propagate", True)
    with caplog.at_level(logging.INFO, logger="segtrain"):
        t = _trainer(cfg)
        t.train()
    lines = _metrics(tmp_path)
    keys = set().union(*lines)
    assert {
        "train/core_loss",
        "train/loss_mse",
        "train/loss_l1",
        "train/total_loss",
        "val/total_loss",
        "lr",
        "time",
        "data_time",
    } <= keys
    assert not {"core_loss", "loss_mse", "total_loss"} & keys  # no unprefixed copies
    last = [x for x in lines if "train/total_loss" in x][-1]
    assert last["train/total_loss"] == last["train/core_loss"]
    console = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("eta:") or "iter: " in r.getMessage()
    ]
    assert console and "core_loss: " in console[-1] and "loss_mse: " in console[-1]
    assert "train/" not in console[-1] and "total_loss" not in console[-1]
    assert not any("not found in evaluation results" in r.getMessage() for r in caplog.records)
    best = torch.load(tmp_path / "model_best.pth", weights_only=False)
    vals = {x["iteration"]: x["val/total_loss"] for x in lines if "val/total_loss" in x}
    assert best["best_metric"]["val/total_loss"] == pytest.approx(min(vals.values()))
    assert best["iteration"] == min(vals, key=vals.get)


def test_plot_metrics_groups_train_and_val_copies(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "plot_metrics_tool_vh", os.path.join(os.path.dirname(COMPONENTS), "..", "..", "tools", "plot_metrics.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    groups = tool.group_keys(
        [
            "train/total_loss",
            "val/total_loss",
            "train/loss_ce",
            "train/loss_ce_0",
            "val/loss_ce",
            "val/loss_ce_0",
            "core_loss",
            "val/core_loss",
            "lr",
        ]
    )
    assert list(groups)[:2] == ["core_loss", "total_loss"]
    assert groups["loss_ce"] == ["train/loss_ce", "train/loss_ce_0", "val/loss_ce", "val/loss_ce_0"]
    assert groups["core_loss"] == ["core_loss", "val/core_loss"]
    metrics = tmp_path / "metrics.json"
    with open(metrics, "w") as f:
        for it in range(10):
            rec = {"iteration": it, "train/total_loss": 1.0 / (it + 1), "train/loss_ce": 0.5, "lr": 0.1}
            if it % 5 == 4:
                rec.update({"val/total_loss": 2.0 / (it + 1), "val/loss_ce": 0.7})
            f.write(json.dumps(rec) + "\n")
    assert tool.main([str(metrics), "--output", str(tmp_path / "m.png")]) == 0
    assert cv2.imread(str(tmp_path / "m.png")) is not None


# ---------------------------------------------------------------------------- start-up line
def _startup_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Start-up:")]


def test_start_up_says_resume_or_weights_or_scratch(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("segtrain"), "propagate", True)
    caplog.set_level(logging.INFO, logger="segtrain")
    first_dir = tmp_path / "first"
    first = _trainer(_cfg(first_dir, **{"TEST.VAL_LOSS.ENABLED": False, "SOLVER.MAX_ITER": 4}))
    assert first.start_mode == "scratch" and first.start_iter == 0
    (line,) = _startup_lines(caplog)
    assert "a NEW run from random initialization (no MODEL.WEIGHTS)" in line and "iteration 0 of 4" in line
    first.train()
    final = str(first_dir / "model_final.pth")

    # MODEL.WEIGHTS without --resume: model only, fresh optimizer, iteration 0
    caplog.clear()
    init = _trainer(_cfg(tmp_path / "init", **{"MODEL.WEIGHTS": final, "SOLVER.MAX_ITER": 6}))
    (line,) = _startup_lines(caplog)
    assert init.start_mode == "weights" and init.start_file == final and init.start_iter == 0
    assert f"INITIALIZED the model weights from MODEL.WEIGHTS={final} (model only" in line
    n = len(init.model.state_dict())
    assert f"{n} of the model's {n} tensors loaded; 0 file tensors skipped; 0 left new" in line
    assert "starts at iteration 0 of 6" in line
    assert all(torch.equal(a, b) for a, b in zip(init.model.state_dict().values(), first.model.state_dict().values()))
    assert init.optimizer.state_dict()["state"] == {}

    # --resume with a checkpoint: everything from it; MODEL.WEIGHTS is named as unused
    caplog.clear()
    res = _trainer(_cfg(first_dir, **{"MODEL.WEIGHTS": "/elsewhere/w.pth", "SOLVER.MAX_ITER": 6}), resume=True)
    (line,) = _startup_lines(caplog)
    assert res.start_mode == "resume" and res.start_file == final and res.start_iter == 4
    assert f"RESUMED the run in {first_dir} from {final} (saved after iteration 3)" in line
    assert "MODEL.WEIGHTS=/elsewhere/w.pth is not used" in line and "continues at iteration 4 of 6" in line
    assert res.optimizer.state_dict()["state"] != {}

    # --resume in an empty folder falls back to MODEL.WEIGHTS, and says so
    caplog.clear()
    fall = _trainer(_cfg(tmp_path / "empty", **{"MODEL.WEIGHTS": final}), resume=True)
    (line,) = _startup_lines(caplog)
    assert fall.start_mode == "weights" and fall.start_iter == 0
    assert line.startswith(f"Start-up: --resume found no checkpoint in {tmp_path / 'empty'}, so INITIALIZED")


def test_training_from_weights_of_another_shape_stops_the_start_up(tmp_path, caplog, monkeypatch):
    """MODEL.WEIGHTS for training loads strictly too: a head of another shape is a one-line
    error naming the tensor, unless MODEL.WEIGHTS_NEW_PREFIXES lets it stay new."""
    monkeypatch.setattr(logging.getLogger("segtrain"), "propagate", True)
    caplog.set_level(logging.INFO, logger="segtrain")
    first = _trainer(_cfg(tmp_path / "first", **{"TEST.VAL_LOSS.ENABLED": False}))
    state = {k: v * 2 if v.is_floating_point() else v for k, v in first.model.state_dict().items()}
    name = next(k for k, v in state.items() if v.dim() >= 1)
    state[name] = torch.zeros(tuple(state[name].shape[:-1]) + (state[name].shape[-1] + 1,))
    torch.save({"model": state}, tmp_path / "other_head.pth")
    cfg = _cfg(tmp_path / "ft", **{"MODEL.WEIGHTS": str(tmp_path / "other_head.pth")})
    with pytest.raises(CheckpointError, match=rf"1 of another shape \('{re.escape(name)}' \["):
        _trainer(cfg)
    caplog.clear()
    prefix = name.rsplit(".", 1)[0] + "."
    ft = _trainer(
        _cfg(
            tmp_path / "ft",
            **{"MODEL.WEIGHTS": str(tmp_path / "other_head.pth"), "MODEL.WEIGHTS_NEW_PREFIXES": [prefix]},
        )
    )
    (line,) = _startup_lines(caplog)
    n = len(state)
    assert f"tensors loaded; 0 file tensors skipped; 1 left new (MODEL.WEIGHTS_NEW_PREFIXES, e.g. {name!r})" in line
    assert f"{n - 1} of the model's {n} tensors loaded" in line
    init, loaded = first.model.state_dict(), ft.model.state_dict()
    assert torch.equal(loaded[name], init[name])  # left at its initialization
    assert all(torch.equal(loaded[k], state[k]) for k in state if k != name)


# ---------------------------------------------------------------------------- visualization
class _SquarePredictor(nn.Module):
    """Eval: one instance, a filled square in the top-left quarter, score 0.9, class 1."""

    def __init__(self, keys=("instances",)):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.keys = keys
        self.seen_training = []

    def forward(self, batch):
        self.seen_training.append(self.training)
        outs = []
        for x in batch:
            h, w = x["height"], x["width"]
            m = torch.zeros(1, h, w, dtype=torch.bool)
            m[0, : h // 2, : w // 2] = True
            inst = Instances(
                (h, w),
                pred_masks=m,
                scores=torch.tensor([0.9]),
                pred_classes=torch.tensor([1]),
                pred_boxes=torch.tensor([[0.0, 0.0, w / 2, h / 2]]),
            )
            outs.append({"instances": inst} if "instances" in self.keys else {"other": inst})
        return outs


def _vis_inputs(n=2, h=32, w=40):
    out = []
    for i in range(n):
        img = torch.full((3, h, w), 60, dtype=torch.uint8)
        gt = torch.zeros(1, h, w, dtype=torch.bool)
        gt[0, h // 2 :, w // 2 :] = True  # bottom-right quarter
        out.append(
            {
                "image": img,
                "height": 300,
                "width": 400,
                "image_id": i,
                "instances": Instances((h, w), gt_masks=gt, gt_classes=torch.tensor([0])),
            }
        )
    return out


def test_visualization_hook_writes_gt_and_prediction_panels(tmp_path):
    model = _SquarePredictor().train()
    hook = VisualizationHook(
        5, lambda: _vis_inputs(), str(tmp_path / "vis"), model=model, metadata=SimpleNamespace(thing_classes=["a", "b"])
    )
    hook.trainer = SimpleNamespace(iter=3, max_iter=20, model=model)
    hook.after_step()  # iteration 4 of 20 is not on the period
    assert not (tmp_path / "vis").exists()
    hook.trainer.iter = 4
    hook.after_step()
    path = tmp_path / "vis" / "iter_0000004.png"
    img = cv2.imread(str(path))[:, :, ::-1]
    assert img.shape == (2 * 32, 2 * 40, 3)  # rows: images; columns: ground truth | prediction
    assert model.training and model.seen_training == [False, False]  # eval for drawing, training after
    gt_panel, pred_panel = img[32:, :40].astype(int), img[32:, 40:].astype(int)

    def changed(panel, ys, xs):  # mean colour change from the plain grey image
        return np.abs(panel[ys, xs] - 60).sum(axis=-1).mean()

    top_left, bottom_right = (slice(2, 14), slice(2, 18)), (slice(20, 30), slice(24, 38))
    # ground truth drawn in the bottom-right quarter, the prediction (at the drawn size) top-left
    assert changed(gt_panel, *bottom_right) > 20 and changed(gt_panel, slice(18, 24), slice(2, 10)) < 1
    assert changed(pred_panel, *top_left) > 20 and changed(pred_panel, *bottom_right) < 1
    hook.trainer.iter = 19  # the last iteration is always drawn
    hook.after_step()
    assert sorted(os.listdir(tmp_path / "vis")) == ["iter_0000004.png", "iter_0000019.png"]


def test_visualization_hook_skips_outputs_it_cannot_draw(tmp_path, caplog, monkeypatch):
    model = _SquarePredictor(keys=("other",))
    hook = VisualizationHook(1, _vis_inputs(1), str(tmp_path / "vis"), model=model)
    hook.trainer = SimpleNamespace(iter=0, max_iter=5, model=model)
    monkeypatch.setattr(logging.getLogger("segtrain"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="segtrain"):
        assert hook.write() is None
    assert "no 'instances' or 'sem_seg'" in caplog.text and not (tmp_path / "vis").exists()
