"""``benchmark.py masks``: peak memory and time of point-sampled vs full-resolution mask
losses at SAM 3 scale (pred_masks [B, Q, S/4, S/4], n GT masks per image at S x S, each
matched to a distinct query): ``points`` (SAM 3 ``Masks`` with importance-sampled points),
``full`` (``Masks`` at full resolution, chunked) and ``full_naive`` (the straightforward
form: upsample, then focal + dice through plain autograd).
"""

import argparse
from collections import OrderedDict
from typing import Dict

from . import timing

__all__ = ["MASKS_CASES", "add_parser", "masks_case", "run"]

MASKS_CASES = ("points", "full", "full_naive")


def masks_case(name: str, args, device):
    """One step of a mask loss. Returns (step, K matched masks, the prediction tensor
    [B, Q, S/4, S/4] the step back-propagates into)."""
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
        masks[i, y0 : y0 + hh, x0 : x0 + ww] = 1.0
    masks = masks.to(device)
    b_idx = torch.arange(B).repeat_interleave(n).to(device)
    q_idx = torch.cat([torch.randperm(Q, generator=g)[:n] for _ in range(B)]).to(device)
    t_idx = torch.arange(B * n, device=device)
    targets = {"masks": masks, "is_valid_mask": torch.ones(B * n, dtype=torch.bool, device=device)}
    num_boxes = float(B * n)
    if name == "points":
        loss_fn = Masks(
            weight_dict={"loss_mask": 200.0, "loss_dice": 10.0},
            num_sample_points=args.num_points,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
        )
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


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "masks",
        help="peak memory of point-sampled vs full-resolution mask losses",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    timing.add_common(p, threads=1, warmup=1, repeat=3)
    p.add_argument("--image-size", type=int, default=1008, help="GT mask size; predictions at 1/4")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--gt-per-image", type=int, default=16, help="matched masks per image")
    p.add_argument("--num-points", type=int, default=12544, help="points of the point-sampled case")
    p.add_argument("--cases", default=",".join(MASKS_CASES))
    p.set_defaults(func=run)


def _memory_case(name: str, args) -> Dict:
    import torch

    torch.set_num_threads(args.threads)
    device = timing.resolve_device(args.device)
    step, _, _ = masks_case(name, args, device)
    return {"case": name, "peak_mb": timing.peak_of_step(step, device)}


def run(args) -> int:
    if timing.ran_memory_worker(args, _memory_case):
        return 0
    machine, device, cases = timing.start_run(args, args.cases, MASKS_CASES, "case")
    if cases is None:
        return 2
    results, rows = [], []
    K = args.batch * args.gt_per_image
    copy_mb = K * args.image_size**2 * 4 / 2**20  # one float32 [K, S, S] upsampled copy
    # memory first, each case alone (fresh process on CPU), then the times interleaved
    mem = {c: (timing.run_isolated("masks", c, args) if device.type == "cpu" else _memory_case(c, args)) for c in cases}
    steps = OrderedDict((c, masks_case(c, args, device)[0]) for c in cases)
    timed = timing.interleaved(steps, device, args.warmup, args.repeat)
    desc = {
        "points": f"Masks, {args.num_points} importance-sampled points",
        "full": "Masks, full resolution (chunked)",
        "full_naive": "interpolate + focal + dice through autograd",
    }
    for c in cases:
        peak = mem[c].get("peak_mb")
        res = dict(
            case=c,
            description=desc[c],
            peak_mb=peak,
            upsampled_copies=None if peak is None else peak / copy_mb,
            **timed[c],
        )
        if "error" in mem[c]:
            res["memory_error"] = mem[c]["error"]
        results.append(res)
        rows.append(
            [
                c,
                desc[c],
                timing.fmt(peak, ".0f"),
                timing.fmt(res["upsampled_copies"], ".2f"),
                res["median_ms"],
                res["cpu_median_ms"],
            ]
        )
    by = {r["case"]: r for r in results}
    summary: Dict[str, object] = {"one_upsampled_copy_mb": copy_mb, "matched_masks": K}
    if by.get("full", {}).get("peak_mb") and by.get("points", {}).get("peak_mb"):
        summary["memory_ratio_full_over_points"] = by["full"]["peak_mb"] / by["points"]["peak_mb"]
    if by.get("full_naive", {}).get("peak_mb") and by.get("full", {}).get("peak_mb"):
        summary["memory_ratio_naive_over_full"] = by["full_naive"]["peak_mb"] / by["full"]["peak_mb"]
    if "full_naive" in by and "full" in by:
        summary["time_ratio_naive_over_full"] = by["full_naive"]["median_ms"] / by["full"]["median_ms"]
    timing.report("masks", args, results, summary, {"device_name": str(device)}, machine)
    timing.print_table(
        f"mask losses (fwd+bwd) on {device}: {K} matched masks of {args.image_size}x{args.image_size}, "
        f"{args.queries} queries at 1/4 resolution; one upsampled copy = {copy_mb:.0f} MB; load average "
        f"{machine['loadavg_1_5_15']}",
        ["case", "what", "peak MB", "upsampled copies", "median ms", "CPU ms"],
        rows,
    )
    timing.print_summary(summary)
    return 0
