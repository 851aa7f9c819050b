"""``benchmark.py data``: training-loader images/s of a config with 0, 1, ... worker
processes. Loaders run one after another (a loader's workers prefetch in the background, so
interleaving would let one setting's workers steal the other's time): ``--warmup`` batches,
then ``--repeat`` batches timed one by one.
"""

import argparse
import gc
import os
import time
from typing import Dict

from . import timing

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "data",
        help="training-loader images/s with N worker processes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    timing.add_common(p, threads=1, warmup=5, repeat=100)
    p.add_argument("--config-file", default="projects/m2f/r50.yaml", metavar="FILE")
    p.add_argument("--module", action="append", default=[], help="user module to import first (repeatable)")
    p.add_argument("--workers", default="0,1,2", help="comma-separated DATALOADER.NUM_WORKERS values")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from segtrain.data import build_train_loader

    machine = timing.machine_info()
    torch.set_num_threads(args.threads)
    results, rows = [], []
    for n in [int(w) for w in args.workers.split(",") if w.strip()]:
        cfg = timing.load_cfg(args)
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
        r = dict(
            workers=n,
            images=images,
            seconds=total,
            images_per_s=images / total,
            warmup_s=first,
            batch_size=cfg.SOLVER.IMS_PER_BATCH,
            **timing.ms_stats(times),
        )
        results.append(r)
        rows.append(
            [n, cfg.SOLVER.IMS_PER_BATCH, f"{r['images_per_s']:.1f}", r["median_ms"], r["min_ms"], f"{first:.2f}"]
        )
    summary: Dict[str, object] = {}
    base = next((r for r in results if r["workers"] == 0), None)
    for r in results:
        if base and r["workers"] != 0:
            summary[f"speedup_{r['workers']}_workers_over_0"] = r["images_per_s"] / base["images_per_s"]
    timing.report("data", args, results, summary, {"config": args.config_file}, machine)
    timing.print_table(
        f"training loader of {args.config_file} {' '.join(args.opts or [])}: {args.repeat} batches "
        f"after {args.warmup} warm-up ({os.cpu_count()} CPUs; load average "
        f"{machine['loadavg_1_5_15']})",
        ["workers", "batch", "images/s", "median ms/batch", "min ms/batch", "warm-up s"],
        rows,
    )
    timing.print_summary(summary)
    return 0
