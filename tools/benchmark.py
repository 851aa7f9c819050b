#!/usr/bin/env python
"""segtrain benchmarks, one subcommand each; every one prints a table and, with ``--output``,
writes the settings, the machine (CPU count, load average before / after) and every timing
as JSON. Times are medians over ``--repeat`` rounds after ``--warmup``; ``--threads`` sets
``torch.set_num_threads``; ``--device cpu|cuda|auto``.

    train      forward+backward and optimizer-step time, iterations/s, images/s and peak memory
               of a config (default projects/m2f/r50.yaml; KEY VALUE overrides at the end),
               vs the baseline form of the same model and step; ``no_loss``: the same model's
               forward+backward without the criterion (backward of the sum of every output),
               as the issue's official Mask2Former figure is defined
    data       training-loader images/s with 0, 1, ... worker processes
    eval       COCOEvaluator time per image (process + evaluate) on the config's test set
    criterion  criterion forward+backward time and peak memory at official settings, and the
               matcher alone, vs the per-image / per-layer loops
    msda       multi-scale deformable attention forward+backward: fast path vs the official
               algorithm (``ms_deform_attn_reference``) at 1 and 2 threads
    masks      peak memory of point-sampled vs full-resolution mask losses (SAM 3 ``Masks``,
               1008x1008 masks, 200 queries)

Every ratio is against the straightforward form of the same computation, kept here so the
ratio can be re-measured: per-image and per-layer Python loops (criterion, matcher),
``ms_deform_attn_reference``, the plain per-tensor AdamW loop, full-resolution masks through
plain autograd. Cases compared with each other run interleaved in one process (each round
times every case once, starting at a different case), so a machine shared with other jobs
slows both sides alike; CPU time (``time.process_time``, all threads) is reported next to
wall time for the same reason. Peak memory on CPU is measured in a fresh subprocess per
case (peak RSS, VmHWM, above the RSS once the inputs exist, with glibc's large allocations
going straight to mmap so that freed memory leaves the RSS); on CUDA it is
``torch.cuda.max_memory_allocated`` above the allocation before the step.

Like ``tools/train_net.py``, the tool keeps freed memory for reuse
(``segtrain.utils.allocator.tune_malloc``; ``SEGTRAIN_MALLOC=default`` leaves glibc's
settings alone, e.g. to measure their effect); the JSON's ``machine.malloc`` says which.
"""
import argparse
import copy
import gc
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("segtrain.tools.benchmark")

CRITERION_CASES = ("m2f", "m2f_loop", "matcher", "matcher_loop", "sam3", "sam2")
# cases compared with each other; each group is timed interleaved on its own, groups one after
# another, so that a large unrelated case (sam2 peaks at ~3 GB) does not disturb a ratio's heap
CRITERION_GROUPS = (("m2f", "m2f_loop"), ("matcher", "matcher_loop"), ("sam3",), ("sam2",))
MASKS_CASES = ("points", "full", "full_naive")
TRAIN_VARIANTS = ("segtrain", "baseline", "no_loss", "compiled")


