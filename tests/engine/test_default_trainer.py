"""DefaultTrainer end to end on a test-only model / dataset / mapper (through the real
build_train_loader): exact resume, evaluation hooks, best checkpoint, early stopping,
non-finite checkpoint, signal checkpoint, config.yaml."""

import json
import os
import signal
from argparse import Namespace

import pytest
import torch

from segtrain.config import get_cfg, load_config
from segtrain.engine import DefaultTrainer, default_setup
from segtrain.engine.hooks import CallbackHook, TrainingInterrupted
from segtrain.utils.env import seed_all_rng
from segtrain.utils.errors import NonFiniteLossError
from segtrain.utils.imports import import_user_modules

COMPONENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_engine_components.py")
comp = import_user_modules([COMPONENTS])[0]


def _cfg(out, **overrides):
    cfg = comp.configure(get_cfg(), out, **overrides)
    cfg.freeze()
    return cfg


def _trainer(cfg, cls=DefaultTrainer, resume=False):
    seed_all_rng(cfg.SEED)
    t = cls(cfg)
    t.resume_or_load(resume=resume)
    return t


class _Killed(RuntimeError):
    pass


def _kill_after(iteration):
    def fn(trainer):
        if trainer.iter == iteration:
            raise _Killed(f"simulated kill after iteration {iteration}")

    return CallbackHook(after_step=fn)


def _check_resume_is_exact(tmp_path):
    full = _trainer(_cfg(tmp_path / "full"))
    full.train()
    assert full.iter == 8

    cfg = _cfg(tmp_path / "killed")
    first = _trainer(cfg)
    first.register_hooks([_kill_after(5)])  # killed 2 iterations after the checkpoint at iteration 3
    with pytest.raises(_Killed):
        first.train()
    assert open(tmp_path / "killed" / "last_checkpoint").read() == "model_0000003.pth"
    del first

    resumed = _trainer(cfg, resume=True)
    assert resumed.start_iter == 4
    resumed.train()
    assert resumed.iter == full.iter == 8
    assert resumed.scheduler.last_epoch == full.scheduler.last_epoch
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [g["lr"] for g in full.optimizer.param_groups]
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.allclose(a.float(), b.float(), rtol=0, atol=1e-6), name
    for a, b in zip(full.optimizer.state_dict()["state"].values(), resumed.optimizer.state_dict()["state"].values()):
        assert torch.allclose(a["exp_avg"], b["exp_avg"], atol=1e-6)
    # a fresh start (no --resume) in the same folder starts at 0 and uses MODEL.WEIGHTS only
    assert _trainer(cfg, resume=False).start_iter == 0

    # metrics.json: one object per written iteration, with every loss key and lr
    lines = [json.loads(x) for x in open(tmp_path / "full" / "metrics.json")]
    assert [x["iteration"] for x in lines] == [1, 3, 5, 7]
    assert {"core_loss", "loss_mse", "loss_l1", "lr", "time", "data_time"} <= set(lines[-1])
    assert os.path.isfile(tmp_path / "full" / "model_final.pth")


def test_resume_continues_exactly(tmp_path):
    """Train 8 iterations with a checkpoint at 4; kill a second run after 6 and resume it: same
    iteration, LR, optimizer state and parameters as the uninterrupted run. Exercises the
    sampler position, dropout RNG state, warmup + step schedule and AdamW moments."""
    _check_resume_is_exact(tmp_path)


def test_resume_exact_with_random_augmentation(tmp_path):
    """As above with a random flip in the mapper: each sample's augmentation is seeded from its
    position in the sample stream, so the resumed run flips exactly the same images."""
    comp.RANDOM_FLIP["enabled"] = True
    try:
        _check_resume_is_exact(tmp_path)
    finally:
        comp.RANDOM_FLIP["enabled"] = False


# scripted evaluation results, consumed one per evaluation
_SCRIPT = []


class ScriptedEvalTrainer(DefaultTrainer):
    @classmethod
    def test(cls, cfg, model, evaluators=None):
        assert not model.training or True
        return {"segm": {"AP": _SCRIPT.pop(0), "AP-thing": 1.0}}


def test_eval_best_checkpoint_and_final_metrics(tmp_path):
    _SCRIPT[:] = [10.0, 30.0, 20.0]
    cfg = _cfg(tmp_path, **{"SOLVER.MAX_ITER": 6, "TEST.EVAL_PERIOD": 2, "TEST.BEST_CHECKPOINT.METRIC": "segm/AP"})
    t = _trainer(cfg, ScriptedEvalTrainer)
    results = t.train()
    assert _SCRIPT == [] and results["segm"]["AP"] == 20.0  # evaluated at iterations 1, 3 and the end
    best = torch.load(tmp_path / "model_best.pth", weights_only=False)
    assert best["iteration"] == 3 and best["best_metric"] == {"segm/AP": 30.0}
    assert open(tmp_path / "last_checkpoint").read() == "model_final.pth"  # best is never the resume point
    final = json.load(open(tmp_path / "metrics_final.json"))
    assert final == {"iteration": 5, "results": {"segm": {"AP": 20.0, "AP-thing": 1.0}}}
    lines = [json.loads(x) for x in open(tmp_path / "metrics.json")]
    ap = [(x["iteration"], x["segm/AP"]) for x in lines if "segm/AP" in x]
    assert ap == [(1, 10.0), (3, 30.0), (5, 20.0)]


