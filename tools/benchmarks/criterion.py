"""``benchmark.py criterion``: criterion forward+backward time and peak memory at official
settings, and the Hungarian matcher alone, against the per-image / per-layer loops of
``tests/reference`` (cases: :mod:`tools.benchmarks.criterion_cases`).

The summary adds ``criterion_equality`` (largest difference between ``SetCriterion`` and the
reference loop over every loss key, same RNG state) and ``matcher_solver``: the share of one
``HungarianMatcher.match_many`` call spent in scipy's ``linear_sum_assignment``. The solver
time is measured outside the matcher: ``HungarianMatcher.cost_matrices`` returns the very
matrices ``match_many`` solves (same seed, same RNG consumption), and the benchmark times
``linear_sum_assignment`` on each (output, image) problem ``C[l, b, :, :n_b]`` itself;
``solver_share`` is that time over the wall time of one ``match_many`` call.
"""

import argparse
import time
from collections import OrderedDict
from typing import Callable, Dict

from . import timing
from .criterion_cases import CRITERION_CASES, DESCRIPTIONS, build_case, m2f_criterion, m2f_inputs

__all__ = ["CRITERION_CASES", "CRITERION_GROUPS", "add_parser", "run"]

# cases compared with each other; each group is timed interleaved on its own, groups one after
# another, so that a large unrelated case (sam2 peaks at ~3 GB) does not disturb a ratio's heap
CRITERION_GROUPS = (("m2f", "m2f_loop"), ("matcher", "matcher_loop"), ("sam3",), ("sam2",))


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "criterion",
        help="criterion / matcher forward+backward time and peak memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    timing.add_common(p, threads=1, warmup=1, repeat=5)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--layers", type=int, default=10, help="predictions: 1 final + (layers-1) aux")
    p.add_argument("--image-size", type=int, default=512, help="GT mask size; predictions at 1/4")
    p.add_argument("--num-points", type=int, default=12544)
    p.add_argument("--gt-per-image", type=int, default=8)
    p.add_argument("--sam3-image-size", type=int, default=1008)
    p.add_argument("--sam2-image-size", type=int, default=1024)
    p.add_argument(
        "--cases", default=",".join(CRITERION_CASES), help="comma-separated subset of " + ", ".join(CRITERION_CASES)
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.set_defaults(func=run)


def _memory_case(name: str, args) -> Dict:
    """Worker mode: build one case and measure the peak memory of one step."""
    import torch

    torch.set_num_threads(args.threads)
    device = timing.resolve_device(args.device)
    try:
        step = build_case(name, args, device)
    except (ImportError, KeyError) as e:  # a family not written / registered yet
        return {"case": name, "skipped": f"{type(e).__name__}: {e}"}
    return {"case": name, "peak_mb": timing.peak_of_step(step, device)}


def _m2f_equality(args) -> Dict[str, float]:
    """Largest |SetCriterion - reference loop| over every loss key, same RNG state."""
    import torch

    from tests.reference.set_criterion import ReferenceSetCriterion

    torch.set_num_threads(args.threads)
    device = timing.resolve_device(args.device)
    crit = m2f_criterion(args, device)
    out, targets = m2f_inputs(args, device)
    torch.manual_seed(args.seed)
    a = crit(out, targets)
    torch.manual_seed(args.seed)
    b = ReferenceSetCriterion.of(crit)(out, targets)
    diffs = {k: float((a[k].detach().double() - b[k].detach().double()).abs()) for k in a}
    rel = {k: diffs[k] / max(abs(float(b[k].detach())), 1e-12) for k in a}
    worst = max(diffs, key=diffs.get)
    return {
        "max_abs_diff": diffs[worst],
        "max_abs_diff_key": worst,
        "max_rel_diff": max(rel.values()),
        "core_loss": float(a["core_loss"].detach()),
        "num_keys": len(a),
    }


def _solver_share(args, device) -> Dict[str, float]:
    """How much of one ``match_many`` call is the assignment solver (scipy), and how many
    problems it solves: one per (output, image with GT) on a [Q, n_b] matrix (module docstring)."""
    import torch
    from scipy.optimize import linear_sum_assignment

    from segtrain.modeling.matcher import HungarianMatcher

    matcher = HungarianMatcher(2.0, 5.0, 5.0, args.num_points)
    out, targets = m2f_inputs(args, device, requires_grad=False)
    layers = [{k: v for k, v in out.items() if k != "aux_outputs"}] + out["aux_outputs"]
    torch.manual_seed(args.seed)
    matcher.match_many(layers, targets)  # warm-up
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    matcher.match_many(layers, targets)
    total = time.perf_counter() - t0
    torch.manual_seed(args.seed)
    costs, sizes = matcher.cost_matrices(layers, targets)
    problems = [costs[l, b, :, :n] for l in range(len(layers)) for b, n in enumerate(sizes) if n > 0]
    spent = 0.0
    for c in problems:
        t0 = time.perf_counter()
        linear_sum_assignment(c)
        spent += time.perf_counter() - t0
    return {
        "solver_calls": len(problems),
        "solver_ms": 1000 * spent,
        "match_many_ms": 1000 * total,
        "solver_share": spent / total,
    }


def run(args) -> int:
    if timing.ran_memory_worker(args, _memory_case):
        return 0
    machine, device, cases = timing.start_run(args, args.cases, CRITERION_CASES, "case")
    if cases is None:
        return 2
    steps: "OrderedDict[str, Callable]" = OrderedDict()
    results: Dict[str, Dict] = OrderedDict()
    for c in cases:
        try:
            steps[c] = build_case(c, args, device)
        except (ImportError, KeyError) as e:
            results[c] = {"case": c, "skipped": f"{type(e).__name__}: {e}"}
    timed: Dict[str, Dict] = {}
    for group in CRITERION_GROUPS:
        group_steps = OrderedDict((c, steps[c]) for c in group if c in steps)
        if group_steps:
            timed.update(timing.interleaved(group_steps, device, args.warmup, args.repeat))
    for c in cases:
        res = results.get(c) or dict(case=c, **timed[c])
        res["description"] = DESCRIPTIONS[c]
        if "skipped" not in res and not args.no_memory:
            mem = timing.run_isolated("criterion", c, args) if device.type == "cpu" else _memory_case(c, args)
            res["peak_mb"] = mem.get("peak_mb")
            if "error" in mem:
                res["memory_error"] = mem["error"]
        results[c] = res
    by = results
    summary: Dict[str, object] = {}
    if "median_ms" in by.get("m2f", {}) and "median_ms" in by.get("m2f_loop", {}):
        summary["criterion_speedup_loop_over_batched"] = by["m2f_loop"]["median_ms"] / by["m2f"]["median_ms"]
        summary["criterion_speedup_cpu_time"] = by["m2f_loop"]["cpu_median_ms"] / by["m2f"]["cpu_median_ms"]
        summary["criterion_equality"] = _m2f_equality(args)
    if "median_ms" in by.get("matcher", {}) and "median_ms" in by.get("matcher_loop", {}):
        summary["matcher_speedup_loop_over_batched"] = by["matcher_loop"]["median_ms"] / by["matcher"]["median_ms"]
        summary["matcher_speedup_cpu_time"] = by["matcher_loop"]["cpu_median_ms"] / by["matcher"]["cpu_median_ms"]
        summary["matcher_solver"] = _solver_share(args, device)
    rep = timing.report("criterion", args, list(results.values()), summary, {"device_name": str(device)}, machine)

    rows = []
    for r in rep["results"]:
        if "median_ms" in r:
            rows.append(
                [
                    r["case"],
                    r["description"],
                    r["median_ms"],
                    r["min_ms"],
                    r["cpu_median_ms"],
                    timing.fmt(r.get("peak_mb")),
                ]
            )
        else:
            rows.append([r["case"], r["description"], "-", "-", "-", r.get("skipped") or r.get("error")])
    timing.print_table(
        f"criterion benchmark on {device} ({args.threads} thread(s)), median of {args.repeat} "
        f"interleaved rounds after {args.warmup} warm-up; load average {machine['loadavg_1_5_15']}",
        ["case", "what", "median ms", "min ms", "CPU ms", "peak MB"],
        rows,
    )
    timing.print_summary(summary)
    return 0
