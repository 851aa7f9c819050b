#!/usr/bin/env python
"""segtrain benchmarks, one subcommand each; every one prints a table and, with ``--output``,
writes the settings, the machine (CPU count, load average before / after) and every timing
as JSON. Times are medians over ``--repeat`` rounds after ``--warmup``; ``--threads`` sets
``torch.set_num_threads``; ``--device cpu|cuda|auto``.

    train      forward+backward and optimizer-step time, iterations/s, images/s and peak memory
               of a config (default projects/m2f/r50.yaml; KEY VALUE overrides at the end),
               vs the baseline form of the same model and step; ``no_loss``: the same model's
               forward+backward without the criterion (backward of the sum of every output),
               as the official Mask2Former figure is defined
    data       training-loader images/s with 0, 1, ... worker processes
    eval       COCOEvaluator time per image (process + evaluate) on the config's test set
    criterion  criterion forward+backward time and peak memory at official settings, and the
               matcher alone, vs the per-image / per-layer loops
    msda       multi-scale deformable attention forward+backward: fast path vs the official
               algorithm (``ms_deform_attn_reference``) at 1 and 2 threads
    masks      peak memory of point-sampled vs full-resolution mask losses (SAM 3 ``Masks``,
               1008x1008 masks, 200 queries)
    sam2       SAM 2.1 (hiera_t preset, 512 px): the image encoder on one frame and one tracking
               step per frame with a full memory bank, through the video predictor
    sam3       SAM 3 image model (official sizes, 1008 px): one image and one text prompt through
               the image processor, time per part (ViT, neck, text, encoder+decoder+heads) and peak
               memory
    contention the training step and evaluation per image alone and beside N busy single-thread
               processes it starts and stops itself, segtrain's full step (trainer, hooks, loader)
               and the same model as plain PyTorch, with segtrain's adaptive threads and with
               torch's default of a thread per core

Every ratio is against the straightforward form of the same computation, from
``tests/reference`` (per-image and per-layer Python loops for the criterion and the matcher,
``ms_deform_attn_reference``), the plain per-tensor AdamW loop, or full-resolution masks
through plain autograd. Cases compared with each other run interleaved in one process (each
round times every case once, starting at a different case), so a machine shared with other
jobs slows both sides alike; CPU time (``time.process_time``, all threads) is reported next
to wall time for the same reason. Peak memory on CPU is measured in a fresh subprocess per
case (peak RSS, VmHWM, above the RSS once the inputs exist, with glibc's large allocations
going straight to mmap so that freed memory leaves the RSS); on CUDA it is
``torch.cuda.max_memory_allocated`` above the allocation before the step.

Like ``tools/train_net.py``, the tool keeps freed memory for reuse
(``segtrain.utils.allocator.tune_malloc``; ``SEGTRAIN_MALLOC=default`` leaves glibc's
settings alone, e.g. to measure their effect); the JSON's ``machine.malloc`` says which.
Each subcommand is a module of ``tools/benchmarks/``.
"""

import argparse
import logging
import os
import sys
from typing import List, Optional

# the repository root: segtrain, tools.benchmarks and tests.reference import from there
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools.benchmarks import contention, criterion, data, masks, msda, sam2, sam3, train  # noqa: E402
from tools.benchmarks import eval as eval_

__all__ = ["SUBCOMMANDS", "main"]

#: subcommand name -> its module (``add_parser(subparsers)``, ``run(args)``)
SUBCOMMANDS = {
    "train": train,
    "data": data,
    "eval": eval_,
    "criterion": criterion,
    "msda": msda,
    "masks": masks,
    "contention": contention,
    "sam2": sam2,
    "sam3": sam3,
}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS.values():
        module.add_parser(sub)
    args = parser.parse_args(argv)
    # the subcommand's own options, forwarded to isolated workers
    args._argv = [a for a in argv[argv.index(args.command) + 1 :]] if args.command in argv else []
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from segtrain.utils.allocator import tune_malloc
    from segtrain.utils.cli import one_line_errors

    def run():
        # as tools/train_net.py does (SEGTRAIN_MALLOC=default: glibc's own settings); not in the
        # isolated peak-memory workers, which measure live memory with glibc's mmap behaviour
        if not args._case:
            tune_malloc()
        return args.func(args)

    return one_line_errors(run, args.debug)


if __name__ == "__main__":
    sys.exit(main())
