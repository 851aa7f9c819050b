"""Checkpointer: round trip, atomic writes, corrupt-file fallback, .pkl weights, key-mismatch
table, retention of periodic checkpoints, resume vs. weights-only load."""

import logging
import os
import pickle

import numpy as np
import pytest
import torch
from torch import nn

import segtrain.checkpoint.checkpointer as ckpt_mod
from segtrain.checkpoint import Checkpointer, PeriodicCheckpointer
from segtrain.config import get_cfg
from segtrain.utils.errors import CheckpointError


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)

    def text(self, level=logging.WARNING):
        return "\n".join(r.getMessage() for r in self.records if r.levelno >= level)


@pytest.fixture
def records():
    h = _Records()
    lg = logging.getLogger("segtrain.checkpoint")
    lg.addHandler(h)
    old = lg.level
    lg.setLevel(logging.DEBUG)
    yield h
    lg.removeHandler(h)
    lg.setLevel(old)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))


def _setup(tmp_path, seed=0):
    model = _model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    return model, opt, sched, Checkpointer(model, str(tmp_path), save_to_disk=True, optimizer=opt, scheduler=sched)


def _train_step(model, opt, sched):
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
    sched.step()


def test_round_trip_with_config_and_iteration(tmp_path):
    model, opt, sched, ck = _setup(tmp_path)
    ck.cfg = get_cfg()
    _train_step(model, opt, sched)
    ck.save("model_0000000", iteration=0)
    assert open(tmp_path / "last_checkpoint").read() == "model_0000000.pth"

    model2, opt2, sched2, ck2 = _setup(tmp_path, seed=1)
    extra = ck2.resume_or_load("", resume=True)
    assert extra["iteration"] == 0
    assert "SOLVER:" in extra["config"]  # the config YAML travels with the checkpoint
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    assert sched2.last_epoch == 1
    assert torch.equal(
        opt2.state_dict()["state"][0]["momentum_buffer"], opt.state_dict()["state"][0]["momentum_buffer"]
    )


def test_crash_mid_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched, ck = _setup(tmp_path)
    ck.save("model_0000004", iteration=4)
    before = (tmp_path / "model_0000004.pth").read_bytes()

    def crashing_save(obj, f):
        f.write(b"PK\x03\x04 partial")  # a few bytes, then the process "dies"
        raise OSError("simulated crash (disk full)")

    monkeypatch.setattr(ckpt_mod.torch, "save", crashing_save)
    _train_step(model, opt, sched)
    with pytest.raises(OSError, match="simulated crash"):
        ck.save("model_0000009", iteration=9)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000004.pth"]  # no temp file left
    assert (tmp_path / "model_0000004.pth").read_bytes() == before
    assert open(tmp_path / "last_checkpoint").read() == "model_0000004.pth"
    # overwriting the same name: a crash leaves the old content
    monkeypatch.setattr(ckpt_mod.torch, "save", crashing_save)
    with pytest.raises(OSError):
        ck.save("model_0000004", iteration=4)
    assert (tmp_path / "model_0000004.pth").read_bytes() == before


def test_truncated_last_checkpoint_falls_back_with_warning(tmp_path, records):
    model, opt, sched, ck = _setup(tmp_path)
    ck.save("model_0000004", iteration=4)
    good = [p.detach().clone() for p in model.parameters()]
    _train_step(model, opt, sched)
    path = ck.save("model_0000009", iteration=9)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])  # killed while copying / disk corruption

    model2, _, _, ck2 = _setup(tmp_path, seed=3)
    extra = ck2.resume_or_load("", resume=True)
    assert extra["iteration"] == 4
    assert all(torch.equal(a, b) for a, b in zip(good, model2.parameters()))
    warnings = [r.getMessage() for r in records.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "model_0000009.pth" in warnings[0] and "\n" not in warnings[0]
    assert "falling back" in warnings[0]


def test_all_checkpoints_corrupt_is_one_line_error(tmp_path):
    _, _, _, ck = _setup(tmp_path)
    ck.save("model_0000004", iteration=4)
    (tmp_path / "model_0000004.pth").write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as e:
        _setup(tmp_path)[3].resume_or_load("", resume=True)
    assert "model_0000004.pth" in str(e.value) and "\n" not in str(e.value)


def test_weights_only_load_leaves_optimizer_and_schedule(tmp_path, records):
    model, opt, sched, ck = _setup(tmp_path / "a")
    _train_step(model, opt, sched)
    path = ck.save("model_final", iteration=99)
    model2, opt2, sched2, ck2 = _setup(tmp_path / "b", seed=5)
    assert ck2.resume_or_load(path, resume=False) == {}
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))
    assert sched2.last_epoch == 0 and not opt2.state_dict()["state"]
    assert "model only" in records.text(logging.INFO)
    with pytest.raises(CheckpointError, match="not found"):
        ck2.resume_or_load(str(tmp_path / "nope.pth"), resume=False)


