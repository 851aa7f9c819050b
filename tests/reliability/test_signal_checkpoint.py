"""SIGINT and SIGTERM during training: the current iteration finishes, a resumable checkpoint
is written, the run stops with TrainingInterrupted (exit code 130 through run_cli), and a
resumed run continues at the next iteration."""

import os
import signal
from argparse import Namespace

import pytest

from segtrain.config import get_cfg
from segtrain.engine import DefaultTrainer, run_cli
from segtrain.engine.hooks import CallbackHook, TrainingInterrupted
from segtrain.utils.env import seed_all_rng
from segtrain.utils.imports import import_user_modules

ENGINE_COMPONENTS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "engine", "_engine_components.py"
)
comp = import_user_modules([ENGINE_COMPONENTS])[0]


def _trainer(out, resume=False):
    cfg = comp.configure(get_cfg(), out, **{"SOLVER.CHECKPOINT_PERIOD": 100})
    cfg.freeze()
    seed_all_rng(cfg.SEED)
    t = DefaultTrainer(cfg)
    t.resume_or_load(resume=resume)
    return t


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_writes_checkpoint_then_stops(tmp_path, signum, records):
    def main(args):
        # the signal arrives during iteration 3's hooks (after the signal hook ran): iteration 4 completes
        t = _trainer(tmp_path)
        t.register_hooks([CallbackHook(after_step=lambda tr: os.kill(os.getpid(), signum) if tr.iter == 3 else None)])
        t.train()

    old = signal.getsignal(signum)
    with pytest.raises(TrainingInterrupted, match=f"{signal.Signals(signum).name} after iteration 4"):
        main(None)
    assert signal.getsignal(signum) == old  # the handler is restored
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000004.pth"
    assert not (tmp_path / "model_final.pth").exists()
    assert _trainer(tmp_path, resume=True).start_iter == 5

    os.remove(tmp_path / "last_checkpoint")
    assert run_cli(main, Namespace(debug=False, num_gpus=1)) == 130  # the entry scripts' exit code
