#!/usr/bin/env python
"""Run a trained model on image files and write PNGs with the predicted masks, classes and
scores drawn (the panoptic segments of a panoptic model, else the instances, else the
semantic map).

    python tools/demo.py --config-file projects/m2f/r50.yaml --input a.jpg b.png --output out/ \\
        [--confidence-threshold 0.5] MODEL.WEIGHTS output/model_final.pth

Images are resized as by the test mapper (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST); predictions
come back at the original size and are drawn on the original image. Class names come from
the metadata of DATASETS.TEST[0] (else DATASETS.TRAIN[0]).

A SAM 3 image model (MODEL.META_ARCHITECTURE "Sam3Image") is prompted instead, through its
image processor (the official Sam3Processor calls): each ``--text PROMPT`` runs on its own,
with the ``--box`` (positive) and ``--negative-box`` exemplars, given as x0 y0 x1 y1 pixels of
the input image, added to it (boxes alone: an exemplar-only prompt). Detections scoring
above --confidence-threshold (query probability x presence) are drawn with the prompt and
the score, and the exemplar boxes in green (+) and red (-). MODEL.WEIGHTS may be a segtrain
checkpoint or the released SAM 3 checkpoint.

    python tools/demo.py --config-file projects/sam3/sam3_image.yaml --input a.jpg --output out/ \\
        --text "a red car" --box 10 20 110 90 MODEL.WEIGHTS sam3.pt
"""

import argparse
import glob
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("demo")

# the meta-architecture that takes text and exemplar-box prompts
_PROMPTABLE = "Sam3Image"
_EXEMPLAR_COLORS = {True: (0, 200, 0), False: (220, 0, 0)}


def main(argv=None) -> int:
    from segtrain.utils.cli import add_config_arguments, one_line_errors

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, help="image files or glob patterns, e.g. 'imgs/*.jpg'")
    parser.add_argument("--output", required=True, help="folder for the PNGs (one per input, same stem)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score drawn")
    parser.add_argument(
        "--text", action="append", default=[], metavar="PROMPT", help="SAM 3: a text prompt (repeatable)"
    )
    parser.add_argument(
        "--box",
        nargs=4,
        type=float,
        action="append",
        default=[],
        metavar=("X0", "Y0", "X1", "Y1"),
        help="SAM 3: a positive exemplar box in pixels (repeatable)",
    )
    parser.add_argument(
        "--negative-box",
        nargs=4,
        type=float,
        action="append",
        default=[],
        metavar=("X0", "Y0", "X1", "Y1"),
        help="SAM 3: a negative exemplar box in pixels (repeatable)",
    )
    add_config_arguments(parser, "KEY VALUE config overrides, e.g. MODEL.WEIGHTS w.pth")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def run() -> int:
        n = _run(args)
        logger.info("wrote %d images to %s", n, args.output)
        return 0

    return one_line_errors(run, args.debug)


def _expand_inputs(patterns):
    from segtrain.utils.errors import DatasetError

    files = []
    for p in patterns:
        hits = sorted(glob.glob(os.path.expanduser(p)))
        if not hits:
            raise DatasetError(f"input not found: {p!r}")
        files.extend(hits)
    return files


def _run(args) -> int:
    import torch

    from segtrain.checkpoint import Checkpointer, weights_prefixes
    from segtrain.config import load_config
    from segtrain.data import MetadataCatalog, register_shapes_from_cfg
    from segtrain.data.detection_utils import read_image
    from segtrain.data.transforms.augmentation import ResizeShortestEdge, apply_augmentations
    from segtrain.modeling import build_model
    from segtrain.utils.errors import ConfigError
    from segtrain.utils.visualizer import Visualizer

    cfg = load_config(args.config_file, args.opts, args.module)
    cfg.freeze()
    if not cfg.MODEL.WEIGHTS:
        raise ConfigError("no weights given: add MODEL.WEIGHTS path/to/model.pth to the command line")
    files = _expand_inputs(args.input)
    prompted = bool(args.text or args.box or args.negative_box)
    if cfg.MODEL.META_ARCHITECTURE == _PROMPTABLE:
        return _run_prompted(args, cfg, files)
    if prompted:
        raise ConfigError(
            f"--text / --box / --negative-box prompt a SAM 3 model (MODEL.META_ARCHITECTURE {_PROMPTABLE!r}); "
            f"{cfg.MODEL.META_ARCHITECTURE!r} takes no prompts"
        )
    register_shapes_from_cfg(cfg)
    names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
    metadata = MetadataCatalog.get(names[0]) if names else None

    model = build_model(cfg)
    model.eval()
    checkpointer = Checkpointer(model, **weights_prefixes(cfg))
    checkpointer.load(cfg.MODEL.WEIGHTS, checkpointables=[])
    resize = ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")

    os.makedirs(args.output, exist_ok=True)
    for path in files:
        img = read_image(path, format=cfg.INPUT.FORMAT)  # uint8 [H, W, 3]
        height, width = img.shape[:2]
        resized, _ = apply_augmentations([resize], img)
        image = torch.as_tensor(resized.transpose(2, 0, 1).copy())  # uint8 [3, h, w]
        start = time.perf_counter()
        with torch.no_grad():
            result = model([{"image": image, "height": height, "width": width}])[0]
        seconds = time.perf_counter() - start
        rgb = img if cfg.INPUT.FORMAT == "RGB" else img[:, :, ::-1]
        vis = Visualizer(rgb, metadata)
        if "panoptic_seg" in result:  # a panoptic model: things and stuff in one map
            seg, info = result["panoptic_seg"]
            logger.info("%s: %d panoptic segments in %.2fs", path, len(info or []), seconds)
            vis.draw_panoptic_seg(seg.cpu(), info or [])
        elif "instances" in result:
            instances = result["instances"].to("cpu")
            keep = int((instances.scores >= args.confidence_threshold).sum())
            logger.info("%s: %d instances above %.2f in %.2fs", path, keep, args.confidence_threshold, seconds)
            vis.draw_instance_predictions(instances, score_threshold=args.confidence_threshold)
        elif "sem_seg" in result:
            logger.info("%s: semantic segmentation in %.2fs", path, seconds)
            vis.draw_sem_seg(result["sem_seg"].float().cpu())
        else:
            raise ConfigError(
                "the model returned no 'instances', 'panoptic_seg' or 'sem_seg' to draw "
                "(Mask2Former: set one of MODEL.MASK_FORMER.TEST.{INSTANCE_ON, PANOPTIC_ON, SEMANTIC_ON})"
            )
        out = os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png")
        vis.save(out)
    return len(files)


