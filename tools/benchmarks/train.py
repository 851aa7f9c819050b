"""``benchmark.py train``: forward+backward and optimizer-step time, iterations/s, images/s,
peak memory and the forward time of each model part of a config (default
``projects/m2f/r50.yaml``; KEY VALUE overrides at the end).

Variants: ``segtrain`` (the config's model and optimizer); ``baseline`` (the same model and
parameters with the reference forms of ``tests/reference`` swapped in as submodules -- every
``MSDeformAttn`` by a ``ReferenceMSDeformAttn`` on the same parameters, a ``SetCriterion`` by
the ``ReferenceSetCriterion`` loop with its settings -- and the optimizer as the plain
per-tensor loop, no fused / foreach kernels); ``no_loss`` (segtrain's model without the
criterion: backward of the sum of every output, as the official Mask2Former figure is
defined); ``compiled`` (``MODEL.COMPILE``); ``blas`` (segtrain's model and loss with
``segtrain.layers.wrappers.ONEDNN_MATMUL`` off while its steps run: the linear layers' and
small convolutions' products on the BLAS behind ``F.linear`` / ``torch.matmul`` instead of
oneDNN).
"""

import argparse
import time
from collections import OrderedDict
from typing import Callable, Dict

from . import timing

__all__ = ["TRAIN_VARIANTS", "add_parser", "model_only_loss", "run", "train_batches", "train_variant", "variant_step"]

TRAIN_VARIANTS = ("segtrain", "baseline", "no_loss", "compiled", "blas")


def _train_cfg(args, device, variant: str):
    cfg = timing.load_cfg(args)
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


def _swap_in_references(model) -> None:
    """Replace, in the module tree, every ``MSDeformAttn`` by a ``ReferenceMSDeformAttn`` on
    its parameters and a ``SetCriterion`` by a ``ReferenceSetCriterion`` with its settings."""
    from segtrain.layers.ms_deform_attn import MSDeformAttn
    from segtrain.modeling.criterion import SetCriterion
    from tests.reference import ReferenceMSDeformAttn, ReferenceSetCriterion

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MSDeformAttn):
                setattr(parent, name, ReferenceMSDeformAttn.sharing(child))
            elif isinstance(child, SetCriterion):
                setattr(parent, name, ReferenceSetCriterion.of(child))


def train_variant(args, device, variant: str, batches):
    """(model, optimizer, gradient clipper) of one variant (module docstring)."""
    import torch

    from segtrain.modeling import build_model
    from segtrain.solver import build_gradient_clipper, build_optimizer

    cfg = _train_cfg(args, device, variant)
    torch.manual_seed(args.seed)
    model = build_model(cfg).to(device)
    model.train()
    opt = build_optimizer(cfg, model)
    if variant == "baseline":
        _swap_in_references(model)
        opt = _plain_optimizer(opt)
    return model, opt, build_gradient_clipper(cfg)


def model_only_loss(model, batch):
    """The "no loss" step of a MaskFormer-style model: backbone + pixel decoder + transformer
    decoder forward, and the sum of every output tensor (all predictions' class logits and
    mask logits) as the scalar to back-propagate -- the model's whole forward and backward,
    without the matcher and the criterion."""
    import torch

    if not all(hasattr(model, a) for a in ("preprocess_image", "backbone", "sem_seg_head")):
        raise SystemExit(
            f"benchmark.py train: variant no_loss needs a MaskFormer-style model (preprocess_image, "
            f"backbone, sem_seg_head); {type(model).__name__} has not"
        )
    images = model.preprocess_image(batch)
    outputs = model.sem_seg_head(model.backbone(images.tensor))
    layers = [outputs] + list(outputs.get("aux_outputs") or [])
    return torch.stack([v.float().sum() for layer in layers for v in layer.values() if torch.is_tensor(v)]).sum()


