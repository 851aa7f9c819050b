"""FreeCoreMonitor: the thread count follows the free cores measured during the run (scripted
/proc/stat windows), only after two windows agree, only for a plan the free cores decided, and
the run's own CPU time includes its child processes (the data-loader workers)."""

import os
import subprocess
import sys
import time

import pytest

from segtrain.utils import cpu_share, free_core_monitor
from segtrain.utils.free_core_monitor import FreeCoreMonitor, process_tree_cpu_seconds


class _Machine:
    """Two CPUs over 10 s windows: ``others`` cores busy with other jobs, ``own`` with this run."""

    def __init__(self, monkeypatch):
        self.t, self.busy, self.idle, self.own_s = 0.0, 0, 0, 0.0
        self.reads = 0
        monkeypatch.setattr(cpu_share, "affinity_cpus", lambda: [0, 1])
        monkeypatch.setattr(cpu_share, "cpu_ticks", self._ticks)
        monkeypatch.setattr(free_core_monitor, "process_tree_cpu_seconds", lambda: self.own_s)
        monkeypatch.setattr(free_core_monitor.time, "monotonic", lambda: self.t)

    def _ticks(self, cpus, path):
        self.reads += 1
        return self.busy, self.idle

    def advance(self, seconds, others, own):
        ticks = int(100 * seconds)  # 100 ticks per CPU-second
        self.t += seconds
        self.busy += int(ticks * (others + own))
        self.idle += int(ticks * (2 - others - own))
        self.own_s += seconds * own


def _plan(source=cpu_share.FREE_CORES, threads=2):
    return cpu_share.ThreadPlan(threads=threads, source=source, usable=2, free=2.0, processes=1)


def test_follows_a_job_that_starts_and_stops_beside_the_run(monkeypatch):
    m = _Machine(monkeypatch)
    applied = []
    mon = FreeCoreMonitor(_plan(), applied.append, period_s=10)
    assert mon.enabled
    m.advance(10, others=0.0, own=2.0)
    assert mon.poll() is None  # quiet: two threads stay
    m.advance(10, others=1.0, own=1.0)  # a single-thread job started
    assert mon.poll() is None and applied == []  # one window is not enough
    m.advance(10, others=1.0, own=1.0)
    assert mon.poll() == 1 and applied == [1] and mon.threads == 1
    m.advance(10, others=1.0, own=1.0)
    assert mon.poll() is None
    m.advance(10, others=0.0, own=1.0)  # it stopped
    assert mon.poll() is None
    m.advance(10, others=0.0, own=1.0)
    assert mon.poll() == 2 and applied == [1, 2]


def test_a_single_burst_changes_nothing(monkeypatch):
    m = _Machine(monkeypatch)
    applied = []
    mon = FreeCoreMonitor(_plan(), applied.append, period_s=10)
    m.advance(10, others=1.0, own=1.0)
    mon.poll()
    m.advance(10, others=0.0, own=2.0)
    mon.poll()
    m.advance(10, others=1.0, own=1.0)
    mon.poll()
    assert applied == []


def test_measures_only_once_per_period(monkeypatch):
    m = _Machine(monkeypatch)
    mon = FreeCoreMonitor(_plan(), lambda n: None, period_s=10)
    reads = m.reads
    m.advance(3, others=1.0, own=1.0)
    for _ in range(5):
        mon.poll()
    assert m.reads == reads  # after a step: one clock read, no /proc/stat


def test_fixed_counts_are_never_changed(monkeypatch):
    m = _Machine(monkeypatch)
    applied = []
    mon = FreeCoreMonitor(_plan(source="CPU.NUM_THREADS"), applied.append, period_s=10)
    for _ in range(3):
        m.advance(10, others=2.0, own=0.0)
        mon.poll()
    assert not mon.enabled and applied == [] and m.reads == 0


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_own_cpu_time_includes_child_processes():
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        tree = process_tree_cpu_seconds()
        t = os.times()
        own = t.user + t.system
    finally:
        child.kill()
        child.wait()
    assert tree - own > 0.05  # the busy child's CPU time, which os.times() leaves out until it is waited for
