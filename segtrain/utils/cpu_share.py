"""How many CPU threads a training process should run: the cores free when it starts,
divided among the processes of this machine, and the OpenMP wait policy.

Why: an OpenMP team of T threads meets at a barrier after every parallel operator. When
another job takes one of the T cores, every barrier waits for the descheduled thread (a
scheduler time slice, milliseconds) while its team-mates spin, so a step that takes 0.7 s
alone takes 3-18 s beside one single-thread job (docs/benchmarks.md, "Busy machines"). A
team no larger than the free cores has nothing to wait for.

Measured, not guessed: :func:`measure_free_cpus` samples ``/proc/stat`` over a short window
(the CPUs of this process's affinity mask only) and subtracts this process's own CPU time,
so ``free = usable - cores busy with other processes``; ``usable`` is the affinity mask
capped by a cgroup CPU quota. The launcher measures once, before it starts workers, and
hands the figure to them in ``SEGTRAIN_FREE_CPUS``.

Choices, each overridable (first that applies wins):

* compute threads per process: the config's ``CPU.NUM_THREADS`` (> 0), else the
  environment's ``SEGTRAIN_NUM_THREADS``, else ``OMP_NUM_THREADS`` (torchrun sets 1), else
  ``round(free / processes on this machine)``, at least 1 (re-measured during training by
  :mod:`segtrain.utils.free_core_monitor`);
* OpenMP wait policy (libgomp reads it once, when torch is imported, so
  :func:`prepare_openmp_env` must run before): the user's ``OMP_WAIT_POLICY`` /
  ``GOMP_SPINCOUNT``, else ``SEGTRAIN_OMP_WAIT_POLICY`` = ``auto`` (default: ``PASSIVE`` when
  the machine is busy at start-up, libgomp's default otherwise), ``passive``, ``active`` or
  ``default`` (leave libgomp alone);
* data-loader worker processes: niceness ``SEGTRAIN_LOADER_NICENESS`` (default 10) and one
  OpenCV thread each (``segtrain.data.build``), so that they take idle cores, not the team's.

Torch-free on purpose: the entry script imports it before torch.
"""

import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, MutableMapping, Optional, Tuple

from segtrain.utils.errors import ConfigError

__all__ = [
    "DEFAULT_LOADER_NICENESS",
    "FREE_CORES",
    "FREE_CPUS_ENV",
    "LOADER_NICENESS_ENV",
    "NUM_THREADS_ENV",
    "SAMPLE_SECONDS",
    "WAIT_POLICY_ENV",
    "ThreadPlan",
    "affinity_cpus",
    "cpu_ticks",
    "free_from_deltas",
    "loader_niceness",
    "measure_free_cpus",
    "plan_threads",
    "prepare_openmp_env",
    "publish_free_cpus",
    "read_free_cpus",
    "threads_for",
    "usable_cpus",
]

#: the user's thread count for every process (an integer >= 1)
NUM_THREADS_ENV = "SEGTRAIN_NUM_THREADS"
#: free cores measured by the launcher (a number >= 0), read by the processes it starts
FREE_CPUS_ENV = "SEGTRAIN_FREE_CPUS"
#: niceness of data-loader worker processes (0 to 19)
LOADER_NICENESS_ENV = "SEGTRAIN_LOADER_NICENESS"
DEFAULT_LOADER_NICENESS = 10
#: "auto", "passive", "active" or "default"
WAIT_POLICY_ENV = "SEGTRAIN_OMP_WAIT_POLICY"
WAIT_POLICIES = ("auto", "passive", "active", "default")
#: ``ThreadPlan.source`` when the free cores decided (the only plan a run re-adjusts)
FREE_CORES = "free cores"
#: the sampling window of :func:`measure_free_cpus`, seconds
SAMPLE_SECONDS = 0.3
# /proc/stat columns after the cpu name: user nice system idle iowait irq softirq steal
_IDLE_COLUMNS = (3, 4)
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)  # steal counts as busy: the hypervisor took the core
# set with OMP_WAIT_POLICY by prepare_openmp_env: why, for the processes started after it
_WAIT_POLICY_SET_BY = "SEGTRAIN_OMP_WAIT_POLICY_SET_BY"
# free cores short of the usable ones by more than this = a busy machine
_BUSY_MARGIN = 0.5