# ---------------------------------------------------------------------------- helpers
def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from segtrain.utils.errors import ConfigError

        raise ConfigError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return dev


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _parse_choices(text: str, valid: Sequence[str], what: str) -> Optional[List[str]]:
    """The comma-separated names in ``text``; None after printing a one-line error naming the
    first unknown one and the valid names."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    for n in names:
        if n not in valid:
            print(f"error: unknown {what} {n!r}; valid: {', '.join(valid)}", file=sys.stderr)
            return None
    return names


def _rss_mb() -> float:
    """Current resident set size (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """Peak RSS of this process image (VmHWM: reset by exec and by ``_reset_peak_rss``; the
    rusage maximum is not, so a subprocess would inherit its parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _reset_peak_rss() -> None:
    """Make the peak RSS the current RSS (Linux >= 4.0), so transient peaks while the inputs
    were built do not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _machine() -> Dict[str, object]:
    import platform

    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    from segtrain.utils.allocator import tune_malloc

    return {"cpu_count": os.cpu_count(), "loadavg_1_5_15": [round(x, 2) for x in load],
            "processor": platform.processor() or platform.machine(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "malloc": tune_malloc() or "glibc settings not changed by segtrain"}


def _ms(values: Sequence[float]) -> Dict[str, float]:
    return {"median_ms": 1000 * statistics.median(values), "min_ms": 1000 * min(values)}


def interleaved(cases: "OrderedDict[str, Callable[[], Optional[Dict[str, float]]]]", device, warmup: int,
                repeat: int, before: Optional[Callable[[str], None]] = None) -> Dict[str, Dict]:
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
    _sync(device)
    wall: Dict[str, List[float]] = {n: [] for n in names}
    cpu: Dict[str, List[float]] = {n: [] for n in names}
    parts: Dict[str, Dict[str, List[float]]] = {n: {} for n in names}
    for r in range(repeat):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            if before:
                before(n)
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            extra = cases[n]()
            _sync(device)
            wall[n].append(time.perf_counter() - t0)
            cpu[n].append(time.process_time() - c0)
            for key, v in (extra or {}).items():
                parts[n].setdefault(key, []).append(v)
    out = {}
    for n in names:
        res = _ms(wall[n])
        res["cpu_median_ms"] = 1000 * statistics.median(cpu[n])
        res["times_ms"] = [round(1000 * t, 3) for t in wall[n]]
        for key, v in parts[n].items():
            res[f"{key}_median_ms"] = 1000 * statistics.median(v)
            res[f"{key}_min_ms"] = 1000 * min(v)
            res[f"{key}_times_ms"] = [round(1000 * t, 3) for t in v]
        out[n] = res
    return out


def _peak_of_step(step: Callable[[], object], device, steps: int = 1) -> float:
    """Peak memory (MiB) of ``steps`` calls above the memory before them: CUDA max allocated,
    or on CPU the process's peak RSS (meaningful in a fresh process only)."""
    import torch

    _sync(device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_mb()
        _reset_peak_rss()
    for _ in range(steps):
        step()
    _sync(device)
    peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20 if device.type == "cuda" else _peak_rss_mb() - base
    return max(peak, 0.0)


def _run_isolated(command: str, case: str, args) -> Dict:
    """``benchmark.py <command> --_case <case> <the user's options>`` in a fresh interpreter;
    the last JSON line of its stdout."""
    cmd = [sys.executable, os.path.abspath(__file__), command, "--_case", case] + args._argv
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


def _add_common(p, *, threads: int, warmup: int, repeat: int, device: str = "cpu") -> None:
    p.add_argument("--device", default=device, help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=threads, help="torch.set_num_threads")
    p.add_argument("--warmup", type=int, default=warmup, help="untimed rounds first")
    p.add_argument("--repeat", type=int, default=repeat, help="timed rounds (medians quoted)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="", help="write the results as JSON here")
    p.add_argument("--_case", default="", help=argparse.SUPPRESS)


def _report(command: str, args, results, summary, extra_settings: Optional[Dict] = None, machine_before=None) -> Dict:
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "_case", "_argv", "output")}
    settings.update(extra_settings or {})
    machine = machine_before or _machine()
    machine["loadavg_after"] = list(_machine()["loadavg_1_5_15"])
    report = {"command": command, "settings": settings, "machine": machine, "results": results, "summary": summary}
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2, default=str)
    return report


def _print_table(title: str, headers: List[str], rows: List[List[object]]) -> None:
    from tabulate import tabulate

    print(title)
    print(tabulate(rows, headers=headers, tablefmt="github", floatfmt=".1f"))


def _fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _print_summary(summary: Dict[str, object]) -> None:
    for k, v in summary.items():
        if isinstance(v, float) and ("speedup" in k or "ratio" in k):
            print(f"{k}: {v:.2f}x")
        elif isinstance(v, float):
            print(f"{k}: {v:.4g}")
        else:
            print(f"{k}: {json.dumps(v, default=str)}")


# ---------------------------------------------------------------------------- subcommand: criterion
def _m2f_inputs(args, device, requires_grad=True):
    """Random Mask2Former predictions (10 outputs) and COCO-like targets, seeded."""
    import torch

    g = torch.Generator().manual_seed(args.seed)
    B, Q, K, L = args.batch, args.queries, args.classes, args.layers
    h = w = args.image_size // 4
    H = W = args.image_size

    def layer():
        return {"pred_logits": torch.randn(B, Q, K + 1, generator=g).to(device).requires_grad_(requires_grad),
                "pred_masks": (2 * torch.randn(B, Q, h, w, generator=g)).to(device).requires_grad_(requires_grad)}

    out = layer()
    out["aux_outputs"] = [layer() for _ in range(L - 1)]
    targets = []
    for _ in range(B):
        n = args.gt_per_image
        masks = torch.zeros(n, H, W, dtype=torch.bool)
        for i in range(n):  # random rectangles, like instance masks
            y0, x0 = (int(v) for v in torch.randint(0, H // 2, (2,), generator=g))
            hh, ww = (int(v) for v in torch.randint(8, H // 2, (2,), generator=g))
            masks[i, y0:y0 + hh, x0:x0 + ww] = True
        targets.append({"labels": torch.randint(0, K, (n,), generator=g).to(device), "masks": masks.to(device)})
    return out, targets


def _m2f_criterion(args, device):
    from segtrain.modeling.criterion import SetCriterion
    from segtrain.modeling.matcher import HungarianMatcher

    matcher = HungarianMatcher(2.0, 5.0, 5.0, args.num_points)
    return SetCriterion(args.classes, matcher, {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 5.0}, 0.1,
                        ["labels", "masks"], args.num_points, 3.0, 0.75).to(device)


def _case_m2f(args, device, reference: bool):
    import torch

    from segtrain.modeling.criterion import CORE_LOSS_KEY

    crit = _m2f_criterion(args, device)
    out, targets = _m2f_inputs(args, device)
    leaves = [out["pred_logits"], out["pred_masks"]] + [t for a in out["aux_outputs"] for t in a.values()]
    fn = crit.forward_reference if reference else crit.forward

    def step():
        torch.manual_seed(args.seed)
        losses = fn(out, targets)
        losses[CORE_LOSS_KEY].backward()
        for t in leaves:
            t.grad = None

    return step


def _case_matcher(args, device, reference: bool):
    import torch

    from segtrain.modeling.matcher import HungarianMatcher

    matcher = HungarianMatcher(2.0, 5.0, 5.0, args.num_points)
    out, targets = _m2f_inputs(args, device, requires_grad=False)
    layers = [{k: v for k, v in out.items() if k != "aux_outputs"}] + out["aux_outputs"]

    def step():
        torch.manual_seed(args.seed)
        if reference:
            for layer in layers:
                matcher.forward_per_image(layer, targets)
        else:
            matcher.match_many(layers, targets)

    return step


def _case_sam3(args, device):
    """Sam3LossWrapper at its official fine-tuning settings (config defaults), 200 queries,
    6 decoder outputs (5 aux), one-to-many copies, masks at 1/4 of 1008."""
    import torch

    from segtrain.config import get_cfg
    from segtrain.modeling.criterion import build_criterion
    from segtrain.modeling.criterion.targets import targets_to_find_packed
    from segtrain.structures.boxes import box_cxcywh_to_xyxy

    cfg = get_cfg()
    cfg.MODEL.CRITERION.NAME = "Sam3LossWrapper"
    cfg.MODEL.MATCHER.NAME = "BinaryHungarianMatcherV2"
    crit = build_criterion(cfg).to(device)
    g = torch.Generator().manual_seed(args.seed)
    B, Q, S = args.batch, 200, args.sam3_image_size
    h = S // 4

    def out(masks: bool, suffix: str = ""):
        boxes = torch.rand(B, Q, 4, generator=g) * 0.5 + 0.25
        d = {"pred_logits": torch.randn(B, Q, 1, generator=g), "pred_boxes": boxes,
             "pred_boxes_xyxy": box_cxcywh_to_xyxy(boxes)}
        if masks:
            d["pred_masks"] = torch.randn(B, Q, h, h, generator=g)
        return {k + suffix: v.to(device).requires_grad_() for k, v in d.items()}

    outputs = out(True)
    outputs.update(out(True, "_o2m"))
    outputs["presence_logit_dec"] = torch.randn(B, 1, generator=g).to(device).requires_grad_()
    outputs["aux_outputs"] = []
    for _ in range(5):
        a = out(False)
        a.update(out(False, "_o2m"))
        outputs["aux_outputs"].append(a)
    per_image = []
    for b in range(B):
        n = args.gt_per_image if b % 2 == 0 else 0  # one find without its concept (presence negative)
        masks = torch.zeros(n, S, S, dtype=torch.bool)
        boxes = torch.zeros(n, 4)
        for i in range(n):
            y0, x0 = (int(v) for v in torch.randint(0, S // 2, (2,), generator=g))
            hh, ww = (int(v) for v in torch.randint(16, S // 2, (2,), generator=g))
            masks[i, y0:y0 + hh, x0:x0 + ww] = True
            boxes[i] = torch.tensor([x0, y0, x0 + ww, y0 + hh], dtype=torch.float32)
        per_image.append({"labels": torch.zeros(n, dtype=torch.long), "masks": masks, "boxes": boxes})
    packed = targets_to_find_packed(per_image, [(S, S)] * B)
    packed = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in packed.items()}
    leaves = [v for v in outputs.values() if torch.is_tensor(v)] + \
        [v for a in outputs["aux_outputs"] for v in a.values()]

    def step():
        torch.manual_seed(args.seed)
        losses = crit([outputs], [packed])
        losses["core_loss"].backward()
        for t in leaves:
            t.grad = None

    return step


def _case_sam2(args, device):
    """MultiStepMultiMasksAndIous at SAM 2.1 fine-tuning settings: 8 frames, 3 objects,
    3 masks per step, one step per frame (plus corrections on 2 frames), high-res masks."""
    import torch

    from segtrain.config import get_cfg
    from segtrain.modeling.criterion import build_criterion

    cfg = get_cfg()
    cfg.MODEL.CRITERION.NAME = "MultiStepMultiMasksAndIous"
    crit = build_criterion(cfg).to(device)
    g = torch.Generator().manual_seed(args.seed)
    T, N, M, S = 8, 3, 3, args.sam2_image_size
    outs, leaves = [], []
    for t in range(T):
        steps = 3 if t in (1, 4) else 1
        d = {"multistep_pred_multimasks_high_res": [torch.randn(N, M, S, S, generator=g).to(device).requires_grad_()
                                                    for _ in range(steps)],
             "multistep_pred_ious": [torch.rand(N, M, generator=g).to(device).requires_grad_() for _ in range(steps)],
             "multistep_object_score_logits": [torch.randn(N, 1, generator=g).to(device).requires_grad_()
                                               for _ in range(steps)]}
        leaves += [x for v in d.values() for x in v]
        outs.append(d)
    targets = (torch.rand(T, N, S, S, generator=g) > 0.5).float().to(device)

    def step():
        losses = crit(outs, targets)
        losses["core_loss"].backward()
        for x in leaves:
            x.grad = None

    return step


def _build_case(name: str, args, device):
    if name == "m2f":
        return _case_m2f(args, device, reference=False)
    if name == "m2f_loop":
        return _case_m2f(args, device, reference=True)
    if name == "matcher":
        return _case_matcher(args, device, reference=False)
    if name == "matcher_loop":
        return _case_matcher(args, device, reference=True)
    if name == "sam3":
        return _case_sam3(args, device)
    if name == "sam2":
        return _case_sam2(args, device)
    raise ValueError(f"unknown case {name!r}; valid: {', '.join(CRITERION_CASES)}")


_DESCRIPTIONS = {
    "m2f": "SetCriterion batched (fwd+bwd)",
    "m2f_loop": "SetCriterion per-image/per-layer loop (fwd+bwd)",
    "matcher": "HungarianMatcher.match_many, all outputs",
    "matcher_loop": "HungarianMatcher.forward_per_image per output",
    "sam3": "Sam3LossWrapper (fwd+bwd)",
    "sam2": "MultiStepMultiMasksAndIous (fwd+bwd)",
}


def _criterion_memory_case(name: str, args) -> Dict:
    """Worker mode: build one case and measure the peak memory of one step."""
    import torch

    torch.set_num_threads(args.threads)
    device = _device(args.device)
    try:
        step = _build_case(name, args, device)
    except (ImportError, KeyError) as e:  # a family not written / registered yet
        return {"case": name, "skipped": f"{type(e).__name__}: {e}"}
    return {"case": name, "peak_mb": _peak_of_step(step, device)}


def _m2f_equality(args) -> Dict[str, float]:
    """Largest |batched - reference| over every loss key, same RNG state."""
    import torch

    torch.set_num_threads(args.threads)
    device = _device(args.device)
    crit = _m2f_criterion(args, device)
    out, targets = _m2f_inputs(args, device)
    torch.manual_seed(args.seed)
    a = crit(out, targets)
    torch.manual_seed(args.seed)
    b = crit.forward_reference(out, targets)
    diffs = {k: float((a[k].detach().double() - b[k].detach().double()).abs()) for k in a}
    rel = {k: diffs[k] / max(abs(float(b[k].detach())), 1e-12) for k in a}
    worst = max(diffs, key=diffs.get)
    return {"max_abs_diff": diffs[worst], "max_abs_diff_key": worst, "max_rel_diff": max(rel.values()),
            "core_loss": float(a["core_loss"].detach()), "num_keys": len(a)}


def _solver_share(args, device) -> Dict[str, float]:
    """How much of one batched matching call is the assignment solver (scipy), and how many
    problems it solves: the solver runs once per (output, image) on a [Q, n_b] matrix."""
    import torch

    from segtrain.modeling.matcher import HungarianMatcher
    from segtrain.modeling.matcher import hungarian as hungarian_mod

    matcher = HungarianMatcher(2.0, 5.0, 5.0, args.num_points)
    out, targets = _m2f_inputs(args, device, requires_grad=False)
    layers = [{k: v for k, v in out.items() if k != "aux_outputs"}] + out["aux_outputs"]
    solve = hungarian_mod.linear_sum_assignment
    spent = [0.0, 0]

    def timed(c):
        t0 = time.perf_counter()
        r = solve(c)
        spent[0] += time.perf_counter() - t0
        spent[1] += 1
        return r

    torch.manual_seed(args.seed)
    matcher.match_many(layers, targets)  # warm-up
    hungarian_mod.linear_sum_assignment = timed
    try:
        spent[:] = [0.0, 0]
        t0 = time.perf_counter()
        torch.manual_seed(args.seed)
        matcher.match_many(layers, targets)
        total = time.perf_counter() - t0
    finally:
        hungarian_mod.linear_sum_assignment = solve
    return {"solver_calls": spent[1], "solver_ms": 1000 * spent[0], "match_many_ms": 1000 * total,
            "solver_share": spent[0] / total}


def add_criterion_parser(subparsers) -> None:
    p = subparsers.add_parser("criterion", help="criterion / matcher forward+backward time and peak memory",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p, threads=1, warmup=1, repeat=5)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--classes", type=int, default=80)
    p.add_argument("--layers", type=int, default=10, help="predictions: 1 final + (layers-1) aux")
    p.add_argument("--image-size", type=int, default=512, help="GT mask size; predictions at 1/4")
    p.add_argument("--num-points", type=int, default=12544)
    p.add_argument("--gt-per-image", type=int, default=8)
    p.add_argument("--sam3-image-size", type=int, default=1008)
    p.add_argument("--sam2-image-size", type=int, default=1024)
    p.add_argument("--cases", default=",".join(CRITERION_CASES), help="comma-separated subset of " +
                   ", ".join(CRITERION_CASES))
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.set_defaults(func=run_criterion)


def _ran_memory_worker(args, memory_case: Callable) -> bool:
    """Worker mode (``--_case``, a fresh process per case for peak memory): print that case's
    memory JSON on stdout and return True; else False."""
    if not args._case:
        return False
    print(json.dumps(memory_case(args._case, args)))
    return True


def _start_run(args, selected: str, valid: Sequence[str], kind: str):
    """The common start of a subcommand: machine info, ``--threads``, ``--device`` and the
    parsed comma-separated ``selected`` names. Returns ``(machine, device, names)``; names is
    None (and the error printed) when one is not in ``valid``."""
    import torch

    machine = _machine()
    torch.set_num_threads(args.threads)
    return machine, _device(args.device), _parse_choices(selected, valid, kind)


def run_criterion(args) -> int:
    if _ran_memory_worker(args, _criterion_memory_case):
        return 0
    machine, device, cases = _start_run(args, args.cases, CRITERION_CASES, "case")
    if cases is None:
        return 2
    steps: "OrderedDict[str, Callable]" = OrderedDict()
    results: Dict[str, Dict] = OrderedDict()
    for c in cases:
        try:
            steps[c] = _build_case(c, args, device)
        except (ImportError, KeyError) as e:
            results[c] = {"case": c, "skipped": f"{type(e).__name__}: {e}"}
    timed: Dict[str, Dict] = {}
    for group in CRITERION_GROUPS:
        group_steps = OrderedDict((c, steps[c]) for c in group if c in steps)
        if group_steps:
            timed.update(interleaved(group_steps, device, args.warmup, args.repeat))
    for c in cases:
        res = results.get(c) or dict(case=c, **timed[c])
        res["description"] = _DESCRIPTIONS[c]
        if "skipped" not in res and not args.no_memory:
            mem = _run_isolated("criterion", c, args) if device.type == "cpu" else _criterion_memory_case(c, args)
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
    report = _report("criterion", args, list(results.values()), summary, {"device_name": str(device)}, machine)

    rows = []
    for r in report["results"]:
        if "median_ms" in r:
            rows.append([r["case"], r["description"], r["median_ms"], r["min_ms"], r["cpu_median_ms"],
                         _fmt(r.get("peak_mb"))])
        else:
            rows.append([r["case"], r["description"], "-", "-", "-", r.get("skipped") or r.get("error")])
    _print_table(f"criterion benchmark on {device} ({args.threads} thread(s)), median of {args.repeat} interleaved "
                 f"rounds after {args.warmup} warm-up; load average {machine['loadavg_1_5_15']}",
                 ["case", "what", "median ms", "min ms", "CPU ms", "peak MB"], rows)
    _print_summary(summary)
    return 0


# ---------------------------------------------------------------------------- subcommand: msda
def _msda_inputs(px: int, batch: int, seed: int, device):
    """Mask2Former encoder inputs for a px x px image: levels at strides 32, 16, 8 (coarsest
    first, as the pixel decoder orders them), M=8 heads, D=32, P=4 points; queries = every
    pixel of every level; locations = pixel centres + offsets of a few pixels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    shapes = [(max(px // s, 1), max(px // s, 1)) for s in (32, 16, 8)]
    S = sum(h * w for h, w in shapes)
    M, D, L, P = 8, 32, len(shapes), 4
    centres = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        centres.append(torch.stack((xs.flatten() / w, ys.flatten() / h), -1))
    ref = torch.cat(centres)  # [S, 2]
    size = torch.tensor([[w, h] for h, w in shapes], dtype=torch.float32)  # [L, 2] (x, y) normalizer
    offsets = torch.randn(batch, S, M, L, P, 2, generator=g) * 2.0 / size[None, None, None, :, None, :]
    value = torch.randn(batch, S, M, D, generator=g)
    loc = ref[None, :, None, None, None, :] + offsets
    attn = torch.randn(batch, S, M, L * P, generator=g).softmax(-1).view(batch, S, M, L, P)
    grad = torch.randn(batch, S, M * D, generator=g)
    to = lambda t: t.to(device).requires_grad_(t is not grad)  # noqa: E731
    return shapes, to(value), to(loc), to(attn), grad.to(device)


def add_msda_parser(subparsers) -> None:
    p = subparsers.add_parser("msda", help="MSDeformAttn fast path vs the official algorithm",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p, threads=2, warmup=1, repeat=5)
    p.add_argument("--sizes", default="128x2,128x8,256x2",
                   help="comma-separated IMAGExBATCH (encoder levels at strides 8, 16, 32 of the image)")
    p.add_argument("--threads-list", default="1,2", help="thread counts to compare (overrides --threads)")
    p.set_defaults(func=run_msda)


def run_msda(args) -> int:
    import torch

    from segtrain.layers import ms_deform_attn as msda_mod

    machine = _machine()
    device = _device(args.device)
    threads = [int(t) for t in args.threads_list.split(",") if t.strip()]
    sizes = []
    for s in args.sizes.split(","):
        px, _, b = s.strip().partition("x")
        sizes.append((int(px), int(b or 2)))
    steps: "OrderedDict[str, Callable]" = OrderedDict()
    setting: Dict[str, tuple] = {}

    def make(fn, shapes, value, loc, attn, grad):
        def step():
            out = fn(value, shapes, loc, attn)
            out.backward(grad)
            value.grad = loc.grad = attn.grad = None
        return step

    for px, b in sizes:
        shapes, value, loc, attn, grad = _msda_inputs(px, b, args.seed, device)
        for t in threads:
            # "fast_coo": the value gradient as one COO sparse.mm, which sorts and adds on one
            # thread (the path before the parallel sorted-CSR one; "fast" picks by thread count)
            variants = [("fast", "auto"), ("reference", "auto")] + ([("fast_coo", "coo")] if t > 1 else [])
            for name, chunks in variants:
                key = f"{px}x{b}/{t}t/{name}"
                fn = msda_mod.ms_deform_attn_reference if name == "reference" else msda_mod.ms_deform_attn_core
                steps[key] = make(fn, shapes, value, loc, attn, grad)
                setting[key] = (px, b, t, name, chunks)

    def before(key):
        msda_mod.VALUE_GRAD_PATH = setting[key][4]

    # interleaved within each thread count, thread counts one after another (switching the
    # OpenMP team size between calls would tax every call with its restart)
    default_path = msda_mod.VALUE_GRAD_PATH
    timed: Dict[str, Dict] = {}
    try:
        for t in threads:
            group = OrderedDict((k, v) for k, v in steps.items() if setting[k][2] == t)
            torch.set_num_threads(t)
            timed.update(interleaved(group, device, args.warmup, args.repeat, before))
    finally:
        msda_mod.VALUE_GRAD_PATH = default_path
    results, rows = [], []
    for key in steps:
        res = timed[key]
        px, b, t, name, _ = setting[key]
        results.append(dict(size=f"{px}x{b}", image=px, batch=b, threads=t, case=name, **res))
        rows.append([f"{px}x{px}", b, t, name, res["median_ms"], res["min_ms"], res["cpu_median_ms"]])
    summary: Dict[str, object] = {}
    for px, b in sizes:
        for t in threads:
            f, r = timed[f"{px}x{b}/{t}t/fast"], timed[f"{px}x{b}/{t}t/reference"]
            summary[f"{px}x{b}_{t}t_speedup_reference_over_fast"] = r["median_ms"] / f["median_ms"]
            coo = timed.get(f"{px}x{b}/{t}t/fast_coo")
            if coo:
                summary[f"{px}x{b}_{t}t_speedup_parallel_value_grad"] = coo["median_ms"] / f["median_ms"]
    _report("msda", args, results, summary, {"device_name": str(device)}, machine)
    _print_table(f"MSDeformAttn forward+backward on {device} (M=8, D=32, L=3, P=4, queries = all pixels of strides "
                 f"8/16/32), median of {args.repeat} interleaved rounds; load average {machine['loadavg_1_5_15']}",
                 ["image", "batch", "threads", "case", "median ms", "min ms", "CPU ms"], rows)
    _print_summary(summary)
    return 0


# ---------------------------------------------------------------------------- subcommand: masks
def _masks_case(name: str, args, device):
    """One step of a mask loss at SAM 3 scale: pred_masks [B, Q, S/4, S/4], n GT masks per
    image at S x S, each matched to a distinct query. Returns (step, K matched masks, the
    prediction tensor the step back-propagates into)."""
    import torch
    import torch.nn.functional as F

    from segtrain.layers.losses import dice_loss, sigmoid_focal_loss
    from segtrain.modeling.criterion import Masks

    g = torch.Generator().manual_seed(args.seed)
    B, Q, S, n = args.batch, args.queries, args.image_size, args.gt_per_image
    h = S // 4
    pred = torch.randn(B, Q, h, h, generator=g).to(device).requires_grad_()
    masks = torch.zeros(B * n, S, S)
    for i in range(B * n):
        y0, x0 = (int(v) for v in torch.randint(0, S // 2, (2,), generator=g))
        hh, ww = (int(v) for v in torch.randint(min(16, S // 4), S // 2, (2,), generator=g))
        masks[i, y0:y0 + hh, x0:x0 + ww] = 1.0
    masks = masks.to(device)
    b_idx = torch.arange(B).repeat_interleave(n).to(device)
    q_idx = torch.cat([torch.randperm(Q, generator=g)[:n] for _ in range(B)]).to(device)
    t_idx = torch.arange(B * n, device=device)
    targets = {"masks": masks, "is_valid_mask": torch.ones(B * n, dtype=torch.bool, device=device)}
    num_boxes = float(B * n)
    if name == "points":
        loss_fn = Masks(weight_dict={"loss_mask": 200.0, "loss_dice": 10.0}, num_sample_points=args.num_points,
                        oversample_ratio=3.0, importance_sample_ratio=0.75)
    elif name == "full":
        loss_fn = Masks(weight_dict={"loss_mask": 200.0, "loss_dice": 10.0})
    elif name != "full_naive":
        raise ValueError(f"unknown case {name!r}; valid: {', '.join(MASKS_CASES)}")

    def step():
        torch.manual_seed(args.seed)
        if name == "full_naive":  # the straightforward form: upsample, then the losses through autograd
            src = F.interpolate(pred[b_idx, q_idx][:, None], size=(S, S), mode="bilinear", align_corners=False)
            x, t = src.flatten(1), masks[t_idx].flatten(1)
            losses = {"loss_mask": sigmoid_focal_loss(x, t, num_boxes), "loss_dice": dice_loss(x, t, num_boxes)}
        else:
            losses = loss_fn.get_loss({"pred_masks": pred}, targets, (b_idx, q_idx, t_idx), num_boxes)
        (200.0 * losses["loss_mask"] + 10.0 * losses["loss_dice"]).backward()
        pred.grad = None
        return None

    return step, B * n, pred


def add_masks_parser(subparsers) -> None:
    p = subparsers.add_parser("masks", help="peak memory of point-sampled vs full-resolution mask losses",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p, threads=1, warmup=1, repeat=3)
    p.add_argument("--image-size", type=int, default=1008, help="GT mask size; predictions at 1/4")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--gt-per-image", type=int, default=16, help="matched masks per image")
    p.add_argument("--num-points", type=int, default=12544, help="points of the point-sampled case")
    p.add_argument("--cases", default=",".join(MASKS_CASES))
    p.set_defaults(func=run_masks)


def _masks_memory_case(name: str, args) -> Dict:
    import torch

    torch.set_num_threads(args.threads)
    device = _device(args.device)
    step, _, _ = _masks_case(name, args, device)
    return {"case": name, "peak_mb": _peak_of_step(step, device)}


def run_masks(args) -> int:
    if _ran_memory_worker(args, _masks_memory_case):
        return 0
    machine, device, cases = _start_run(args, args.cases, MASKS_CASES, "case")
    if cases is None:
        return 2
    results, rows = [], []
    K = args.batch * args.gt_per_image
    copy_mb = K * args.image_size ** 2 * 4 / 2**20  # one float32 [K, S, S] upsampled copy
    # memory first, each case alone (fresh process on CPU), then the times interleaved
    mem = {c: (_run_isolated("masks", c, args) if device.type == "cpu" else _masks_memory_case(c, args)) for c in cases}
    steps = OrderedDict((c, _masks_case(c, args, device)[0]) for c in cases)
    timed = interleaved(steps, device, args.warmup, args.repeat)
    desc = {"points": f"Masks, {args.num_points} importance-sampled points", "full": "Masks, full resolution (chunked)",
            "full_naive": "interpolate + focal + dice through autograd"}
    for c in cases:
        peak = mem[c].get("peak_mb")
        res = dict(case=c, description=desc[c], peak_mb=peak, upsampled_copies=None if peak is None else peak / copy_mb,
                   **timed[c])
        if "error" in mem[c]:
            res["memory_error"] = mem[c]["error"]
        results.append(res)
        rows.append([c, desc[c], _fmt(peak, ".0f"), _fmt(res["upsampled_copies"], ".2f"), res["median_ms"],
                     res["cpu_median_ms"]])
    by = {r["case"]: r for r in results}
    summary: Dict[str, object] = {"one_upsampled_copy_mb": copy_mb, "matched_masks": K}
    if by.get("full", {}).get("peak_mb") and by.get("points", {}).get("peak_mb"):
        summary["memory_ratio_full_over_points"] = by["full"]["peak_mb"] / by["points"]["peak_mb"]
    if by.get("full_naive", {}).get("peak_mb") and by.get("full", {}).get("peak_mb"):
        summary["memory_ratio_naive_over_full"] = by["full_naive"]["peak_mb"] / by["full"]["peak_mb"]
    if "full_naive" in by and "full" in by:
        summary["time_ratio_naive_over_full"] = by["full_naive"]["median_ms"] / by["full"]["median_ms"]
    _report("masks", args, results, summary, {"device_name": str(device)}, machine)
    _print_table(f"mask losses (fwd+bwd) on {device}: {K} matched masks of {args.image_size}x{args.image_size}, "
                 f"{args.queries} queries at 1/4 resolution; one upsampled copy = {copy_mb:.0f} MB; load average "
                 f"{machine['loadavg_1_5_15']}", ["case", "what", "peak MB", "upsampled copies", "median ms", "CPU ms"],
                 rows)
    _print_summary(summary)
    return 0


# ---------------------------------------------------------------------------- subcommand: train
def _train_cfg(args, device, variant: str):
    from segtrain.config import load_config

    cfg = load_config(args.config_file, list(args.opts or []), list(args.module or []))
    cfg.defrost()
    cfg.MODEL.DEVICE = str(device)
    cfg.DATALOADER.NUM_WORKERS = 0  # batches are fetched before timing
    if variant == "compiled":
        cfg.MODEL.COMPILE = True
    cfg.freeze()
    return cfg


def _plain_optimizer(opt):
    """The same optimizer class and groups without fused / foreach kernels: the per-tensor loop."""
    groups = []
    for g in opt.param_groups:
        g = dict(g)
        for key, value in (("fused", None), ("foreach", False)):
            if key in g:
                g[key] = value
        groups.append(g)
    return type(opt)(groups)


def _train_variant(args, device, variant: str, batches):
    """(model, optimizer, clipper) of one variant. "baseline": the same model with the official
    MSDeformAttn algorithm, the per-image / per-layer criterion loop, and the plain AdamW loop."""
    import torch

    from segtrain.layers.ms_deform_attn import MSDeformAttn
    from segtrain.modeling import build_model
    from segtrain.solver import build_gradient_clipper, build_optimizer

    cfg = _train_cfg(args, device, variant)
    torch.manual_seed(args.seed)
    model = build_model(cfg).to(device)
    model.train()
    opt = build_optimizer(cfg, model)
    if variant == "baseline":
        for m in model.modules():
            if isinstance(m, MSDeformAttn):
                m.impl = "reference"
        if getattr(model, "criterion", None) is not None and hasattr(model.criterion, "batched"):
            model.criterion.batched = False
        opt = _plain_optimizer(opt)
    return model, opt, build_gradient_clipper(cfg)


def _model_only_loss(model, batch):
    """The "no loss" step of a MaskFormer-style model: backbone + pixel decoder + transformer
    decoder forward, and the sum of every output tensor (all 10 predictions' class logits and
    mask logits) as the scalar to back-propagate -- the model's whole forward and backward,
    without the matcher and the criterion."""
    import torch

    if not all(hasattr(model, a) for a in ("preprocess_image", "backbone", "sem_seg_head")):
        raise SystemExit(f"benchmark.py train: variant no_loss needs a MaskFormer-style model (preprocess_image, "
                         f"backbone, sem_seg_head); {type(model).__name__} has not")
    images = model.preprocess_image(batch)
    outputs = model.sem_seg_head(model.backbone(images.tensor))
    layers = [outputs] + list(outputs.get("aux_outputs") or [])
    return torch.stack([v.float().sum() for layer in layers for v in layer.values() if torch.is_tensor(v)]).sum()


def _train_step(model, opt, clip, batches, device, breakdown: bool, model_only: bool = False):
    """One training step on the next batch; returns {fwd_bwd, optim, and forward parts} seconds.
    ``model_only``: the loss is :func:`_model_only_loss` (no criterion)."""
    from segtrain.modeling.criterion import CORE_LOSS_KEY

    params = [p for g in opt.param_groups for p in g["params"]]
    marks: Dict[str, float] = {}
    counter = [0]
    if breakdown:  # forward time of each part, from hooks (sequential parts)
        head = getattr(model, "sem_seg_head", None)
        parts = [("backbone", getattr(model, "backbone", None)), ("head", head),
                 ("predictor", getattr(head, "predictor", None)), ("criterion", getattr(model, "criterion", None))]
        # on CPU the parts are CPU time (robust on a shared machine), on CUDA wall time after a sync
        clock = time.process_time if device.type == "cpu" else time.perf_counter

        def mark(key: str):
            def hook(*_):  # returns None: the module's inputs / outputs stay as they are
                _sync(device)
                marks[key] = clock()
            return hook

        for name, mod in parts:
            if mod is not None:
                mod.register_forward_pre_hook(mark(name + "<"))
                mod.register_forward_hook(mark(name + ">"))

    def step():
        batch = batches[counter[0] % len(batches)]
        counter[0] += 1
        t0, c0 = time.perf_counter(), time.process_time()
        loss = _model_only_loss(model, batch) if model_only else model(batch)[CORE_LOSS_KEY]
        t_fwd, c_fwd = time.perf_counter(), time.process_time()
        loss.backward()
        _sync(device)
        t1, c1 = time.perf_counter(), time.process_time()
        if clip is not None:
            clip(params)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        t2, c2 = time.perf_counter(), time.process_time()
        out = {"fwd_bwd": t1 - t0, "optim": t2 - t1, "fwd_bwd_cpu": c1 - c0, "optim_cpu": c2 - c1}
        if breakdown and marks:
            span = {n[:-1]: marks[n[:-1] + ">"] - marks[n[:-1] + "<"] for n in marks if n.endswith("<")
                    and n[:-1] + ">" in marks}
            out["fwd_backbone"] = span.get("backbone", 0.0)
            if "head" in span:
                out["fwd_pixel_decoder"] = span["head"] - span.get("predictor", 0.0)
                out["fwd_transformer_decoder"] = span.get("predictor", 0.0)
            out["fwd_criterion"] = span.get("criterion", 0.0)
            if device.type == "cpu":
                out["forward"] = c_fwd - c0
                out["backward"] = c1 - c_fwd
            else:
                out["forward"] = t_fwd - t0
                out["backward"] = t1 - t_fwd
        return out

    return step


def _train_batches(args, device, n: int):
    from segtrain.data import build_train_loader

    cfg = _train_cfg(args, device, "segtrain")
    loader = build_train_loader(cfg)
    it = iter(loader)
    return [next(it) for _ in range(n)], cfg


def add_train_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="training iterations/s of a config, fwd+bwd vs optimizer, peak memory",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p, threads=2, warmup=2, repeat=5, device="auto")
    p.add_argument("--config-file", default="projects/m2f/r50.yaml", metavar="FILE")
    p.add_argument("--module", action="append", default=[], help="user module to import first (repeatable)")
    p.add_argument("--batches", type=int, default=2, help="distinct batches, fetched before timing and cycled")
    p.add_argument("--variants", default="segtrain,baseline,no_loss",
                   help=f"comma-separated subset of {', '.join(TRAIN_VARIANTS)} (baseline: official MSDeformAttn "
                        "algorithm + per-image/per-layer criterion loop + per-tensor AdamW; no_loss: segtrain's model "
                        "without the criterion, backward of the sum of its outputs; compiled: MODEL.COMPILE)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    p.set_defaults(func=run_train)


def _train_memory_variant(variant: str, args) -> Dict:
    import torch

    torch.set_num_threads(args.threads)
    device = _device(args.device)
    batches, _ = _train_batches(args, device, 1)
    model, opt, clip = _train_variant(args, device, variant, batches)
    step = _train_step(model, opt, clip, batches, device, breakdown=False, model_only=(variant == "no_loss"))
    return {"case": variant, "peak_mb": _peak_of_step(step, device, steps=2)}


def run_train(args) -> int:
    if _ran_memory_worker(args, _train_memory_variant):
        return 0
    machine, device, variants = _start_run(args, args.variants, TRAIN_VARIANTS, "variant")
    if variants is None:
        return 2
    batches, cfg = _train_batches(args, device, max(1, args.batches))
    images = len(batches[0])
    steps: "OrderedDict[str, Callable]" = OrderedDict()
    for v in variants:
        model, opt, clip = _train_variant(args, device, v, batches)
        steps[v] = _train_step(model, opt, clip, batches, device, breakdown=(v == "segtrain"),
                               model_only=(v == "no_loss"))
    timed = interleaved(steps, device, args.warmup, args.repeat)
    results, rows = [], []
    for v in variants:
        r = dict(variant=v, **timed[v])
        r["iterations_per_s"] = 1000.0 / r["median_ms"]
        r["images_per_s"] = images * r["iterations_per_s"]
        if not args.no_memory:
            mem = _run_isolated("train", v, args) if device.type == "cpu" else _train_memory_variant(v, args)
            r["peak_mb"] = mem.get("peak_mb")
            if "error" in mem:
                r["memory_error"] = mem["error"]
        results.append(r)
        rows.append([v, r["fwd_bwd_median_ms"], r["fwd_bwd_min_ms"], r["fwd_bwd_cpu_median_ms"], r["optim_median_ms"],
                     r["median_ms"], f"{r['iterations_per_s']:.2f}", f"{r['images_per_s']:.2f}",
                     _fmt(r.get("peak_mb"), ".0f")])
    by = {r["variant"]: r for r in results}
    summary: Dict[str, object] = {"images_per_iteration": images,
                                  "image_size": list(batches[0][0]["image"].shape[-2:])}
    seg = by.get("segtrain")
    if seg:
        summary["fwd_bwd_median_s"] = seg["fwd_bwd_median_ms"] / 1000
        summary["fwd_bwd_min_s"] = seg["fwd_bwd_min_ms"] / 1000
        key = "cpu" if device.type == "cpu" else "wall"
        summary[f"breakdown_{key}_median_ms"] = {k[:-len("_median_ms")]: round(v, 1) for k, v in seg.items()
                                                  if k.endswith("_median_ms") and k.startswith((
                                                      "fwd_backbone", "fwd_pixel", "fwd_transformer", "fwd_criterion",
                                                      "forward", "backward"))}
    if "no_loss" in by:
        summary["fwd_bwd_no_loss_median_s"] = by["no_loss"]["fwd_bwd_median_ms"] / 1000
        summary["fwd_bwd_no_loss_min_s"] = by["no_loss"]["fwd_bwd_min_ms"] / 1000
    for other in ("baseline", "compiled"):
        if seg and other in by:
            summary[f"fwd_bwd_speedup_{other}_over_segtrain"] = by[other]["fwd_bwd_median_ms"] / seg["fwd_bwd_median_ms"]
            summary[f"fwd_bwd_cpu_time_speedup_{other}_over_segtrain"] = (by[other]["fwd_bwd_cpu_median_ms"]
                                                                          / seg["fwd_bwd_cpu_median_ms"])
            summary[f"iteration_speedup_{other}_over_segtrain"] = by[other]["median_ms"] / seg["median_ms"]
            summary[f"optimizer_speedup_{other}_over_segtrain"] = by[other]["optim_median_ms"] / seg["optim_median_ms"]
    _report("train", args, results, summary, {"device_name": str(device), "config": args.config_file}, machine)
    _print_table(f"training step of {args.config_file} {' '.join(args.opts or [])} on {device} ({args.threads} "
                 f"thread(s)), batch {images} x {summary['image_size'][0]}x{summary['image_size'][1]}, median of "
                 f"{args.repeat} interleaved iterations after {args.warmup} warm-up; load average "
                 f"{machine['loadavg_1_5_15']}",
                 ["variant", "fwd+bwd ms", "fwd+bwd min ms", "fwd+bwd CPU ms", "optimizer ms", "iteration ms", "iter/s",
                  "images/s", "peak MB"],
                 rows)
    _print_summary(summary)
    return 0


# ---------------------------------------------------------------------------- subcommand: data
def add_data_parser(subparsers) -> None:
    p = subparsers.add_parser("data", help="training-loader images/s with N worker processes",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p, threads=1, warmup=5, repeat=100)
    p.add_argument("--config-file", default="projects/m2f/r50.yaml", metavar="FILE")
    p.add_argument("--module", action="append", default=[], help="user module to import first (repeatable)")
    p.add_argument("--workers", default="0,1,2", help="comma-separated DATALOADER.NUM_WORKERS values")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    p.set_defaults(func=run_data)


def run_data(args) -> int:
    """Loaders run one after another (a loader's workers prefetch in the background, so
    interleaving would let one setting's workers steal the other's time): ``--warmup``
    batches, then ``--repeat`` batches timed one by one."""
    import torch

    from segtrain.config import load_config
    from segtrain.data import build_train_loader

    machine = _machine()
    torch.set_num_threads(args.threads)
    results, rows = [], []
    for n in [int(w) for w in args.workers.split(",") if w.strip()]:
        cfg = load_config(args.config_file, list(args.opts or []), list(args.module or []))
        cfg.defrost()
        cfg.DATALOADER.NUM_WORKERS = n
        cfg.freeze()
        loader = build_train_loader(cfg)
        it = iter(loader)
        t_start = time.perf_counter()
        for _ in range(args.warmup):
            next(it)
        first = time.perf_counter() - t_start
        times, images = [], 0
        t_all = time.perf_counter()
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            batch = next(it)
            times.append(time.perf_counter() - t0)
            images += len(batch)
        total = time.perf_counter() - t_all
        it.close()  # ends the DataLoader iterator and its worker processes
        del it, loader
        gc.collect()
        r = dict(workers=n, images=images, seconds=total, images_per_s=images / total, warmup_s=first,
                 batch_size=cfg.SOLVER.IMS_PER_BATCH, **_ms(times))
        results.append(r)
        rows.append([n, cfg.SOLVER.IMS_PER_BATCH, f"{r['images_per_s']:.1f}", r["median_ms"], r["min_ms"],
                     f"{first:.2f}"])
    summary: Dict[str, object] = {}
    base = next((r for r in results if r["workers"] == 0), None)
    for r in results:
        if base and r["workers"] != 0:
            summary[f"speedup_{r['workers']}_workers_over_0"] = r["images_per_s"] / base["images_per_s"]
    _report("data", args, results, summary, {"config": args.config_file}, machine)
    _print_table(f"training loader of {args.config_file} {' '.join(args.opts or [])}: {args.repeat} batches after "
                 f"{args.warmup} warm-up ({os.cpu_count()} CPUs; load average {machine['loadavg_1_5_15']})",
                 ["workers", "batch", "images/s", "median ms/batch", "min ms/batch", "warm-up s"], rows)
    _print_summary(summary)
    return 0


# ---------------------------------------------------------------------------- subcommand: eval
def _synthetic_predictions(dicts, metadata, dets: int, seed: int):
    """Per image: every GT mask shifted by a few pixels (class kept with probability 0.8, score
    in [0.5, 1)), then random rectangles (score in [0, 0.5)) up to ``dets`` detections -- so
    COCOeval matches, sorts and accumulates as on a real model's output. Returns
    [(input dict, output dict)]."""
    import numpy as np
    import torch

    from segtrain.structures.instances import Instances
    from segtrain.structures.masks import masks_to_boxes, segmentation_to_bitmask

    rng = np.random.default_rng(seed)
    num_classes = max(len(getattr(metadata, "thing_classes", []) or []), 1)
    pairs = []
    for d in dicts:
        H, W = int(d["height"]), int(d["width"])
        masks, classes = [], []
        for a in d.get("annotations", []):
            m = segmentation_to_bitmask(a["segmentation"], H, W)
            dy, dx = (int(v) for v in rng.integers(-3, 4, size=2))
            masks.append(np.roll(m, (dy, dx), axis=(0, 1)))
            c = int(a["category_id"])  # dataset dicts already hold contiguous ids
            classes.append(c if rng.random() < 0.8 else int(rng.integers(num_classes)))
        while len(masks) < dets:
            m = np.zeros((H, W), dtype=bool)
            y0, x0 = int(rng.integers(0, H - 4)), int(rng.integers(0, W - 4))
            m[y0:y0 + int(rng.integers(4, H // 2)), x0:x0 + int(rng.integers(4, W // 2))] = True
            masks.append(m)
            classes.append(int(rng.integers(num_classes)))
        inst = Instances((H, W))
        inst.pred_masks = torch.from_numpy(np.stack(masks[:dets]))
        inst.pred_boxes = masks_to_boxes(inst.pred_masks)
        n_gt = min(len(d.get("annotations", [])), dets)
        scores = rng.random(len(inst.pred_masks)) * 0.5
        scores[:n_gt] += 0.5
        inst.scores = torch.from_numpy(scores.astype(np.float32))
        inst.pred_classes = torch.as_tensor(classes[:dets], dtype=torch.int64)
        pairs.append(({"image_id": d["image_id"], "height": H, "width": W}, {"instances": inst}))
    return pairs


def add_eval_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="COCOEvaluator time per image",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_common(p, threads=1, warmup=1, repeat=3)
    p.add_argument("--config-file", default="projects/m2f/r50.yaml", metavar="FILE")
    p.add_argument("--module", action="append", default=[], help="user module to import first (repeatable)")
    p.add_argument("--images", type=int, default=50, help="first N images of DATASETS.TEST[0]")
    p.add_argument("--dets", type=int, default=0, help="detections per image (0: TEST.DETECTIONS_PER_IMAGE)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    p.set_defaults(func=run_eval)


def run_eval(args) -> int:
    """``process`` (conversion to COCO results, RLE encoding) and ``evaluate`` (pycocotools
    bbox + segm) of synthetic predictions (see ``_synthetic_predictions``); the model is not run."""
    import contextlib
    import io

    import torch

    from segtrain.config import load_config
    from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
    from segtrain.data.datasets.builtin import register_shapes_from_cfg
    from segtrain.evaluation.coco_evaluation import COCOEvaluator
    from segtrain.utils.errors import ConfigError

    machine = _machine()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config_file, list(args.opts or []), list(args.module or []))
    if not len(cfg.DATASETS.TEST):
        raise ConfigError(f"{args.config_file}: DATASETS.TEST is empty; the eval benchmark needs a test set")
    name = cfg.DATASETS.TEST[0]
    register_shapes_from_cfg(cfg)
    dets = args.dets or cfg.TEST.DETECTIONS_PER_IMAGE
    dicts = DatasetCatalog.get(name)[: args.images]
    pairs = _synthetic_predictions(dicts, MetadataCatalog.get(name), dets, args.seed)
    evaluator = COCOEvaluator(name, tasks=("bbox", "segm"), distributed=False, output_dir=None,
                              max_dets_per_image=dets)
    proc_t, eval_t = [], []
    for r in range(args.warmup + args.repeat):
        evaluator.reset()
        t0 = time.perf_counter()
        for inp, out in pairs:
            evaluator.process([inp], [out])
        t1 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            results = evaluator.evaluate()
        t2 = time.perf_counter()
        if r >= args.warmup:
            proc_t.append(t1 - t0)
            eval_t.append(t2 - t1)
    n = len(pairs)
    per = {"process_ms_per_image": 1000 * statistics.median(proc_t) / n,
           "evaluate_ms_per_image": 1000 * statistics.median(eval_t) / n}
    per["total_ms_per_image"] = per["process_ms_per_image"] + per["evaluate_ms_per_image"]
    res = dict(dataset=name, images=n, detections_per_image=dets, process_s=proc_t, evaluate_s=eval_t, **per,
               segm_AP=results.get("segm", {}).get("AP"), bbox_AP=results.get("bbox", {}).get("AP"))
    _report("eval", args, [res], per, {"config": args.config_file}, machine)
    _print_table(f"COCOEvaluator on {name}: {n} images x {dets} detections (bbox + segm), median of {args.repeat} "
                 f"after {args.warmup} warm-up; load average {machine['loadavg_1_5_15']}",
                 ["images", "dets/image", "process ms/image", "evaluate ms/image", "total ms/image", "segm AP"],
                 [[n, dets, per["process_ms_per_image"], per["evaluate_ms_per_image"], per["total_ms_per_image"],
                   _fmt(res["segm_AP"])]])
    return 0


# ---------------------------------------------------------------------------- entry point
# name -> function adding the subparser
SUBCOMMANDS: Dict[str, Callable] = {
    "train": add_train_parser,
    "data": add_data_parser,
    "eval": add_eval_parser,
    "criterion": add_criterion_parser,
    "msda": add_msda_parser,
    "masks": add_masks_parser,
}


def main(argv: List[str] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS.values():
        add(sub)
    args = parser.parse_args(argv)
    # the subcommand's own options, forwarded to isolated workers
    args._argv = [a for a in argv[argv.index(args.command) + 1:]] if args.command in argv else []
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from segtrain.utils.allocator import tune_malloc
    from segtrain.utils.cli import one_line_errors

    def run():
        # as tools/train_net.py does (SEGTRAIN_MALLOC=default: glibc's own settings); not in the
        # isolated peak-memory workers, which measure live memory with glibc's mmap behaviour
        if not args._case:
            tune_malloc()
        return args.func(args)

    return one_line_errors(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
