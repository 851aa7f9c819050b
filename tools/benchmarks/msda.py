"""``benchmark.py msda``: multi-scale deformable attention forward+backward at Mask2Former encoder
shapes (M=8 heads, D=32, levels at strides 32, 16, 8, P=4 points, queries = every pixel of
every level), per thread count: segtrain's ``ms_deform_attn_core`` ("fast"), the same with the
single-threaded COO value gradient ("fast_coo", ``value_grad_path="coo"``) and the official
algorithm ``ms_deform_attn_reference`` of ``tests/reference`` ("reference": one ``grid_sample``
per level).
"""

import argparse
import functools
from collections import OrderedDict
from typing import Callable, Dict

from . import timing

__all__ = ["add_parser", "run"]


def _msda_inputs(px: int, batch: int, seed: int, device):
    """Mask2Former encoder inputs for a px x px image: levels at strides 32, 16, 8 (coarsest
    first, as the pixel decoder orders them); locations = pixel centres + offsets of a few
    pixels. Returns (shapes [(H_l, W_l)], value [N, S, 8, 32], locations [N, S, 8, 3, 4, 2],
    attention weights [N, S, 8, 3, 4], output gradient [N, S, 256]); the first three need grad."""
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


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "msda",
        help="MSDeformAttn fast path vs the official algorithm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    timing.add_common(p, threads=2, warmup=1, repeat=5)
    p.add_argument(
        "--sizes",
        default="128x2,128x8,256x2",
        help="comma-separated IMAGExBATCH (encoder levels at strides 8, 16, 32 of the image)",
    )
    p.add_argument("--threads-list", default="1,2", help="thread counts to compare (overrides --threads)")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from segtrain.layers.ms_deform_attn import ms_deform_attn_core
    from tests.reference.ms_deform_attn import ms_deform_attn_reference

    machine = timing.machine_info()
    device = timing.resolve_device(args.device)
    threads = [int(t) for t in args.threads_list.split(",") if t.strip()]
    sizes = []
    for s in args.sizes.split(","):
        px, _, b = s.strip().partition("x")
        sizes.append((int(px), int(b or 2)))
    functions = {
        "fast": ms_deform_attn_core,
        "reference": ms_deform_attn_reference,
        "fast_coo": functools.partial(ms_deform_attn_core, value_grad_path="coo"),
    }
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
            for name in ("fast", "reference", "fast_coo"):
                key = f"{px}x{b}/{t}t/{name}"
                steps[key] = make(functions[name], shapes, value, loc, attn, grad)
                setting[key] = (px, b, t, name)

    # interleaved within each thread count, thread counts one after another (switching the
    # OpenMP team size between calls would tax every call with its restart)
    timed: Dict[str, Dict] = {}
    for t in threads:
        group = OrderedDict((k, v) for k, v in steps.items() if setting[k][2] == t)
        torch.set_num_threads(t)
        timed.update(timing.interleaved(group, device, args.warmup, args.repeat))
    results, rows = [], []
    for key in steps:
        res = timed[key]
        px, b, t, name = setting[key]
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
    timing.report("msda", args, results, summary, {"device_name": str(device)}, machine)
    timing.print_table(
        f"MSDeformAttn forward+backward on {device} (M=8, D=32, L=3, P=4, queries = all pixels of "
        f"strides 8/16/32), median of {args.repeat} interleaved rounds; load average "
        f"{machine['loadavg_1_5_15']}",
        ["image", "batch", "threads", "case", "median ms", "min ms", "CPU ms"],
        rows,
    )
    timing.print_summary(summary)
    return 0