@dataclass(frozen=True)
class ThreadPlan:
    """The thread choice of one process and why.

    threads: torch intra-op threads; source: what decided it; usable: CPUs this process may
    run on; free: cores free at start-up (None: not measured); processes: processes of this
    run on this machine sharing them; wait_policy: the OpenMP wait policy in effect and why."""

    threads: int
    source: str
    usable: int
    free: Optional[float]
    processes: int
    wait_policy: str = ""

    def describe(self) -> str:
        free = "not measured" if self.free is None else f"{self.free:.2f} free at start-up"
        wait = f"; OpenMP wait policy {self.wait_policy}" if self.wait_policy else ""
        return (
            f"CPU threads: {self.threads} per process ({self.source}); {self.usable} usable CPU(s), {free}, "
            f"{self.processes} process(es) on this machine{wait}"
        )


def _cgroup_cpu_limit() -> Optional[float]:
    """The cgroup CPU quota in cores (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), None if unlimited."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota_us = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period_us = int(f.read())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def affinity_cpus() -> List[int]:
    """The CPU numbers this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    n = len(affinity_cpus())
    limit = _cgroup_cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.ceil(limit - 1e-6)))
    return max(1, n)


def cpu_ticks(cpus: List[int], stat_path: str) -> Optional[Tuple[int, int]]:
    """(busy, idle) clock ticks summed over ``cpus`` from ``/proc/stat``; None when unreadable."""
    wanted = {f"cpu{c}" for c in cpus}
    busy = idle = 0
    found = 0
    try:
        with open(stat_path) as f:
            for line in f:
                name, _, rest = line.partition(" ")
                if name not in wanted:
                    continue
                cols = [int(v) for v in rest.split()]
                busy += sum(cols[i] for i in _BUSY_COLUMNS if i < len(cols))
                idle += sum(cols[i] for i in _IDLE_COLUMNS if i < len(cols))
                found += 1
    except (OSError, ValueError):
        return None
    return (busy, idle) if found else None


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def free_from_deltas(cpus: int, d_busy: int, d_idle: int, own_cores: float, usable: int) -> Optional[float]:
    """Free cores from one sampling window: ``cpus`` CPUs were busy ``d_busy`` and idle
    ``d_idle`` ticks in total, ``own_cores`` of the busy time was this run's own (CPU seconds
    per second). None when the window holds no tick."""
    if d_busy + d_idle <= 0:
        return None
    busy_cores = cpus * d_busy / (d_busy + d_idle)
    others = max(0.0, busy_cores - own_cores)
    return max(0.0, min(float(usable), usable - others))


def measure_free_cpus(seconds: float = SAMPLE_SECONDS, stat_path: str = "/proc/stat") -> Optional[float]:
    """Cores free of other processes over the next ``seconds``: usable CPUs minus the busy
    time of the affinity CPUs that this process did not use itself. None where ``/proc/stat``
    cannot be read (not Linux)."""
    cpus = affinity_cpus()
    first = cpu_ticks(cpus, stat_path)
    if first is None:
        return None
    own0, t0 = _own_cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    second = cpu_ticks(cpus, stat_path)
    own1, t1 = _own_cpu_seconds(), time.monotonic()
    if second is None:
        return None
    own_cores = (own1 - own0) / max(t1 - t0, 1e-6)
    return free_from_deltas(len(cpus), second[0] - first[0], second[1] - first[1], own_cores, usable_cpus())


def _positive_int(environ, key: str) -> Optional[int]:
    text = environ.get(key, "").strip()
    if not text or (key == NUM_THREADS_ENV and text == "auto"):
        return None
    try:
        # OMP_NUM_THREADS may list one count per nesting level ("4,1"): the outer one is ours
        value = int(text.split(",")[0] if key == "OMP_NUM_THREADS" else text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"environment variable {key}={text!r}: expected an integer >= 1")
    return value


