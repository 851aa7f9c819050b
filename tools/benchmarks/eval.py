"""``benchmark.py eval``: COCOEvaluator time per image on the config's first test set --
``process`` (conversion to COCO results, RLE encoding) and ``evaluate`` (pycocotools bbox +
segm) of synthetic predictions (GT masks shifted by a few pixels plus random rectangles);
the model is not run.
"""

import argparse
import statistics
import time

from . import timing

__all__ = ["add_parser", "run", "synthetic_predictions"]


def synthetic_predictions(dicts, metadata, dets: int, seed: int):
    """Per image: every GT mask shifted by a few pixels (class kept with probability 0.8, score
    in [0.5, 1)), then random rectangles (score in [0, 0.5)) up to ``dets`` detections -- so
    COCOeval matches, sorts and accumulates as on a real model's output. Returns
    [(input dict, output dict with ``instances``: pred_masks [dets, H, W] bool, pred_boxes,
    scores [dets], pred_classes [dets])]."""
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
            m[y0 : y0 + int(rng.integers(4, H // 2)), x0 : x0 + int(rng.integers(4, W // 2))] = True
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


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="COCOEvaluator time per image",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    timing.add_common(p, threads=1, warmup=1, repeat=3)
    p.add_argument("--config-file", default="projects/m2f/r50.yaml", metavar="FILE")
    p.add_argument("--module", action="append", default=[], help="user module to import first (repeatable)")
    p.add_argument("--images", type=int, default=50, help="first N images of DATASETS.TEST[0]")
    p.add_argument("--dets", type=int, default=0, help="detections per image (0: TEST.DETECTIONS_PER_IMAGE)")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    p.set_defaults(func=run)


def run(args) -> int:
    import contextlib
    import io

    import torch

    from segtrain.data.catalog import DatasetCatalog, MetadataCatalog
    from segtrain.data.datasets.builtin import register_shapes_from_cfg
    from segtrain.evaluation.coco_evaluation import COCOEvaluator
    from segtrain.utils.errors import ConfigError

    machine = timing.machine_info()
    torch.set_num_threads(args.threads)
    cfg = timing.load_cfg(args)
    if not len(cfg.DATASETS.TEST):
        raise ConfigError(f"{args.config_file}: DATASETS.TEST is empty; the eval benchmark needs a test set")
    name = cfg.DATASETS.TEST[0]
    register_shapes_from_cfg(cfg)
    dets = args.dets or cfg.TEST.DETECTIONS_PER_IMAGE
    dicts = DatasetCatalog.get(name)[: args.images]
    pairs = synthetic_predictions(dicts, MetadataCatalog.get(name), dets, args.seed)
    evaluator = COCOEvaluator(name, tasks=("bbox", "segm"), distributed=False, output_dir=None, max_dets_per_image=dets)
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
    per = {
        "process_ms_per_image": 1000 * statistics.median(proc_t) / n,
        "evaluate_ms_per_image": 1000 * statistics.median(eval_t) / n,
    }
    per["total_ms_per_image"] = per["process_ms_per_image"] + per["evaluate_ms_per_image"]
    res = dict(
        dataset=name,
        images=n,
        detections_per_image=dets,
        process_s=proc_t,
        evaluate_s=eval_t,
        **per,
        segm_AP=results.get("segm", {}).get("AP"),
        bbox_AP=results.get("bbox", {}).get("AP"),
    )
    timing.report("eval", args, [res], per, {"config": args.config_file}, machine)
    timing.print_table(
        f"COCOEvaluator on {name}: {n} images x {dets} detections (bbox + segm), median of "
        f"{args.repeat} after {args.warmup} warm-up; load average {machine['loadavg_1_5_15']}",
        ["images", "dets/image", "process ms/image", "evaluate ms/image", "total ms/image", "segm AP"],
        [
            [
                n,
                dets,
                per["process_ms_per_image"],
                per["evaluate_ms_per_image"],
                per["total_ms_per_image"],
                timing.fmt(res["segm_AP"]),
            ]
        ],
    )
    return 0