def _normalized_box(box, width: int, height: int, flag: str, path: str):
    """An x0 y0 x1 y1 pixel box -> normalized [cx, cy, w, h] (clipped to the image); a
    one-line error when it is empty or outside the image."""
    from segtrain.utils.errors import ConfigError

    x0, y0, x1, y1 = box
    text = f"{flag} {x0:g} {y0:g} {x1:g} {y1:g}"
    if not (x1 > x0 and y1 > y0):
        raise ConfigError(f"{text}: a box is x0 y0 x1 y1 in pixels with x1 > x0 and y1 > y0")
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    if not (x1 > x0 and y1 > y0):
        raise ConfigError(f"{text}: outside the {width}x{height} image {path}")
    return [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]


def _run_prompted(args, cfg, files) -> int:
    """SAM 3: every input image, prompted by each --text (with the exemplar boxes) in turn."""
    import numpy as np

    from segtrain.data.detection_utils import read_image
    from segtrain.modeling.sam3 import build_image_processor
    from segtrain.utils.errors import ConfigError
    from segtrain.utils.visualizer import PALETTE, Visualizer

    if not (args.text or args.box or args.negative_box):
        raise ConfigError(f"a {_PROMPTABLE} model needs a prompt: --text PROMPT and / or --box X0 Y0 X1 Y1 (exemplars)")
    for path in files:  # every input decodes before the model is built
        read_image(path, format="RGB")
    processor = build_image_processor(cfg)
    processor.set_confidence_threshold(args.confidence_threshold)
    os.makedirs(args.output, exist_ok=True)
    for path in files:
        img = read_image(path, format="RGB")  # uint8 [H, W, 3]
        height, width = img.shape[:2]
        exemplars = [(b, True, "--box") for b in args.box] + [(b, False, "--negative-box") for b in args.negative_box]
        prompts = [(_normalized_box(b, width, height, flag, path), label) for b, label, flag in exemplars]
        state = processor.set_image(img)
        masks, boxes, labels, colors = [], [], [], []
        for k, text in enumerate(args.text or [None]):
            processor.reset_all_prompts(state)
            start = time.perf_counter()
            if text is not None:
                state = processor.set_text_prompt(text, state)
            for box, positive in prompts:
                state = processor.add_geometric_prompt(box, positive, state)
            seconds = time.perf_counter() - start
            scores = state["scores"].float().cpu().numpy()
            name = text if text is not None else "exemplar"
            logger.info(
                "%s: %d detections for %r above %.2f in %.2fs",
                path,
                len(scores),
                name,
                args.confidence_threshold,
                seconds,
            )
            masks.extend(state["masks"][:, 0].cpu().numpy())
            boxes.extend(state["boxes"].float().cpu().numpy())
            labels.extend(f"{name} {s * 100:.0f}%" for s in scores)
            colors.extend([PALETTE[k % len(PALETTE)]] * len(scores))
        vis = Visualizer(img)
        if labels:
            vis.overlay_instances(masks=np.stack(masks), boxes=np.stack(boxes), labels=labels, colors=colors)
        if exemplars:
            vis.overlay_instances(
                boxes=np.asarray([b for b, _, _ in exemplars]),
                labels=["+" if positive else "-" for _, positive, _ in exemplars],
                colors=[_EXEMPLAR_COLORS[positive] for _, positive, _ in exemplars],
            )
        vis.save(os.path.join(args.output, os.path.splitext(os.path.basename(path))[0] + ".png"))
    return len(files)


if __name__ == "__main__":
    sys.exit(main())
