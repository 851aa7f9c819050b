"""segtrain.utils.cpu_share: the thread plan (order of the overrides, division among processes),
the free-core measurement (scripted /proc/stat arithmetic, and a real busy process), the OpenMP
wait policy reaching libgomp, and the module staying importable without torch."""

import os
import subprocess
import sys

import pytest

from segtrain.utils import cpu_share
from segtrain.utils.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _plan(config=0, processes=1, env=None, usable=4, free=None):
    return cpu_share.plan_threads(config, processes, environ=env or {}, usable=usable, free=free)


def test_free_cores_decide_when_nothing_is_set():
    assert _plan(free=4.0).threads == 4
    assert _plan(free=3.0).threads == 3  # one core taken by another job: a team of 3, not 4
    assert _plan(free=2.6).threads == 3  # rounded
    assert _plan(free=2.4).threads == 2
    assert _plan(free=0.0).threads == 1  # never below one
    assert _plan(free=3.0).source == "free cores"
    # not measured: every usable CPU (torch's own default)
    plan = _plan(free=None)
    assert (plan.threads, plan.free) == (4, None) and "not measured" in plan.source


def test_free_cores_are_divided_among_the_processes_of_the_machine():
    assert _plan(free=4.0, processes=2).threads == 2
    assert _plan(free=2.0, processes=2, usable=2).threads == 1  # --num-gpus 2 on 2 cores: one each
    assert _plan(free=3.0, processes=4).threads == 1
    # a measurement above the usable CPUs (rounding) never gives more than a process's share
    assert _plan(free=4.4, processes=2, usable=4).threads == 2


def test_overrides_in_order_config_then_environment():
    env = {"SEGTRAIN_NUM_THREADS": "3", "OMP_NUM_THREADS": "2"}
    assert (_plan(config=5, env=env, free=1.0).threads, _plan(config=5, env=env).source) == (5, "CPU.NUM_THREADS")
    assert (_plan(env=env, free=1.0).threads, _plan(env=env).source) == (3, "SEGTRAIN_NUM_THREADS")
    env = {"SEGTRAIN_NUM_THREADS": "auto", "OMP_NUM_THREADS": "2"}
    assert (_plan(env=env, free=1.0).threads, _plan(env=env).source) == (2, "OMP_NUM_THREADS")
    assert _plan(env={"OMP_NUM_THREADS": "3,1"}).threads == 3  # one count per nesting level
    # the published free-core figure is read from the environment
    assert _plan(env={"SEGTRAIN_FREE_CPUS": "1.10"}).threads == 1


@pytest.mark.parametrize(
    "env, match",
    [
        ({"SEGTRAIN_NUM_THREADS": "two"}, "SEGTRAIN_NUM_THREADS='two'"),
        ({"OMP_NUM_THREADS": "0"}, "OMP_NUM_THREADS='0'"),
        ({"SEGTRAIN_FREE_CPUS": "-1"}, "SEGTRAIN_FREE_CPUS='-1'"),
        ({"SEGTRAIN_FREE_CPUS": "nan"}, "SEGTRAIN_FREE_CPUS='nan'"),
    ],
)
def test_bad_environment_values_name_the_variable(env, match):
    with pytest.raises(ConfigError, match=match):
        cpu_share.plan_threads(0, 1, environ=env, usable=2)


def test_negative_config_value_is_an_error():
    with pytest.raises(ConfigError, match="CPU.NUM_THREADS must be >= 0"):
        _plan(config=-1)


def test_describe_names_every_input():
    line = _plan(free=1.0, processes=1, usable=2).describe()
    assert "1 per process (free cores)" in line and "2 usable" in line and "1.00 free" in line


