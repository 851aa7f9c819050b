#!/usr/bin/env python
"""Benchmarks, one subcommand each (``criterion`` here; ``train``, ``data``, ``eval`` plug in
through :data:`SUBCOMMANDS`).

    python tools/benchmark.py criterion [--device cpu|cuda|auto] [--threads N] [--warmup 1] \
        [--repeat 5] [--output out/bench_criterion.json] [--cases m2f,m2f_loop,matcher,matcher_loop,sam3,sam2]

``criterion`` times forward + backward (median over ``--repeat`` after ``--warmup``) and the
peak memory of each case at official settings: Mask2Former ``SetCriterion`` (B=2, Q=100,
K=80, 10 predictions, masks at 1/4 of 512x512, 12544 points) batched vs the per-image,
per-layer reference loop, with the speed ratio and the largest loss difference under the
same RNG state; the ``HungarianMatcher`` alone (all 10 predictions) batched vs loop; and,
when importable, ``Sam3LossWrapper`` and ``MultiStepMultiMasksAndIous``. Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA; on CPU each case runs in a fresh subprocess
and reports its peak RSS (``ru_maxrss``) minus its RSS once the inputs exist.
"""
import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("segtrain.tools.benchmark")

CRITERION_CASES = ("m2f", "m2f_loop", "matcher", "matcher_loop", "sam3", "sam2")


# ---------------------------------------------------------------------------- helpers
def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mb() -> float:
    """Current resident set size (Linux /proc), in MiB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _time(step: Callable[[], None], device, warmup: int, repeat: int) -> Dict[str, float]:
    """Median / min wall time (ms) of ``step`` and its peak memory (MiB) above the baseline."""
    import torch

    # baseline once the inputs exist, before the first step: the first step's allocations count
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_mb()
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(1000 * (time.perf_counter() - t0))
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak = _peak_rss_mb() - base
    return {"median_ms": statistics.median(times), "min_ms": min(times), "peak_mb": max(peak, 0.0),
            "times_ms": times}


# ---------------------------------------------------------------------------- inputs
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
    "matcher": "HungarianMatcher.match_many, 10 outputs",
    "matcher_loop": "HungarianMatcher.forward_per_image x 10",
    "sam3": "Sam3LossWrapper (fwd+bwd)",
    "sam2": "MultiStepMultiMasksAndIous (fwd+bwd)",
}


def _run_case(name: str, args) -> Dict:
    """Build and time one case in this process."""
    import torch

    torch.set_num_threads(args.threads)
    device = _device(args.device)
    try:
        step = _build_case(name, args, device)
    except (ImportError, KeyError) as e:  # a family not written / registered yet
        return {"case": name, "skipped": f"{type(e).__name__}: {e}"}
    try:
        res = _time(step, device, args.warmup, args.repeat)
    except Exception as e:  # report, keep benchmarking the other cases
        return {"case": name, "error": " ".join(f"{type(e).__name__}: {e}".split())[:300]}
    res["case"] = name
    return res


def _run_isolated(name: str, args) -> Dict:
    """One case in a fresh interpreter, so its peak RSS is its own."""
    cmd = [sys.executable, os.path.abspath(__file__), "criterion", "--_case", name] + args._argv
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    err = " ".join((proc.stderr or "").strip().splitlines()[-1:])
    return {"case": name, "error": f"subprocess exited {proc.returncode}: {err}"[:300]}


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


# ---------------------------------------------------------------------------- subcommand: criterion
def add_criterion_parser(subparsers) -> None:
    p = subparsers.add_parser("criterion", help="criterion forward+backward time and peak memory",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
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
    p.add_argument("--no-isolate", action="store_true", help="run CPU cases in this process (peak RSS then "
                   "only grows, so later cases under-report)")
    p.add_argument("--output", default="", help="write the results as JSON here")
    p.add_argument("--_case", default="", help=argparse.SUPPRESS)
    p.set_defaults(func=run_criterion)


def run_criterion(args) -> int:
    if args._case:  # worker mode: one case, JSON on stdout
        print(json.dumps(_run_case(args._case, args)))
        return 0
    import torch

    device = _device(args.device)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CRITERION_CASES:
            print(f"error: unknown case {c!r}; valid: {', '.join(CRITERION_CASES)}", file=sys.stderr)
            return 2
    isolate = device.type == "cpu" and not args.no_isolate
    results = []
    for c in cases:
        res = _run_isolated(c, args) if isolate else _run_case(c, args)
        res["description"] = _DESCRIPTIONS[c]
        results.append(res)
    by = {r["case"]: r for r in results}
    summary: Dict[str, object] = {}
    if "m2f" in by and "m2f_loop" in by and "median_ms" in by["m2f"] and "median_ms" in by["m2f_loop"]:
        summary["criterion_speedup_loop_over_batched"] = by["m2f_loop"]["median_ms"] / by["m2f"]["median_ms"]
        summary["criterion_equality"] = _m2f_equality(args)
    if "matcher" in by and "matcher_loop" in by and "median_ms" in by["matcher"] and "median_ms" in by["matcher_loop"]:
        summary["matcher_speedup_loop_over_batched"] = by["matcher_loop"]["median_ms"] / by["matcher"]["median_ms"]
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "_case", "_argv", "output")}
    settings.update(torch=torch.__version__, device_name=str(device), isolated=isolate)
    report = {"settings": settings, "results": results, "summary": summary}

    from tabulate import tabulate

    rows = []
    for r in results:
        if "median_ms" in r:
            rows.append([r["case"], r["description"], f"{r['median_ms']:.1f}", f"{r['min_ms']:.1f}", f"{r['peak_mb']:.1f}"])
        else:
            rows.append([r["case"], r["description"], "-", "-", r.get("skipped") or r.get("error")])
    print(f"criterion benchmark on {device} ({args.threads} thread(s)), median of {args.repeat} after {args.warmup} warmup")
    print(tabulate(rows, headers=["case", "what", "median ms", "min ms", "peak MB"], tablefmt="github"))
    for k, v in summary.items():
        print(f"{k}: {json.dumps(v) if isinstance(v, dict) else f'{v:.2f}x'}")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(report, f, indent=2)
    return 0


# ---------------------------------------------------------------------------- entry point
# name -> function adding the subparser; other benchmarks (train, data, eval) add theirs here
SUBCOMMANDS: Dict[str, Callable] = {"criterion": add_criterion_parser}


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
    from segtrain.utils.cli import one_line_errors

    return one_line_errors(lambda: args.func(args), args.debug)


if __name__ == "__main__":
    sys.exit(main())