def test_early_stopping(tmp_path):
    _SCRIPT[:] = [10.0, 5.0, 99.0]
    cfg = _cfg(
        tmp_path,
        **{
            "SOLVER.MAX_ITER": 20,
            "TEST.EVAL_PERIOD": 2,
            "TEST.EARLY_STOP.METRIC": "segm/AP",
            "TEST.EARLY_STOP.PATIENCE": 1,
        },
    )
    t = _trainer(cfg, ScriptedEvalTrainer)
    t.train()
    assert t.iter == 4 and _SCRIPT == [99.0]  # stopped after the 2nd evaluation (iteration 3)
    assert torch.load(tmp_path / "model_final.pth", weights_only=False)["iteration"] == 3
    assert json.load(open(tmp_path / "metrics_final.json"))["results"]["segm"]["AP"] == 5.0


def test_non_finite_loss_writes_last_good(tmp_path):
    cfg = _cfg(tmp_path)
    t = _trainer(cfg)
    comp.NAN_AT_CALL["call"] = 5
    try:
        with pytest.raises(NonFiniteLossError, match=r"iteration 5: loss_l1=nan \(core_loss=nan\)"):
            t.train()
    finally:
        comp.NAN_AT_CALL["call"] = None
    ck = torch.load(tmp_path / "model_last_good.pth", weights_only=False)
    assert ck["iteration"] == 5
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    for k, v in t.model.state_dict().items():  # the failing step changed nothing
        assert torch.equal(ck["model"][k], v), k
    assert open(tmp_path / "last_checkpoint").read() == "model_0000003.pth"
    assert not os.path.exists(tmp_path / "model_final.pth")
    assert not os.path.exists(tmp_path / "metrics_final.json")  # no end-of-run report after an error


def test_sigterm_checkpoints_then_resumes(tmp_path):
    cfg = _cfg(tmp_path, **{"SOLVER.CHECKPOINT_PERIOD": 100})
    t = _trainer(cfg)
    t.register_hooks(
        [CallbackHook(after_step=lambda tr: os.kill(os.getpid(), signal.SIGTERM) if tr.iter == 2 else None)]
    )
    old = signal.getsignal(signal.SIGTERM)
    with pytest.raises(TrainingInterrupted, match="SIGTERM after iteration 3"):
        t.train()
    assert signal.getsignal(signal.SIGTERM) == old  # handler restored
    assert open(tmp_path / "last_checkpoint").read() == "model_0000003.pth"
    assert _trainer(cfg, resume=True).start_iter == 4


def test_default_setup_saves_loadable_config(tmp_path):
    cfg = _cfg(tmp_path, **{"SOLVER.BASE_LR": 0.123, "MODULES": [COMPONENTS]})
    default_setup(cfg, Namespace(config_file="", eval_only=False))
    path = tmp_path / "config.yaml"
    again = load_config(str(path))
    assert again.SOLVER.BASE_LR == 0.123 and again.MODEL.META_ARCHITECTURE == "EngineTestNet"
    assert again.dump() == cfg.dump()
    assert "Running with full config" in open(tmp_path / "log.txt").read()


def test_loss_trends_logged_and_in_final_metrics(tmp_path, caplog):
    """At the end of a run the trainer compares each loss key's last and first fifth of
    metrics.json, warns about keys that did not go down, and stores the figures in
    metrics_final.json."""
    _SCRIPT[:] = [1.0]
    cfg = _cfg(tmp_path, **{"SOLVER.MAX_ITER": 24, "SOLVER.STEPS": (30,), "LOG_PERIOD": 1})
    # built inside the capture: a trainer built while "segtrain" logs nothing at INFO sets up its
    # own handlers (setup_logger), which do not propagate to caplog's
    with caplog.at_level("INFO", logger="segtrain"):
        t = _trainer(cfg, ScriptedEvalTrainer)
        t.train()
    final = json.load(open(tmp_path / "metrics_final.json"))
    lines = [json.loads(x) for x in open(tmp_path / "metrics.json")]
    trends = final["loss_trends"]
    assert {"core_loss", "loss_mse", "loss_l1"} <= set(trends) and "lr" not in trends
    mse = [x["loss_mse"] for x in lines if "loss_mse" in x]
    n = len(mse) // 5
    assert trends["loss_mse"]["first"] == pytest.approx(sum(mse[:n]) / n)
    assert trends["loss_mse"]["last"] == pytest.approx(sum(mse[-n:]) / n)
    assert "Loss trends over the run" in caplog.text
    rising = [k for k, v in trends.items() if v["ratio"] >= 1]
    assert ("did not go down" in caplog.text) == bool(rising)


def test_report_is_the_last_hook(tmp_path):
    """The end-of-run report reads what the final evaluation and the writers' last flush left."""
    names = [type(h).__name__ for h in _trainer(_cfg(tmp_path, **{"TEST.EVAL_PERIOD": 2}))._hooks]
    assert names[-2:] == ["PeriodicWriter", "TrainingReport"] and names.index("EvalHook") < len(names) - 2


def test_start_up_warns_about_unofficial_loss_weights(tmp_path, caplog):
    """Wrong loss weights train without an error, so the trainer names each one that differs
    from the official default when it starts (and says nothing when all are official)."""
    with caplog.at_level("INFO", logger="segtrain"):
        DefaultTrainer(_cfg(tmp_path / "official"))
    assert "differ from the official defaults" not in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="segtrain"):
        DefaultTrainer(_cfg(tmp_path / "ported", **{"MODEL.CRITERION.SET_CRITERION.WEIGHT_DICT.loss_mask": 20.0}))
    lines = [r.getMessage() for r in caplog.records if "differ from the official defaults" in r.getMessage()]
    assert len(lines) == 1
    assert (
        "MODEL.CRITERION.SET_CRITERION.WEIGHT_DICT.loss_mask = 20.0 differs from the official SetCriterion default 5.0"
    ) in lines[0]