def _train_step(model, opt, clip, batches, device, breakdown: bool, model_only: bool = False):
    """One training step on the next batch; returns {fwd_bwd, optim, and forward parts} seconds.
    ``model_only``: the loss is :func:`model_only_loss` (no criterion)."""
    from segtrain.modeling.criterion import CORE_LOSS_KEY

    params = [p for g in opt.param_groups for p in g["params"]]
    marks: Dict[str, float] = {}
    counter = [0]
    if breakdown:  # forward time of each part, from hooks (sequential parts)
        head = getattr(model, "sem_seg_head", None)
        parts = [
            ("backbone", getattr(model, "backbone", None)),
            ("head", head),
            ("predictor", getattr(head, "predictor", None)),
            ("criterion", getattr(model, "criterion", None)),
        ]
        # on CPU the parts are CPU time (robust on a shared machine), on CUDA wall time after a sync
        clock = time.process_time if device.type == "cpu" else time.perf_counter

        def mark(key: str):
            def hook(*_):  # returns None: the module's inputs / outputs stay as they are
                timing.sync(device)
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
        loss = model_only_loss(model, batch) if model_only else model(batch)[CORE_LOSS_KEY]
        t_fwd, c_fwd = time.perf_counter(), time.process_time()
        loss.backward()
        timing.sync(device)
        t1, c1 = time.perf_counter(), time.process_time()
        if clip is not None:
            clip(params)
        opt.step()
        opt.zero_grad(set_to_none=True)
        timing.sync(device)
        t2, c2 = time.perf_counter(), time.process_time()
        out = {"fwd_bwd": t1 - t0, "optim": t2 - t1, "fwd_bwd_cpu": c1 - c0, "optim_cpu": c2 - c1}
        if breakdown and marks:
            span = {
                n[:-1]: marks[n[:-1] + ">"] - marks[n[:-1] + "<"]
                for n in marks
                if n.endswith("<") and n[:-1] + ">" in marks
            }
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


def _with_blas_products(step: Callable) -> Callable:
    """``step`` run with ``segtrain.layers.wrappers.ONEDNN_MATMUL`` off (restored after)."""
    from segtrain.layers import wrappers

    def blas_step():
        saved = wrappers.ONEDNN_MATMUL
        wrappers.ONEDNN_MATMUL = False
        try:
            return step()
        finally:
            wrappers.ONEDNN_MATMUL = saved

    return blas_step


def variant_step(model, opt, clip, batches, device, variant: str, breakdown: bool = False) -> Callable:
    """The timed step of one variant (module docstring) -> {part: seconds}."""
    step = _train_step(model, opt, clip, batches, device, breakdown, model_only=(variant == "no_loss"))
    return _with_blas_products(step) if variant == "blas" else step


