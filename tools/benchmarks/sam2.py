"""``benchmark.py sam2``: SAM 2.1 video tracking speed: the image encoder on one frame and one
tracking step per frame (memory attention over a full memory bank, SAM heads, memory encoder)
through ``VideoPredictor``, for ``projects/sam2/sam2.1_hiera_t.yaml`` at ``--image-size``
(512 by default), random weights, eval mode, on the CPU and on CUDA when present.

The tracking step is timed on a frame far enough into the video that the memory bank is full
(``num_maskmem`` memories and up to 16 object pointers), as in a long propagation.
"""

import argparse
import os
import time
from collections import OrderedDict
from typing import Dict

from . import timing

__all__ = ["add_parser", "run"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sam2",
        help="SAM 2.1 image encoder and per-frame tracking step time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    timing.add_common(p, threads=1, warmup=1, repeat=5, device="auto")
    p.add_argument("--config-file", default=os.path.join(ROOT, "projects", "sam2", "sam2.1_hiera_t.yaml"))
    p.add_argument("--image-size", type=int, default=512)
    p.add_argument("--frames", type=int, default=12, help="frames propagated before the timed step")
    p.add_argument("--objects", type=int, default=1)
    p.set_defaults(func=run)


def _predictor(args, device):
    import torch

    from segtrain.config import get_cfg
    from segtrain.modeling.sam2 import build_video_predictor

    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.MODEL.SAM2.IMAGE_SIZE = args.image_size
    cfg.MODEL.DEVICE = str(device)
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(args.seed)
    return build_video_predictor(cfg)


def run(args) -> int:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    machine = timing.machine_info()
    device = timing.resolve_device(args.device)
    predictor = _predictor(args, device)
    model = predictor.model
    rng = np.random.default_rng(args.seed)
    num_frames = args.frames + 2
    frames = rng.integers(0, 255, (num_frames, args.image_size, args.image_size, 3), dtype=np.uint8)
    state = predictor.init_state(frames)
    mask = np.zeros((args.image_size, args.image_size), dtype=bool)
    s = args.image_size
    for k in range(args.objects):
        mask[:] = False
        mask[s // 4 : s // 2, s // 8 * (k + 1) : s // 8 * (k + 3)] = True
        predictor.add_new_mask(state, 0, k, mask)
    # fill the memory bank: propagate up to the frame before the timed one
    for _ in predictor.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=args.frames):
        pass
    t_next = args.frames + 1
    image = state["images"][t_next : t_next + 1].to(device)

    def encode():
        with torch.inference_mode():
            model.forward_image(image)

    def track():
        with torch.inference_mode():
            for obj_idx in range(args.objects):
                out = state["output_dict_per_obj"][obj_idx]
                out["non_cond_frame_outputs"].pop(t_next, None)
                state["cached_features"].clear()
                t0 = time.perf_counter()
                predictor._get_image_feature(state, t_next, 1)
                t1 = time.perf_counter()
                predictor._run_single_frame_inference(state, out, t_next, 1, False, None, None, False, True)
        return {"encode": t1 - t0, "memory_and_heads": time.perf_counter() - t1}

    timed = timing.interleaved(
        OrderedDict([("image_encoder", encode), ("tracking_step", track)]), device, args.warmup, args.repeat
    )
    results, rows = [], []
    for name, res in timed.items():
        results.append(dict(case=name, image=args.image_size, objects=args.objects, **res))
        rows.append([name, args.image_size, args.objects, res["median_ms"], res["min_ms"], res["cpu_median_ms"]])
    summary: Dict[str, object] = {
        "frames_per_second": 1000.0 / timed["tracking_step"]["median_ms"],
        "tracking_step_memory_and_heads_median_ms": timed["tracking_step"]["memory_and_heads_median_ms"],
    }
    timing.report("sam2", args, results, summary, {"device_name": str(device)}, machine)
    timing.print_table(
        f"SAM 2.1 ({os.path.basename(args.config_file)}) on {device}, {args.threads} thread(s), median of "
        f"{args.repeat} interleaved rounds; load average {machine['loadavg_1_5_15']}",
        ["case", "image", "objects", "median ms", "min ms", "CPU ms"],
        rows,
    )
    timing.print_summary(summary)
    return 0
