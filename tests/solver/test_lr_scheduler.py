"""LR schedules: hand-computed values at chosen iterations, warmup, multipliers, state_dict."""

import math

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.solver import WarmupCosineLR, WarmupMultiStepLR, WarmupPolyLR, WarmupStepLR, build_lr_scheduler
from segtrain.utils.errors import ConfigError


def _opt(lrs=(1.0,)):
    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=lrs[0])


def _lrs(sched, n):
    """LR of group 0 used at iterations 0 .. n-1 (read before each step, as the LR hook does)."""
    out = []
    for _ in range(n):
        out.append(sched.optimizer.param_groups[0]["lr"])
        sched.optimizer.step()
        sched.step()
    return out


def test_multistep_with_linear_warmup():
    # warmup 5 iters from factor 0.1: lr(it) = 0.1 * (1 - it/5) + it/5 ; then x0.1 at 10 and 15
    lrs = _lrs(WarmupMultiStepLR(_opt(), [10, 15], 0.1, warmup_factor=0.1, warmup_iters=5), 20)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[2] == pytest.approx(0.1 * 0.6 + 0.4)  # 0.46
    assert lrs[5] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(0.1)
    assert lrs[14] == pytest.approx(0.1)
    assert lrs[15] == pytest.approx(0.01)


def test_constant_warmup():
    lrs = _lrs(WarmupMultiStepLR(_opt(), [100], warmup_factor=0.25, warmup_iters=3, warmup_method="constant"), 4)
    assert lrs == pytest.approx([0.25, 0.25, 0.25, 1.0])


def test_cosine_values():
    # 0.5 * (1 + cos(pi * it / 20)): 1 at 0, 0.5 at 10, 0 at 20; end factor 0.1 lifts the floor
    s = WarmupCosineLR(_opt(), 20, warmup_iters=0)
    lrs = _lrs(s, 21)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lrs[10] == pytest.approx(0.5)
    assert lrs[20] == pytest.approx(0.0, abs=1e-12)
    lrs = _lrs(WarmupCosineLR(_opt(), 20, end_factor=0.1), 21)
    assert lrs[10] == pytest.approx(0.1 + 0.9 * 0.5)
    assert lrs[20] == pytest.approx(0.1)


def test_cosine_warmup_multiplies_schedule():
    # linear warmup factor 0.5 over 4 iters on top of cosine over 8: it=2 -> 0.75 * 0.5*(1+cos(pi/4))
    lrs = _lrs(WarmupCosineLR(_opt(), 8, warmup_factor=0.5, warmup_iters=4), 3)
    assert lrs[2] == pytest.approx(0.75 * 0.5 * (1 + math.cos(math.pi * 2 / 8)))


def test_step_and_poly_values():
    lrs = _lrs(WarmupStepLR(_opt(), 4, 0.5), 9)
    assert lrs[3] == pytest.approx(1.0) and lrs[4] == pytest.approx(0.5) and lrs[8] == pytest.approx(0.25)
    lrs = _lrs(WarmupPolyLR(_opt(), 10, power=2.0), 11)
    assert lrs[5] == pytest.approx(0.25) and lrs[9] == pytest.approx(0.01) and lrs[10] == pytest.approx(0.0)


def test_group_multipliers_kept():
    opt = _opt((1.0, 0.1))  # head, backbone x0.1
    s = WarmupMultiStepLR(opt, [2], 0.1)
    _lrs(s, 3)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.01])


@pytest.mark.parametrize(
    "name", ["WarmupMultiStepLR", "WarmupCosineLR", "WarmupStepLR", "WarmupPolyLR", "InverseSquareRootLR"]
)
def test_state_dict_round_trip(name):
    cfg = get_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME = name
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.STEP_SIZE = 20, (6, 12), 5
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = 4, 0.2
    a = build_lr_scheduler(cfg, _opt((1.0, 0.5)))
    ref = _lrs(a, 20)
    b = build_lr_scheduler(cfg, _opt((1.0, 0.5)))
    _lrs(b, 7)
    state, opt_state = b.state_dict(), b.optimizer.state_dict()
    c = build_lr_scheduler(cfg, _opt((1.0, 0.5)))
    c.optimizer.load_state_dict(opt_state)
    c.load_state_dict(state)
    assert _lrs(c, 13) == pytest.approx(ref[7:])


def test_inverse_square_root_values_at_chosen_iterations():
    """SAM 3's RF100 schedule shape (warm-up 20 from 0, timescale 20, cool-down 20) over 100
    iterations: 0 at 0, half at 10, 1 at 20, 1/sqrt(2) at 40, then the cool-down's linear
    factor times 1/sqrt(it / 20)."""
    cfg = get_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME = "InverseSquareRootLR"
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = 100, 20, 0.0
    cfg.SOLVER.INVERSE_SQRT_TIMESCALE, cfg.SOLVER.COOLDOWN_ITERS = 20, 20
    lrs = _lrs(build_lr_scheduler(cfg, _opt((8e-5,))), 100)
    expected = {
        0: 0.0,
        10: 0.5,
        20: 1.0,
        40: 1 / math.sqrt(2),
        80: 1 / math.sqrt(4),
        90: 1 / math.sqrt(4.5) * 0.5,
        99: 1 / math.sqrt(4.95) * 0.05,
    }
    for it, factor in expected.items():
        assert lrs[it] == pytest.approx(8e-5 * factor, rel=1e-12, abs=1e-20), it


def test_unknown_scheduler_lists_valid_names():
    cfg = get_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupCosinLR"
    with pytest.raises(ConfigError) as e:
        build_lr_scheduler(cfg, _opt())
    msg = str(e.value)
    assert "\n" not in msg and "WarmupCosinLR" in msg and "WarmupMultiStepLR" in msg and "WarmupPolyLR" in msg


def test_unknown_warmup_method():
    with pytest.raises(ConfigError, match="WARMUP_METHOD"):
        WarmupMultiStepLR(_opt(), [1], warmup_method="exp")


def test_warmup_and_cooldown_longer_than_the_run_warn(caplog):
    cfg = get_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME = "InverseSquareRootLR"
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.COOLDOWN_ITERS, cfg.SOLVER.MAX_ITER = 20, 20, 16
    with caplog.at_level("INFO", logger="segtrain"):
        sched = build_lr_scheduler(cfg, _opt())
    assert "take more than the run's SOLVER.MAX_ITER 16" in caplog.text
    # the description lists iterations of the run only (never past its last, 15)
    assert ", 20:" not in caplog.text and "15: " in caplog.text
    assert sched._factor(15) >= 0
