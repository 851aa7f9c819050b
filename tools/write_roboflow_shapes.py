#!/usr/bin/env python
"""Write the built-in shapes dataset as a Roboflow COCO export (``train/``, ``valid/``,
``test/``, each with ``_annotations.coco.json``; category 0 is the super-category), for a
fine-tuning run through ``register_roboflow_coco``.

    python tools/write_roboflow_shapes.py --output-dir datasets/roboflow_shapes [--boxes-only]
"""

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

logger = logging.getLogger("write_roboflow_shapes")


def main(argv=None) -> int:
    from segtrain.data.datasets.roboflow import write_roboflow_shapes

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True, help="the export's root folder (created)")
    parser.add_argument("--num-train", type=int, default=32)
    parser.add_argument("--num-valid", type=int, default=8)
    parser.add_argument("--num-test", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--empty-images", type=int, default=1, help="images without objects added to each split")
    parser.add_argument("--boxes-only", action="store_true", help='write "segmentation": [] (a detection export)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        write_roboflow_shapes(
            args.output_dir,
            num_train=args.num_train,
            num_valid=args.num_valid,
            num_test=args.num_test,
            image_size=args.image_size,
            masks=not args.boxes_only,
            empty_images=args.empty_images,
        )
    except Exception as e:  # one line for the user, as the other tools do
        print(f"error: {e}", file=sys.stderr)
        return 2
    logger.info(f"wrote a Roboflow-layout shapes export to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
