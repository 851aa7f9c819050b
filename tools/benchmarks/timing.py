"""Timing, memory and report helpers shared by the benchmark subcommands.

Times: :func:`interleaved` runs the compared cases round-robin in one process (round r
starts at case r mod n), so a machine shared with other jobs slows every case alike; wall
time (``time.perf_counter``) and CPU time (``time.process_time``, all threads) are both
kept. Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` above the allocation before
the step; on CPU the peak RSS (VmHWM) above the RSS once the inputs exist, measured in a
fresh ``tools/benchmark.py`` process per case (:func:`run_isolated`) with glibc's large
allocations going straight to mmap, so that freed memory leaves the RSS.
"""

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

__all__ = [
    "BENCHMARK_SCRIPT",
    "add_common",
    "fmt",
    "interleaved",
    "load_cfg",
    "machine_info",
    "ms_stats",
    "parse_choices",
    "peak_of_step",
    "peak_rss_mb",
    "print_summary",
    "print_table",
    "ran_memory_worker",
    "report",
    "reset_peak_rss",
    "resolve_device",
    "rss_mb",
    "run_isolated",
    "start_run",
    "sync",
]

#: the entry point that :func:`run_isolated` starts in a fresh interpreter
BENCHMARK_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmark.py")


def resolve_device(name: str):
    """``--device``: "auto" (CUDA when available), "cpu" or "cuda" -> torch.device."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from segtrain.utils.errors import ConfigError

        raise ConfigError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return dev


def sync(device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_choices(text: str, valid: Sequence[str], what: str) -> Optional[List[str]]:
    """The comma-separated names in ``text``; None after printing a one-line error naming the
    first unknown one and the valid names."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in valid:
            print(f"error: unknown {what} {n!r}; valid: {', '.join(valid)}", file=sys.stderr)
            return None
    return names


