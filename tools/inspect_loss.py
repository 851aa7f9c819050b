#!/usr/bin/env python
"""One batch of the configured dataset through the configured model and criterion:
a table of every loss component (raw, weight, weighted, share of core_loss, gradient
norm into the model) and warnings for dominant / vanishing components and for weights
that differ from the criterion's official defaults.

    python tools/inspect_loss.py --config-file projects/m2f/r50.yaml [KEY VALUE ...]
"""

import argparse
import json
import logging
import sys

sys.path.insert(
    0, __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__)))
)


def main(argv=None) -> int:
    from segtrain.utils.cli import add_config_arguments, one_line_errors

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", default="", help="also write the report as JSON here")
    parser.add_argument("--no-grad-norms", action="store_true", help="skip per-component gradient norms")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    return one_line_errors(lambda: _run(args), args.debug)


def _run(args) -> int:
    import torch

    from segtrain.config import load_config
    from segtrain.engine.defaults import DefaultTrainer
    from segtrain.modeling.criterion.inspection import inspect_loss_dict, official_weight_differences
    from segtrain.utils.env import seed_all_rng

    cfg = load_config(args.config_file, args.opts, args.module)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.freeze()
    seed_all_rng(cfg.SEED if cfg.SEED >= 0 else 0)
    model = DefaultTrainer.build_model(cfg)
    model.train()
    batch = next(iter(DefaultTrainer.build_train_loader(cfg)))
    loss_dict = model(batch)
    params = None if args.no_grad_norms else [p for p in model.parameters() if p.requires_grad]
    report = inspect_loss_dict(loss_dict, params)
    report.warnings.extend(official_weight_differences(cfg))
    print(
        f"criterion {cfg.MODEL.CRITERION.NAME} on {cfg.MODEL.META_ARCHITECTURE}, "
        f"one batch of {_batch_size(batch)} from {cfg.DATASETS.TRAIN[0]}"
    )
    print(report.table())
    for w in report.warnings:
        print(f"WARNING: {w}")
    if not report.warnings:
        print("no warnings")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "core_loss": report.core_loss,
                    "summaries": report.summaries,
                    "warnings": report.warnings,
                    "components": [c.__dict__ for c in report.components],
                },
                f,
                indent=2,
            )
    del torch
    return 0


def _batch_size(batch) -> str:
    """``N`` images, or ``N`` clips for a batched video datapoint (no ``len``)."""
    if hasattr(batch, "num_videos"):
        return f"{batch.num_videos} clips of {batch.num_frames} frames"
    return str(len(batch))


if __name__ == "__main__":
    sys.exit(main())
