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


def _write_pkl(path, weights):
    with open(path, "wb") as f:
        pickle.dump({"model": weights, "__author__": "Detectron2"}, f)


def test_detectron2_pkl_loads_numpy_arrays(tmp_path, records):
    src = _model(1)
    path = tmp_path / "model.pkl"
    _write_pkl(path, {k: v.numpy() for k, v in src.state_dict().items()})
    dst = _model(2)
    Checkpointer(dst, "").load(str(path), checkpointables=[])
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    assert "4 of the model's 4 tensors loaded; 0 file tensors skipped; 0 left new" in records.text(logging.INFO)


def _mismatched_weights():
    return {
        "0.weight": np.full((4, 3), 2.0, dtype=np.float32),
        "0.bias": np.ones(4, dtype=np.float32),
        "1.weight": np.zeros((5, 4), dtype=np.float32),  # another shape
        "extra.weight": np.zeros(1, dtype=np.float32),  # not in the model
    }  # and "1.bias" is missing


def test_mismatched_weights_are_one_line_error_and_model_untouched(tmp_path):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "model.pkl"
    _write_pkl(path, _mismatched_weights())
    with pytest.raises(CheckpointError) as info:
        Checkpointer(model, "").load(str(path), checkpointables=[])
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "(2 of 4 tensors would load)" in msg
    assert "1 model tensors not in the file ('1.bias')" in msg
    assert "1 of another shape ('1.weight' [5, 4] in the file vs [2, 4])" in msg
    assert "1 file tensors the model does not have ('extra.weight')" in msg
    assert "MODEL.WEIGHTS_NEW_PREFIXES ['1.bias', '1.weight']" in msg
    assert "MODEL.WEIGHTS_IGNORE_PREFIXES ['extra.weight']" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_prefixes_allow_a_partial_load_and_the_summary_counts_it(tmp_path, records):
    model = _model()
    before = model[1].weight.detach().clone()
    path = tmp_path / "model.pkl"
    _write_pkl(path, _mismatched_weights())
    ck = Checkpointer(model, "", new_prefixes=["1."], ignore_prefixes=["extra."])
    ck.load(str(path), checkpointables=[])
    assert torch.equal(model[0].weight, torch.full((4, 3), 2.0))
    assert torch.equal(model[1].weight, before)
    assert ck.last_match.loaded == ["0.weight", "0.bias"]
    assert sorted(ck.last_match.new) == ["1.bias", "1.weight"] and ck.last_match.ignored == ["extra.weight"]
    summary = "2 of the model's 4 tensors loaded; 1 file tensors skipped (1 under MODEL.WEIGHTS_IGNORE_PREFIXES)"
    assert summary in records.text(logging.INFO) and "2 left new" in records.text(logging.INFO)


def test_only_the_listed_prefixes_may_stay_new(tmp_path):
    """A new-prefix for the second layer does not excuse an unexpected tensor."""
    path = tmp_path / "model.pkl"
    _write_pkl(path, _mismatched_weights())
    with pytest.raises(CheckpointError, match=r"1 file tensors the model does not have \('extra.weight'\)"):
        Checkpointer(_model(), "", new_prefixes=["1."]).load(str(path), checkpointables=[])


class _Converting(nn.Sequential):
    """Reads files whose names start with ``detector.`` and sets ``tracker.*`` aside."""

    def convert_weights(self, state):
        aside = [k for k in state if k.startswith("tracker.")]
        own = {k.removeprefix("detector."): v for k, v in state.items() if k not in aside}
        return own, aside


def test_model_convert_weights_sets_tensors_aside(tmp_path, records):
    torch.manual_seed(1)
    src = _Converting(nn.Linear(3, 4), nn.Linear(4, 2))
    state = {f"detector.{k}": v for k, v in src.state_dict().items()}
    state["tracker.x"] = torch.zeros(2)
    torch.save(state, tmp_path / "released.pt")
    torch.manual_seed(2)
    dst = _Converting(nn.Linear(3, 4), nn.Linear(4, 2))
    Checkpointer(dst).load(str(tmp_path / "released.pt"), checkpointables=[])
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    text = records.text(logging.INFO)
    assert "4 of the model's 4 tensors loaded; 1 file tensors skipped (1 set aside by the model" in text
    # its own checkpoints (names already the model's) load through the same conversion
    Checkpointer(dst, str(tmp_path), save_to_disk=True).save("own")
    Checkpointer(dst).load(str(tmp_path / "own.pth"), checkpointables=[])


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
