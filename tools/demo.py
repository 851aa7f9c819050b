#!/usr/bin/env python
"""Run a trained model on image files and write PNGs with the predicted masks, classes and
scores drawn (the panoptic segments of a panoptic model, else the instances, else the
semantic map).

    python tools/demo.py --config-file projects/m2f/r50.yaml --input a.jpg b.png --output out/ \\
        [--confidence-threshold 0.5] MODEL.WEIGHTS output/model_final.pth

Images are resized as by the test mapper (INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST); predictions
come back at the original size and are drawn on the original image. Class names come from
the metadata of DATASETS.TEST[0] (else DATASETS.TRAIN[0]).
"""

import argparse
import glob
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("demo")


def main(argv=None) -> int:
    from segtrain.utils.cli import add_config_arguments, one_line_errors

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, help="image files or glob patterns, e.g. 'imgs/*.jpg'")
    parser.add_argument("--output", required=True, help="folder for the PNGs (one per input, same stem)")
    parser.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score drawn")
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


if __name__ == "__main__":
    sys.exit(main())
