"""Re-measure the free CPU cores during a run and follow them with the thread count.

The start-up plan (:mod:`segtrain.utils.cpu_share`) sees the load of the moment; a job that
starts beside the run later (an editor, a second experiment) would take a core from a team
sized for a quiet machine, and every barrier of that team would wait for it. Every
``period_s`` seconds :meth:`FreeCoreMonitor.poll` (called after each training step, in the
thread that runs the step, since the thread count is per calling thread) compares the busy
time of the affinity CPUs in ``/proc/stat`` with the CPU time of this run (this process and
its child processes: the data-loader workers), and when the same new thread count comes out
of two windows in a row it calls ``set_threads`` with it. Only a plan decided by the free
cores is followed; a count fixed by the config or the environment never changes.
"""

import logging
import os
import time
from typing import Callable, Optional

from segtrain.utils import cpu_share

__all__ = ["FreeCoreMonitor", "process_tree_cpu_seconds"]

logger = logging.getLogger(__name__)

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _child_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of the live child processes of ``pid`` (Linux /proc)."""
    total = 0.0
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0.0
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                # the command name may hold spaces: the fields after it start behind ')'
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        # fields[0] is the state; ppid, utime and stime are fields 4, 14 and 15 of stat(5)
        if len(fields) > 12 and int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return total


def process_tree_cpu_seconds() -> float:
    """CPU seconds used so far by this process (all threads) and its live child processes."""
    t = os.times()
    return t.user + t.system + _child_cpu_seconds(os.getpid())


class FreeCoreMonitor:
    """Follows the free cores with the thread count of a plan decided by them (module docstring).

    plan: the start-up :class:`~segtrain.utils.cpu_share.ThreadPlan`; set_threads: applies a
    count (``torch.set_num_threads``); period_s: seconds between measurements."""

    def __init__(
        self,
        plan: cpu_share.ThreadPlan,
        set_threads: Callable[[int], None],
        period_s: float = 15.0,
        stat_path: str = "/proc/stat",
    ):
        self.plan = plan
        self.threads = plan.threads
        self.enabled = plan.source == cpu_share.FREE_CORES
        self._set_threads = set_threads
        self._period = float(period_s)
        self._stat_path = stat_path
        self._cpus = cpu_share.affinity_cpus()
        self._pending: Optional[int] = None
        self._last = self._sample() if self.enabled else None
        if self.enabled and self._last is None:
            self.enabled = False  # no /proc/stat: nothing to follow

    def _sample(self):
        ticks = cpu_share.cpu_ticks(self._cpus, self._stat_path)
        return None if ticks is None else (ticks, process_tree_cpu_seconds(), time.monotonic())

    def poll(self) -> Optional[int]:
        """Measure when ``period_s`` has passed since the last measurement; returns the new
        thread count when it changed (after two windows agree), else None."""
        if not self.enabled or time.monotonic() - self._last[2] < self._period:
            return None
        now = self._sample()
        if now is None:
            return None
        (b0, i0), own0, t0 = self._last
        (b1, i1), own1, t1 = now
        self._last = now
        own_cores = (own1 - own0) / max(t1 - t0, 1e-6)
        free = cpu_share.free_from_deltas(len(self._cpus), b1 - b0, i1 - i0, own_cores, self.plan.usable)
        if free is None:
            return None
        target = cpu_share.threads_for(free, self.plan.processes, self.plan.usable)
        if target == self.threads:
            self._pending = None
            return None
        if self._pending != target:  # one window can be a burst: wait for a second one
            self._pending = target
            return None
        logger.info(f"CPU threads {self.threads} -> {target} per process: {free:.2f} core(s) free of other work")
        self.threads, self._pending = target, None
        self._set_threads(target)
        return target