def train_batches(args, device, n: int):
    """The first ``n`` batches of the config's training loader (no workers), and the config."""
    from segtrain.data import build_train_loader

    cfg = _train_cfg(args, device, "segtrain")
    loader = build_train_loader(cfg)
    it = iter(loader)
    return [next(it) for _ in range(n)], cfg


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="training iterations/s of a config, fwd+bwd vs optimizer, peak memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    timing.add_common(p, threads=2, warmup=2, repeat=5, device="auto")
    p.add_argument("--config-file", default="projects/m2f/r50.yaml", metavar="FILE")
    p.add_argument("--module", action="append", default=[], help="user module to import first (repeatable)")
    p.add_argument("--batches", type=int, default=2, help="distinct batches, fetched before timing and cycled")
    p.add_argument(
        "--variants",
        default="segtrain,baseline,no_loss",
        help=f"comma-separated subset of {', '.join(TRAIN_VARIANTS)} (baseline: official MSDeformAttn "
        "algorithm + per-image/per-layer criterion loop + per-tensor AdamW; no_loss: segtrain's model "
        "without the criterion, backward of the sum of its outputs; compiled: MODEL.COMPILE; blas: segtrain "
        "with the BLAS products instead of oneDNN)",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    p.set_defaults(func=run)


def _memory_variant(variant: str, args) -> Dict:
    import torch

    torch.set_num_threads(args.threads)
    device = timing.resolve_device(args.device)
    batches, _ = train_batches(args, device, 1)
    model, opt, clip = train_variant(args, device, variant, batches)
    step = variant_step(model, opt, clip, batches, device, variant)
    return {"case": variant, "peak_mb": timing.peak_of_step(step, device, steps=2)}


def _summary(results, images: int, image_size, device) -> Dict[str, object]:
    by = {r["variant"]: r for r in results}
    summary: Dict[str, object] = {"images_per_iteration": images, "image_size": image_size}
    seg = by.get("segtrain")
    if seg:
        summary["fwd_bwd_median_s"] = seg["fwd_bwd_median_ms"] / 1000
        summary["fwd_bwd_min_s"] = seg["fwd_bwd_min_ms"] / 1000
        key = "cpu" if device.type == "cpu" else "wall"
        summary[f"breakdown_{key}_median_ms"] = {
            k[: -len("_median_ms")]: round(v, 1)
            for k, v in seg.items()
            if k.endswith("_median_ms")
            and k.startswith(("fwd_backbone", "fwd_pixel", "fwd_transformer", "fwd_criterion", "forward", "backward"))
        }
    if "no_loss" in by:
        summary["fwd_bwd_no_loss_median_s"] = by["no_loss"]["fwd_bwd_median_ms"] / 1000
        summary["fwd_bwd_no_loss_min_s"] = by["no_loss"]["fwd_bwd_min_ms"] / 1000
    for other in ("baseline", "compiled", "blas"):
        if seg and other in by:
            summary[f"fwd_bwd_speedup_{other}_over_segtrain"] = (
                by[other]["fwd_bwd_median_ms"] / seg["fwd_bwd_median_ms"]
            )
            summary[f"fwd_bwd_cpu_time_speedup_{other}_over_segtrain"] = (
                by[other]["fwd_bwd_cpu_median_ms"] / seg["fwd_bwd_cpu_median_ms"]
            )
            summary[f"iteration_speedup_{other}_over_segtrain"] = by[other]["median_ms"] / seg["median_ms"]
            summary[f"optimizer_speedup_{other}_over_segtrain"] = by[other]["optim_median_ms"] / seg["optim_median_ms"]
    return summary


def run(args) -> int:
    if timing.ran_memory_worker(args, _memory_variant):
        return 0
    machine, device, variants = timing.start_run(args, args.variants, TRAIN_VARIANTS, "variant")
    if variants is None:
        return 2
    batches, cfg = train_batches(args, device, max(1, args.batches))
    images = len(batches[0])
    steps: "OrderedDict[str, Callable]" = OrderedDict()
    for v in variants:
        model, opt, clip = train_variant(args, device, v, batches)
        steps[v] = variant_step(model, opt, clip, batches, device, v, breakdown=(v == "segtrain"))
    timed = timing.interleaved(steps, device, args.warmup, args.repeat)
    results, rows = [], []
    for v in variants:
        r = dict(variant=v, **timed[v])
        r["iterations_per_s"] = 1000.0 / r["median_ms"]
        r["images_per_s"] = images * r["iterations_per_s"]
        if not args.no_memory:
            mem = timing.run_isolated("train", v, args) if device.type == "cpu" else _memory_variant(v, args)
            r["peak_mb"] = mem.get("peak_mb")
            if "error" in mem:
                r["memory_error"] = mem["error"]
        results.append(r)
        rows.append(
            [
                v,
                r["fwd_bwd_median_ms"],
                r["fwd_bwd_min_ms"],
                r["fwd_bwd_cpu_median_ms"],
                r["optim_median_ms"],
                r["median_ms"],
                f"{r['iterations_per_s']:.2f}",
                f"{r['images_per_s']:.2f}",
                timing.fmt(r.get("peak_mb"), ".0f"),
            ]
        )
    summary = _summary(results, images, list(batches[0][0]["image"].shape[-2:]), device)
    timing.report("train", args, results, summary, {"device_name": str(device), "config": args.config_file}, machine)
    timing.print_table(
        f"training step of {args.config_file} {' '.join(args.opts or [])} on {device} ({args.threads} "
        f"thread(s)), batch {images} x {summary['image_size'][0]}x{summary['image_size'][1]}, median "
        f"of {args.repeat} interleaved iterations after {args.warmup} warm-up; load average "
        f"{machine['loadavg_1_5_15']}",
        [
            "variant",
            "fwd+bwd ms",
            "fwd+bwd min ms",
            "fwd+bwd CPU ms",
            "optimizer ms",
            "iteration ms",
            "iter/s",
            "images/s",
            "peak MB",
        ],
        rows,
    )
    timing.print_summary(summary)
    return 0