def read_free_cpus(environ=os.environ) -> Optional[float]:
    """The free-core figure the launcher published in ``SEGTRAIN_FREE_CPUS``, or None."""
    text = environ.get(FREE_CPUS_ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also rejects nan
        raise ConfigError(f"environment variable {FREE_CPUS_ENV}={text!r}: expected a number of cores >= 0")
    return value


def _explicit_threads(environ) -> bool:
    """Whether the environment fixes the thread count (raises on a malformed value)."""
    return any(_positive_int(environ, key) is not None for key in (NUM_THREADS_ENV, "OMP_NUM_THREADS"))


def publish_free_cpus(
    environ: MutableMapping[str, str] = os.environ, seconds: float = SAMPLE_SECONDS
) -> Optional[float]:
    """Measure the free cores once and store them in ``environ[SEGTRAIN_FREE_CPUS]`` for this
    process and the ones it starts. Nothing is measured when the figure is already there or
    the thread count is fixed by the environment. Returns the figure (None: not measured)."""
    known = read_free_cpus(environ)
    if known is not None or _explicit_threads(environ):
        return known
    free = measure_free_cpus(seconds)
    if free is not None:
        environ[FREE_CPUS_ENV] = f"{free:.2f}"
    return free


def plan_threads(
    config_threads: int,
    processes: int,
    environ=os.environ,
    usable: Optional[int] = None,
    free: Optional[float] = None,
) -> ThreadPlan:
    """The compute threads of one of ``processes`` processes on this machine (module
    docstring for the order). ``free``: free cores (default: the published figure)."""
    if config_threads < 0:
        raise ConfigError(f"CPU.NUM_THREADS must be >= 0 (0 = from the free cores), got {config_threads}")
    processes = max(1, int(processes))
    usable = usable_cpus() if usable is None else usable
    free = read_free_cpus(environ) if free is None else free

    def plan(threads: int, source: str) -> ThreadPlan:
        return ThreadPlan(threads=threads, source=source, usable=usable, free=free, processes=processes)

    if config_threads > 0:
        return plan(config_threads, "CPU.NUM_THREADS")
    for key in (NUM_THREADS_ENV, "OMP_NUM_THREADS"):
        value = _positive_int(environ, key)
        if value is not None:
            return plan(value, key)
    threads = threads_for(usable if free is None else free, processes, usable)
    return plan(threads, FREE_CORES if free is not None else "usable CPUs, load not measured")


def threads_for(free: float, processes: int, usable: int) -> int:
    """Compute threads of one of ``processes`` processes when ``free`` cores are free:
    ``round(free / processes)``, at least one, at most its share of the usable CPUs."""
    processes = max(1, int(processes))
    return max(1, min(int(min(free, usable) / processes + 0.5), max(1, usable // processes)))


def loader_niceness(environ=os.environ) -> int:
    """The niceness added to data-loader worker processes: ``SEGTRAIN_LOADER_NICENESS`` (0 to
    19), default 10, so that mapping runs on cores the compute threads leave idle, or while the
    main process waits for its batch, instead of preempting a thread of the compute team."""
    text = environ.get(LOADER_NICENESS_ENV, "").strip()
    if not text:
        return DEFAULT_LOADER_NICENESS
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 19:
        raise ConfigError(f"environment variable {LOADER_NICENESS_ENV}={text!r}: expected an integer from 0 to 19")
    return value


def _wait_policy_choice(environ) -> str:
    choice = environ.get(WAIT_POLICY_ENV, "auto").strip().lower() or "auto"
    if choice not in WAIT_POLICIES:
        raise ConfigError(
            f"environment variable {WAIT_POLICY_ENV}={choice!r}: expected one of {', '.join(WAIT_POLICIES)}"
        )
    return choice


def prepare_openmp_env(environ: MutableMapping[str, str] = os.environ, free: Optional[float] = None) -> Dict[str, str]:
    """Set ``OMP_WAIT_POLICY`` in ``environ`` as chosen (module docstring) and return
    ``{"wait_policy": what is in effect, "source": why}``. Call before torch is imported:
    libgomp reads the variable once, when torch loads it; later the choice is reported as
    not applied. ``free``: free cores (default: the published figure)."""
    if environ.get(_WAIT_POLICY_SET_BY) and "OMP_WAIT_POLICY" in environ:  # a launcher chose it for us
        return {"wait_policy": environ["OMP_WAIT_POLICY"], "source": environ[_WAIT_POLICY_SET_BY]}
    if "OMP_WAIT_POLICY" in environ or "GOMP_SPINCOUNT" in environ:
        policy = environ.get("OMP_WAIT_POLICY", "") or f"GOMP_SPINCOUNT={environ['GOMP_SPINCOUNT']}"
        return {"wait_policy": policy, "source": "environment"}
    choice = _wait_policy_choice(environ)
    if choice == "auto":
        free = read_free_cpus(environ) if free is None else free
        busy = free is not None and free < usable_cpus() - _BUSY_MARGIN
        choice = "passive" if busy else "default"
        source = f"{WAIT_POLICY_ENV}=auto, machine {'busy' if busy else 'quiet or not measured'} at start-up"
    else:
        source = f"{WAIT_POLICY_ENV}={choice}"
    if choice == "default":
        return {"wait_policy": "libgomp default", "source": source}
    if "torch" in sys.modules:
        late = f"; {choice.upper()} not applied: torch was already loaded"
        return {"wait_policy": "libgomp default", "source": source + late}
    environ["OMP_WAIT_POLICY"] = choice.upper()
    environ[_WAIT_POLICY_SET_BY] = source
    return {"wait_policy": choice.upper(), "source": source}
