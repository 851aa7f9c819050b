"""``benchmark.py sam3``: SAM 3 image inference: one image and one text prompt through the
image processor (``build_image_processor``: ``set_image``, then ``set_text_prompt``) for
``projects/sam3/sam3_image.yaml`` (the official sizes: 1008 px, the 32-block ViT, the 24-layer
text encoder, 6 + 6 fusion layers, 200 queries), random weights, eval mode, on the CPU and on
CUDA when present. KEY VALUE config overrides at the end change the model (e.g. smaller sizes).

Times are split by forward hooks into the ViT trunk, the rest of ``set_image`` (the neck), the
text encoder and the rest of ``set_text_prompt`` (geometry and fusion encoders, decoder,
scoring, segmentation head and the processor's mask resizing). Peak memory of one image + prompt
(above the memory once the model and the image exist): CPU peak RSS in a fresh process, CUDA
``max_memory_allocated``; ``peak_mb`` for a second image, ``first_image_peak_mb`` for the first
(which also fills the caches kept for later images, such as the position encodings).
"""

import argparse
import os
import time
from collections import OrderedDict
from typing import Callable, Dict, Mapping

from . import timing

__all__ = ["PartTimer", "add_parser", "image_and_prompt_step", "run"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASE = "image_and_text_prompt"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "sam3",
        help="SAM 3 image + text prompt time per image (ViT, text, encoder/decoder/heads) and peak memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    timing.add_common(p, threads=2, warmup=1, repeat=3, device="auto")
    p.add_argument("--config-file", default=os.path.join(ROOT, "projects", "sam3", "sam3_image.yaml"))
    p.add_argument("--module", action="append", default=[], help="user module to import first (repeatable)")
    p.add_argument("--input-size", default="720x960", help="HxW of the input image (resized to the model size)")
    p.add_argument("--prompt", default="a red car")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory run")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    p.set_defaults(func=run)


def _clocks():
    return time.perf_counter(), time.process_time()


class PartTimer:
    """Wall and CPU time (all threads) spent inside given submodules, from forward pre- and
    post-hooks (the device is synchronized at both ends). ``parts`` maps a name to a module;
    ``take()`` returns and clears ``{name: wall seconds, name_cpu: CPU seconds}`` accumulated
    since the last call."""

    def __init__(self, parts: Mapping[str, object], device):
        self.device = device
        self.elapsed: Dict[str, float] = {}
        self._start: Dict[str, tuple] = {}
        for name, module in parts.items():
            module.register_forward_pre_hook(self._pre(name))
            module.register_forward_hook(self._post(name))

    def _pre(self, name):
        def hook(module, inputs):
            timing.sync(self.device)
            self._start[name] = _clocks()

        return hook

    def _post(self, name):
        def hook(module, inputs, output):
            timing.sync(self.device)
            (w0, c0), (w1, c1) = self._start.pop(name), _clocks()
            self.elapsed[name] = self.elapsed.get(name, 0.0) + w1 - w0
            self.elapsed[f"{name}_cpu"] = self.elapsed.get(f"{name}_cpu", 0.0) + c1 - c0

        return hook

    def take(self) -> Dict[str, float]:
        out, self.elapsed = self.elapsed, {}
        return out


def parse_size(text: str):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        h = w = 0
    if h <= 0 or w <= 0:
        from segtrain.utils.errors import ConfigError

        raise ConfigError(f"--input-size must be HxW with positive integers, got {text!r}")
    return h, w


def image_and_prompt_step(processor, image, prompt: str, device) -> Callable[[], Dict[str, float]]:
    """One image and one text prompt through ``processor`` (the official ``Sam3Processor``
    calls); the step returns ``{vit, neck, text, grounding}`` wall seconds and the same parts'
    CPU seconds (``*_cpu``; ``PartTimer`` hooks on the ViT trunk and the text encoder), and
    records the number of kept detections in ``step.detections``."""
    model = processor.model
    parts = PartTimer({"vit": model.backbone.vision_backbone.trunk, "text": model.backbone.language_backbone}, device)

    def step():
        parts.take()
        t0 = _clocks()
        state = processor.set_image(image)
        timing.sync(device)
        t1 = _clocks()
        state = processor.set_text_prompt(prompt, state)
        timing.sync(device)
        t2 = _clocks()
        p = parts.take()
        step.detections = int(state["scores"].numel())
        out = {}
        for k, suffix in ((0, ""), (1, "_cpu")):
            out["vit" + suffix] = p["vit" + suffix]
            out["neck" + suffix] = t1[k] - t0[k] - p["vit" + suffix]
            out["text" + suffix] = p["text" + suffix]
            out["grounding" + suffix] = t2[k] - t1[k] - p["text" + suffix]
        return out

    step.detections = 0
    return step


def _processor_and_image(args, device):
    import numpy as np
    import torch

    from segtrain.modeling.sam3 import build_image_processor

    cfg = timing.load_cfg(args)
    cfg.MODEL.DEVICE = str(device)
    cfg.MODEL.WEIGHTS = ""
    torch.manual_seed(args.seed)
    processor = build_image_processor(cfg)
    h, w = parse_size(args.input_size)
    image = np.random.default_rng(args.seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return processor, image, cfg


def _memory_case(name: str, args) -> Dict:
    import torch

    torch.set_num_threads(args.threads)
    device = timing.resolve_device(args.device)
    processor, image, _ = _processor_and_image(args, device)
    step = image_and_prompt_step(processor, image, args.prompt, device)
    # the first image also fills the caches kept for later images (position encodings per
    # feature size, ...); the second image's peak is the steady state
    first = timing.peak_of_step(step, device)
    return {"case": name, "first_image_peak_mb": first, "peak_mb": timing.peak_of_step(step, device)}


def run(args) -> int:
    if timing.ran_memory_worker(args, _memory_case):
        return 0
    machine, device, _ = timing.start_run(args, CASE, [CASE], "case")
    mem: Dict = {}
    if not args.no_memory:  # first: on the CPU the fresh process then has the memory to itself
        mem = timing.run_isolated("sam3", CASE, args) if device.type == "cpu" else _memory_case(CASE, args)
    processor, image, cfg = _processor_and_image(args, device)
    params = sum(p.numel() for p in processor.model.parameters())
    step = image_and_prompt_step(processor, image, args.prompt, device)
    timed = timing.interleaved(OrderedDict([(CASE, step)]), device, args.warmup, args.repeat)[CASE]
    size = cfg.MODEL.SAM3.IMAGE_SIZE
    result = dict(case=CASE, image_size=size, input_size=args.input_size, detections=step.detections, **timed)
    result["peak_mb"] = mem.get("peak_mb")
    result["first_image_peak_mb"] = mem.get("first_image_peak_mb")
    if "error" in mem:
        result["memory_error"] = mem["error"]
    parts = ("vit", "neck", "text", "grounding")
    summary: Dict[str, object] = {
        "seconds_per_image": timed["median_ms"] / 1000,
        "images_per_second": 1000.0 / timed["median_ms"],
        "parts_median_ms": {k: round(timed[f"{k}_median_ms"], 1) for k in parts},
        "parts_cpu_median_ms": {k: round(timed[f"{k}_cpu_median_ms"], 1) for k in parts},
        "peak_mb": result["peak_mb"],
        "first_image_peak_mb": result["first_image_peak_mb"],
        "parameters_millions": params / 1e6,
    }
    extra = {"device_name": str(device), "image_size": size}
    timing.report("sam3", args, [result], summary, extra, machine)
    timing.print_table(
        f"SAM 3 image + text prompt ({os.path.basename(args.config_file)}, {size} px, {params / 1e6:.0f}M parameters) "
        f"on {device}, {args.threads} thread(s), median of {args.repeat} rounds; load average "
        f"{machine['loadavg_1_5_15']}",
        ["case", "median ms", "min ms", "CPU ms", "ViT ms", "neck ms", "text ms", "enc+dec+heads ms", "peak MB"],
        [
            [CASE, timed["median_ms"], timed["min_ms"], timed["cpu_median_ms"]]
            + [timed[f"{k}_median_ms"] for k in parts]
            + [timing.fmt(result["peak_mb"], ".0f")]
        ],
    )
    timing.print_summary(summary)
    return 0
