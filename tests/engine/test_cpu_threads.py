"""CPU threads of a run (``configure_cpu_threads``, ``follow_free_cores``, ``launch``): the
config value, the environment or the free cores decide, the choice is logged, a plan the free
cores decided is re-measured after training steps, and the processes that ``--num-gpus``
starts on a CPU divide one measurement among themselves."""

import argparse
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from segtrain.config import get_cfg
from segtrain.engine.cli import configure_cpu_threads, default_setup, follow_free_cores
from segtrain.engine.launch import launch
from segtrain.utils import cpu_share
from segtrain.utils.free_core_monitor import FreeCoreMonitor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _cpu_threads_worker as worker  # noqa: E402  (importable by name in the spawned processes)

_VARS = ("SEGTRAIN_NUM_THREADS", "OMP_NUM_THREADS", "SEGTRAIN_FREE_CPUS", "SEGTRAIN_OMP_WAIT_POLICY_SET_BY")


@pytest.fixture
def clean_env(monkeypatch):
    for k in _VARS:
        monkeypatch.delenv(k, raising=False)
    saved = torch.get_num_threads()
    yield monkeypatch
    torch.set_num_threads(saved)


def _cfg(threads=0):
    cfg = get_cfg()
    cfg.CPU.NUM_THREADS = threads
    return cfg


def test_config_value_wins_and_is_logged(clean_env, tmp_path):
    clean_env.setenv("SEGTRAIN_NUM_THREADS", "2")
    line = configure_cpu_threads(_cfg(1)).describe()
    assert torch.get_num_threads() == 1 and "1 per process (CPU.NUM_THREADS)" in line
    assert "OpenMP wait policy" in line
    cfg = _cfg(1)
    cfg.OUTPUT_DIR = str(tmp_path)
    default_setup(cfg, argparse.Namespace(config_file="", eval_only=False), cpu_threads=line)
    assert line in (tmp_path / "log.txt").read_text()


def test_environment_then_published_free_cores(clean_env):
    clean_env.setenv("OMP_NUM_THREADS", "1")
    assert "1 per process (OMP_NUM_THREADS)" in configure_cpu_threads(_cfg()).describe()
    clean_env.delenv("OMP_NUM_THREADS")
    clean_env.setenv("SEGTRAIN_FREE_CPUS", "0.9")  # one core of two taken by another job
    line = configure_cpu_threads(_cfg()).describe()
    assert torch.get_num_threads() == 1 and "(free cores)" in line and "0.90 free" in line


def test_free_cores_are_measured_when_nothing_was_published(clean_env):
    configure_cpu_threads(_cfg())
    free = cpu_share.read_free_cpus()
    assert free is not None and 0 <= free <= cpu_share.usable_cpus()
    assert torch.get_num_threads() == max(1, min(int(free + 0.5), cpu_share.usable_cpus()))


@pytest.mark.slow
def test_num_gpus_2_on_cpu_divides_the_free_cores(clean_env, tmp_path):
    """Two Gloo processes on a machine with 2 free cores: one thread each (each used to run a
    thread per core, 4 threads on 2 cores); both read the figure the launcher published."""
    clean_env.setenv("SEGTRAIN_FREE_CPUS", "2")
    launch(worker.report_threads, 2, dist_url="auto", args=(str(tmp_path),))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in ranks:
        assert r["local_size"] == 2 and r["free"] == "2"
        assert r["threads"] == max(1, min(1, cpu_share.usable_cpus() // 2)), r["line"]
    # nothing published: the launcher measures once, before it starts the workers
    clean_env.delenv("SEGTRAIN_FREE_CPUS")
    launch(worker.report_threads, 2, dist_url="auto", args=(str(tmp_path),))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["free"] is not None and ranks[0]["free"] == ranks[1]["free"]
    assert all(r["threads"] == 1 for r in ranks)


def test_follow_free_cores_only_for_a_plan_the_free_cores_decided(monkeypatch):
    class _Trainer:
        def __init__(self):
            self.hooks = []

        def register_hooks(self, hooks):
            self.hooks.extend(hooks)

    polls = []
    monkeypatch.setattr(FreeCoreMonitor, "poll", lambda self: polls.append(1))
    free_plan = cpu_share.ThreadPlan(threads=2, source=cpu_share.FREE_CORES, usable=2, free=2.0, processes=1)
    fixed_plan = dataclasses.replace(free_plan, source="CPU.NUM_THREADS")
    trainer = _Trainer()
    assert follow_free_cores(trainer, fixed_plan, 15.0) is None and trainer.hooks == []
    assert follow_free_cores(trainer, free_plan, 0.0) is None and trainer.hooks == []
    monitor = follow_free_cores(trainer, free_plan, 15.0)
    assert monitor is not None and monitor.enabled and len(trainer.hooks) == 1
    hook = trainer.hooks[0]
    hook.trainer = trainer
    hook.after_step()
    hook.after_step()
    assert len(polls) == 2  # after every step


@pytest.mark.parametrize(
    "var, value", [("SEGTRAIN_OMP_WAIT_POLICY", "lazy"), ("SEGTRAIN_NUM_THREADS", "x"), ("SEGTRAIN_FREE_CPUS", "-2")]
)
def test_train_net_bad_thread_variable_is_one_line(var, value):
    """Checked before torch is imported: one ``error:`` line naming the variable, exit code 2."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k not in _VARS}
    env[var] = value
    proc = subprocess.run(
        [sys.executable, os.path.join(root, "tools", "train_net.py"), "--config-file", "x.yaml"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and f"{var}='{value}'" in proc.stderr