def rss_mb() -> float:
    """Current resident set size (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """Peak RSS of this process image in MiB (VmHWM: reset by exec and by :func:`reset_peak_rss`;
    the rusage maximum is not, so a subprocess would inherit its parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def reset_peak_rss() -> None:
    """Make the peak RSS the current RSS (Linux >= 4.0), so transient peaks while the inputs
    were built do not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def machine_info() -> Dict[str, object]:
    """CPU count, load average (1, 5, 15 min), processor, torch version, CUDA device, malloc tuning."""
    import platform

    import torch

    from segtrain.utils.allocator import tune_malloc

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu_count": os.cpu_count(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "processor": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "malloc": tune_malloc() or "glibc settings not changed by segtrain",
    }


def ms_stats(values: Sequence[float]) -> Dict[str, float]:
    """Seconds -> ``{median_ms, min_ms}``."""
    return {"median_ms": 1000 * statistics.median(values), "min_ms": 1000 * min(values)}


def interleaved(
    cases: Mapping[str, Callable[[], Optional[Dict[str, float]]]],
    device,
    warmup: int,
    repeat: int,
    before: Optional[Callable[[str], None]] = None,
) -> Dict[str, Dict]:
    """Time every case ``repeat`` times, round-robin (round r starts at case r mod n).

    A case returns None or ``{part: seconds}`` (sub-timings, reported as ``<part>_median_ms``,
    ``<part>_min_ms`` and ``<part>_times_ms``). On a machine shared with other jobs the
    minimum is the closest to the unloaded time; the median is what the tables quote.
    ``before(name)`` runs untimed before each call (e.g. to set the thread count). Returns
    ``{name: {median_ms, min_ms, cpu_median_ms, times_ms, <part>_median_ms...}}``.
    """
    names = list(cases)
    for _ in range(warmup):
        for n in names:
            if before:
                before(n)
            cases[n]()
    sync(device)
    wall: Dict[str, List[float]] = {n: [] for n in names}
    cpu: Dict[str, List[float]] = {n: [] for n in names}
    parts: Dict[str, Dict[str, List[float]]] = {n: {} for n in names}
    for r in range(repeat):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            if before:
                before(n)
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            extra = cases[n]()
            sync(device)
            wall[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
            for key, v in (extra or {}).items():
                parts[n].setdefault(key, []).append(v)
    out = {}
    for n in names:
        res = ms_stats(wall[n])
        res["cpu_median_ms"] = 1000 * statistics.median(cpu[n])
        res["times_ms"] = [round(1000 * t, 3) for t in wall[n]]
        for key, v in parts[n].items():
            res[f"{key}_median_ms"] = 1000 * statistics.median(v)
            res[f"{key}_min_ms"] = 1000 * min(v)
            res[f"{key}_times_ms"] = [round(1000 * t, 3) for t in v]
        out[n] = res
    return out


def peak_of_step(step: Callable[[], object], device, steps: int = 1) -> float:
    """Peak memory (MiB) of ``steps`` calls above the memory before them: CUDA max allocated,
    or on CPU the process's peak RSS (meaningful in a fresh process only)."""
    import torch

    sync(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = rss_mb()
        reset_peak_rss()
    for _ in range(steps):
        step()
    sync(device)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else peak_rss_mb() - base
    return max(peak, 0.0)


def run_isolated(command: str, case: str, args) -> Dict:
    """``benchmark.py <command> --_case <case> <the user's options>`` in a fresh interpreter;
    the last JSON line of its stdout (``{"case", "error"}`` when it printed none)."""
    cmd = [sys.executable, BENCHMARK_SCRIPT, command, "--_case", case] + args._argv
    # every allocation of 128 KiB or more straight from mmap: freed tensors leave the RSS at
    # once, so the peak RSS is the peak of live memory (glibc's heap would otherwise keep
    # freed chunks resident and count fragmentation as use)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", SEGTRAIN_MALLOC="default")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    err = " ".join((proc.stderr or "").strip().splitlines()[-1:])
    return {"case": case, "error": f"subprocess exited {proc.returncode}: {err}"[:300]}


def ran_memory_worker(args, memory_case: Callable[[str, object], Dict]) -> bool:
    """Worker mode (``--_case``, a fresh process per case for peak memory): print that case's
    memory JSON on stdout and return True; else False."""
    if not args._case:
        return False
    print(json.dumps(memory_case(args._case, args)))
    return True


def add_common(p, *, threads: int, warmup: int, repeat: int, device: str = "cpu") -> None:
    """The options every subcommand has: --device, --threads, --warmup, --repeat, --seed, --output."""
    p.add_argument("--device", default=device, help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=threads, help="torch.set_num_threads")
    p.add_argument("--warmup", type=int, default=warmup, help="untimed rounds first")
    p.add_argument("--repeat", type=int, default=repeat, help="timed rounds (medians quoted)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="", help="write the results as JSON here")
    p.add_argument("--_case", default="", help=argparse.SUPPRESS)


def load_cfg(args):
    """The config of ``args.config_file`` after importing ``args.module`` and merging the KEY VALUE
    overrides ``args.opts``; segtrain's model, criterion and family config keys are registered first."""
    import segtrain.modeling  # noqa: F401
    from segtrain.config import load_config

    return load_config(args.config_file, list(args.opts or []), list(args.module or []))


def start_run(args, selected: str, valid: Sequence[str], kind: str):
    """The common start of a subcommand: machine info, ``--threads``, ``--device`` and the
    parsed comma-separated ``selected`` names. Returns ``(machine, device, names)``; names is
    None (and the error printed) when one is not in ``valid``."""
    import torch

    machine = machine_info()
    torch.set_num_threads(args.threads)
    return machine, resolve_device(args.device), parse_choices(selected, valid, kind)


def report(command: str, args, results, summary, extra_settings: Optional[Dict] = None, machine_before=None) -> Dict:
    """The JSON report ``{command, settings, machine, results, summary}``, written to
    ``--output`` when given; ``machine.loadavg_after`` is the load average at the end."""
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "_case", "_argv", "output")}
    settings.update(extra_settings or {})
    machine = machine_before or machine_info()
    machine["loadavg_after"] = list(machine_info()["loadavg_1_5_15"])
    out = {"command": command, "settings": settings, "machine": machine, "results": results, "summary": summary}
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(out, f, indent=2, default=str)
    return out


def print_table(title: str, headers: List[str], rows: List[List[object]]) -> None:
    from tabulate import tabulate

    print(title)
    print(tabulate(rows, headers=headers, tablefmt="github", floatfmt=".1f"))


def fmt(v, spec: str = ".1f") -> str:
    """``v`` formatted, "-" for None."""
    return "-" if v is None else format(v, spec)


def print_summary(summary: Dict[str, object]) -> None:
    """One line per key: ratios as ``1.23x``, other floats with 4 significant digits, the rest as JSON."""
    for k, v in summary.items():
        if isinstance(v, float) and ("speedup" in k or "ratio" in k):
            print(f"{k}: {v:.2f}x")
        elif isinstance(v, float):
            print(f"{k}: {v:.4g}")
        else:
            print(f"{k}: {json.dumps(v, default=str)}")