def test_measurement_subtracts_this_process_own_cpu_time(monkeypatch):
    """2 CPUs over a 1 s window: 150 of 200 ticks busy = 1.5 cores busy, of which 0.5 s of CPU
    time is this process's own -> other jobs hold 1.0 core, 1.0 is free."""
    ticks = iter([(1000, 1000), (1150, 1050)])
    own = iter([10.0, 10.5])
    clock = iter([0.0, 1.0])
    monkeypatch.setattr(cpu_share, "affinity_cpus", lambda: [0, 1])
    monkeypatch.setattr(cpu_share, "_cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(cpu_share, "cpu_ticks", lambda cpus, path: next(ticks))
    monkeypatch.setattr(cpu_share, "_own_cpu_seconds", lambda: next(own))
    monkeypatch.setattr(cpu_share.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(cpu_share.time, "sleep", lambda s: None)
    assert cpu_share.measure_free_cpus(1.0) == pytest.approx(1.0)


def test_cpu_ticks_read_only_the_affinity_cpus(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  9 9 9 9 9 9 9 9 0 0\n"
        "cpu0 10 0 5 100 5 1 1 2 0 0\n"  # busy = 10+0+5+1+1+2 = 19, idle = 105
        "cpu1 1 1 1 1 1 1 1 1 0 0\n"
        "intr 1 2 3\n"
    )
    assert cpu_share.cpu_ticks([0], str(stat)) == (19, 105)
    assert cpu_share.cpu_ticks([5], str(stat)) is None
    assert cpu_share.cpu_ticks([0], str(tmp_path / "missing")) is None


def test_usable_cpus_follow_the_cgroup_quota(monkeypatch):
    monkeypatch.setattr(cpu_share, "affinity_cpus", lambda: list(range(8)))
    monkeypatch.setattr(cpu_share, "_cgroup_cpu_limit", lambda: 2.5)
    assert cpu_share.usable_cpus() == 3
    monkeypatch.setattr(cpu_share, "_cgroup_cpu_limit", lambda: None)
    assert cpu_share.usable_cpus() == 8


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc/stat")
def test_a_busy_process_beside_is_measured_as_a_taken_core():
    """A real single-thread busy loop: at least 0.7 of a core is no longer free (other jobs on
    a shared machine can only take more)."""
    usable = cpu_share.usable_cpus()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        free = cpu_share.measure_free_cpus(0.5)
    finally:
        busy.kill()
        busy.wait()
    assert free is not None and 0.0 <= free <= usable - 0.7


def test_publish_measures_once_and_skips_fixed_thread_counts(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_share, "measure_free_cpus", lambda seconds: calls.append(seconds) or 1.25)
    env = {}
    assert cpu_share.publish_free_cpus(env) == 1.25 and env["SEGTRAIN_FREE_CPUS"] == "1.25"
    assert cpu_share.publish_free_cpus(env) == 1.25 and len(calls) == 1  # already published
    assert cpu_share.publish_free_cpus({"OMP_NUM_THREADS": "1"}) is None and len(calls) == 1


def _without_torch(code: str, env: dict) -> str:
    full = dict({k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "SEGTRAIN_"))}, **env)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, text=True, timeout=120, check=True
    )
    return out.stdout + out.stderr


def test_module_imports_without_torch():
    code = "import sys; import segtrain.utils.cpu_share; print('torch' in sys.modules)"
    assert _without_torch(code, {}).strip() == "False"


def test_wait_policy_choices():
    code = (
        "import os; from segtrain.utils import cpu_share as c\n"
        "print(c.prepare_openmp_env(os.environ, free=float(os.environ['FREE']))['wait_policy'])\n"
    )
    busy, quiet = "0.3", str(cpu_share.usable_cpus())
    assert _without_torch(code, {"FREE": busy}).strip() == "PASSIVE"
    assert _without_torch(code, {"FREE": quiet}).strip() == "libgomp default"
    assert _without_torch(code, {"FREE": quiet, "SEGTRAIN_OMP_WAIT_POLICY": "passive"}).strip() == "PASSIVE"
    assert _without_torch(code, {"FREE": busy, "SEGTRAIN_OMP_WAIT_POLICY": "default"}).strip() == "libgomp default"
    assert _without_torch(code, {"FREE": busy, "OMP_WAIT_POLICY": "ACTIVE"}).strip() == "ACTIVE"  # the user's
    with pytest.raises(ConfigError, match="SEGTRAIN_OMP_WAIT_POLICY='lazy'"):
        cpu_share.prepare_openmp_env({"SEGTRAIN_OMP_WAIT_POLICY": "lazy"})


def test_passive_policy_reaches_libgomp_when_set_before_torch():
    """libgomp prints the policy it initialised with (OMP_DISPLAY_ENV); set after torch was
    imported it is reported as not applied."""
    before = "import os; from segtrain.utils import cpu_share as c; c.prepare_openmp_env(os.environ, free=0.0)\n"
    out = _without_torch(before + "import torch; torch.ones(4).sum()", {"OMP_DISPLAY_ENV": "TRUE"})
    if "OMP_WAIT_POLICY" not in out:
        pytest.skip("this OpenMP runtime does not display its settings (not libgomp)")
    assert "OMP_WAIT_POLICY = 'PASSIVE'" in out
    after = "import os, torch; from segtrain.utils import cpu_share as c; print(c.prepare_openmp_env(free=0))"
    assert "not applied: torch was already loaded" in _without_torch(after, {})
