#!/usr/bin/env python
"""Write a video dataset in the DAVIS layout (``JPEGImages/<video>/NNNNN.jpg`` and
palette-indexed ``Annotations/<video>/NNNNN.png``, objects numbered 1..N in annotation order),
e.g. the built-in shapes videos, to fine-tune or evaluate through ``register_vos_folder``:

    python tools/export_vos_folder.py --config-file projects/sam2/sam2.1_tiny.yaml \\
        --dataset shapes_video_val --output datasets/shapes_davis
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("export_vos_folder")


def main(argv=None) -> int:
    from segtrain.utils.cli import add_config_arguments, one_line_errors

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="a registered video dataset, e.g. shapes_video_val")
    parser.add_argument("--output", required=True, help="folder to write JPEGImages/ and Annotations/ into")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return one_line_errors(lambda: _run(args), args.debug)


def _run(args) -> int:
    import numpy as np

    import segtrain.modeling  # noqa: F401  (registers the family config keys)
    from segtrain.config import load_config
    from segtrain.data import DatasetCatalog
    from segtrain.data.datasets import export_vos_folder
    from segtrain.data.datasets.shapes_video import register_shapes_video_from_cfg
    from segtrain.evaluation.video_evaluation import video_gt_masks
    from segtrain.utils.errors import DatasetError

    cfg = load_config(args.config_file, args.opts, args.module)
    register_shapes_video_from_cfg(cfg)  # the built-in videos at the config's sizes
    dicts = DatasetCatalog.get(args.dataset)

    def label_maps(video):
        _, masks = video_gt_masks(video)  # bool [T, N, H, W]
        if masks.shape[1] > 254:
            raise DatasetError(f"video id {video['video_id']}: {masks.shape[1]} objects do not fit a label PNG")
        labels = np.zeros((masks.shape[0],) + masks.shape[2:], np.uint8)
        for n in range(masks.shape[1]):  # a later object covers an earlier one where they overlap
            labels[masks[:, n]] = n + 1
        return labels

    image_root, mask_root = export_vos_folder(dicts, args.output, label_maps)
    logger.info(f"wrote {len(dicts)} videos: {image_root}, {mask_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