def test_detectron2_pkl_with_mismatch_table(tmp_path, records):
    model = _model()
    weights = {
        "0.weight": np.full((4, 3), 2.0, dtype=np.float32),
        "0.bias": np.ones(4, dtype=np.float32),
        "1.weight": np.zeros((5, 4), dtype=np.float32),  # wrong shape: skipped
        "extra.weight": np.zeros(1, dtype=np.float32),  # not in the model
    }
    path = tmp_path / "model.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "Detectron2"}, f)
    before = model[1].weight.detach().clone()
    Checkpointer(model, "").load(str(path), checkpointables=[])
    assert torch.equal(model[0].weight, torch.full((4, 3), 2.0))
    assert torch.equal(model[1].weight, before)
    text = records.text()
    for key in ("1.weight", "1.bias", "extra.weight"):
        assert key in text
    assert "shape mismatch" in text and "missing in checkpoint" in text and "unexpected" in text
    assert "2 of the model's 4 tensors keep their initialization" in text


def test_inference_refuses_weights_of_another_model(tmp_path):
    """Half the tensors found is enough for inference (a warning); fewer is a one-line error."""
    src = _model(1)
    half = {k: v for k, v in src.state_dict().items() if k.startswith("0.")}
    torch.save({"model": half}, tmp_path / "half.pth")
    ck = Checkpointer(_model(2))
    ck.load(str(tmp_path / "half.pth"), checkpointables=[])
    assert ck.last_not_loaded == (["1.weight", "1.bias"], 4)
    ck.require_weights_for_inference(str(tmp_path / "half.pth"), "Sequential")
    torch.save({"model": {"0.bias": half["0.bias"], "other.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    ck.load(str(tmp_path / "other.pth"), checkpointables=[])
    with pytest.raises(CheckpointError, match=r"other.pth: 3 of the 4 tensors of the Sequential are not in"):
        ck.require_weights_for_inference(str(tmp_path / "other.pth"), "Sequential")


def test_ddp_prefixed_state_dict_loads(tmp_path):
    src = _model(1)
    torch.save({"model": {f"module.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "w.pth")
    dst = _model(2)
    Checkpointer(dst).load(str(tmp_path / "w.pth"))
    assert all(torch.equal(a, b) for a, b in zip(src.parameters(), dst.parameters()))


def test_periodic_keeps_max_to_keep(tmp_path):
    _, _, _, ck = _setup(tmp_path)
    pc = PeriodicCheckpointer(ck, period=2, max_to_keep=2)
    for it in range(10):
        pc.step(it)
    ck.save("model_best", tag_last=False, iteration=3)
    assert sorted(os.listdir(tmp_path)) == [
        "last_checkpoint",
        "model_0000007.pth",
        "model_0000009.pth",
        "model_best.pth",
    ]
    assert open(tmp_path / "last_checkpoint").read() == "model_0000009.pth"


def test_non_main_process_does_not_write(tmp_path):
    model = _model()
    assert Checkpointer(model, str(tmp_path), save_to_disk=False).save("model_x") is None
    assert os.listdir(tmp_path) == []
