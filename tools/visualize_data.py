#!/usr/bin/env python
"""Write PNGs of dataset samples with their annotations drawn (masks, contours, boxes, class
names): straight from the dataset dicts ("annotation") or after the training mapper and its
augmentations ("dataloader").

    python tools/visualize_data.py --config-file projects/m2f/r50.yaml --output-dir vis --num 8
    python tools/visualize_data.py --config-file X --source dataloader --output-dir vis [KEY VALUE ...]
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("visualize_data")


def main(argv=None) -> int:
    from segtrain.utils.cli import add_config_arguments, one_line_errors

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=["annotation", "dataloader"], default="annotation")
    parser.add_argument("--dataset", default="", help="dataset name (default: the first of DATASETS.TRAIN)")
    parser.add_argument("--output-dir", required=True, help="folder for the PNGs")
    parser.add_argument("--num", type=int, default=8, help="number of images to write")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def run() -> int:
        n = _run(args)
        logger.info(f"wrote {n} images to {args.output_dir}")
        return 0

    return one_line_errors(run, args.debug)


def _run(args) -> int:
    import segtrain.modeling  # noqa: F401  (registers the model, criterion and family config keys)
    from segtrain.config import load_config
    from segtrain.data import DatasetCatalog, MetadataCatalog, build_train_loader, register_datasets_from_cfg
    from segtrain.data.detection_utils import read_image
    from segtrain.data.visualize import draw_dataset_dict
    from segtrain.utils.errors import ConfigError
    from segtrain.utils.visualizer import Visualizer

    cfg = load_config(args.config_file, args.opts, args.module)
    cfg.DATALOADER.NUM_WORKERS = 0
    if args.dataset:
        cfg.DATASETS.TRAIN = (args.dataset,)
    if not cfg.DATASETS.TRAIN:
        raise ConfigError("DATASETS.TRAIN is empty; pass --dataset NAME")
    name = cfg.DATASETS.TRAIN[0]
    cfg.freeze()
    register_datasets_from_cfg(cfg)
    metadata = MetadataCatalog.get(name)
    os.makedirs(args.output_dir, exist_ok=True)

    written = 0
    if args.source == "annotation":
        for d in DatasetCatalog.get(name)[: args.num]:
            img = read_image(d["file_name"], "RGB")
            vis = Visualizer(img, metadata)
            draw_dataset_dict(vis, d)
            vis.save(os.path.join(args.output_dir, f"{_stem(d)}.png"))
            written += 1
        return written

    for batch in build_train_loader(cfg):
        for x in batch:
            vis = Visualizer(x["image"], metadata)  # [3, H, W] RGB after augmentation
            inst = x.get("instances")
            if inst is not None and len(inst):
                labels = [vis.class_name(int(c)) for c in inst.gt_classes]
                vis.overlay_instances(
                    masks=inst.gt_masks if inst.has("gt_masks") else None,
                    boxes=inst.gt_boxes if inst.has("gt_boxes") else None,
                    class_ids=inst.gt_classes,
                    labels=labels,
                )
            vis.save(os.path.join(args.output_dir, f"{_stem(x)}_aug{written:03d}.png"))
            written += 1
            if written >= args.num:
                return written
    return written


def _stem(d) -> str:
    base = os.path.splitext(os.path.basename(str(d.get("file_name", ""))))[0]
    return base or f"image_{d.get('image_id')}"


if __name__ == "__main__":
    sys.exit(main())
