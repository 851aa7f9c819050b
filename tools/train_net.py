#!/usr/bin/env python
"""Train a segmentation model from a config, or evaluate one (``--eval-only``).

python tools/train_net.py --config-file projects/m2f/r50.yaml [KEY VALUE ...]
python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS out/model_final.pth
python tools/train_net.py --config-file ... --resume          # continue OUTPUT_DIR's run
python tools/train_net.py --config-file ... --num-gpus 8      # torch.distributed
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from segtrain.utils import cpu_share  # noqa: E402  (torch-free)
from segtrain.utils.errors import SegtrainError  # noqa: E402

# before torch is imported: libgomp reads OMP_WAIT_POLICY once, when torch loads it. The free
# cores are measured while this process is still idle and published to the workers it starts.
try:
    cpu_share.publish_free_cpus()
    cpu_share.prepare_openmp_env()
except SegtrainError as e:  # a bad SEGTRAIN_* variable: one line, as every other start-up error
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)

from segtrain.checkpoint import Checkpointer, weights_prefixes  # noqa: E402
from segtrain.engine import DefaultTrainer, default_argument_parser, default_setup, run_cli, setup_cfg  # noqa: E402
from segtrain.engine.cli import configure_cpu_threads, follow_free_cores  # noqa: E402
from segtrain.engine.startup_check import validate_config  # noqa: E402
from segtrain.utils.allocator import tune_malloc  # noqa: E402
from segtrain.utils.errors import ConfigError  # noqa: E402


def setup(args):
    """The frozen config and the CPU thread plan of this process, after the start-up checks."""
    cfg = setup_cfg(args)
    validate_config(cfg, train=not args.eval_only, resume=args.resume)  # every config problem, before any work
    # threads first, so that the environment log shows the count in use
    threads = configure_cpu_threads(cfg)
    default_setup(cfg, args, cpu_threads=threads.describe())
    return cfg, threads


def main(args):
    tune_malloc()  # keep freed memory for reuse (glibc only; SEGTRAIN_MALLOC=default disables)
    cfg, threads = setup(args)
    if args.eval_only:
        if not cfg.MODEL.WEIGHTS and not args.resume:
            raise ConfigError("--eval-only needs MODEL.WEIGHTS (a .pth / .pkl file) or --resume")
        model = DefaultTrainer.build_model(cfg)
        checkpointer = Checkpointer(model, save_dir=cfg.OUTPUT_DIR, **weights_prefixes(cfg))
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        if not checkpointer.last_loaded_path:
            raise ConfigError(
                f"--eval-only --resume: no checkpoint in {cfg.OUTPUT_DIR} and no MODEL.WEIGHTS to evaluate"
            )
        return DefaultTrainer.test(cfg, model)
    trainer = DefaultTrainer(cfg)
    follow_free_cores(trainer, threads, cfg.CPU.REMEASURE_PERIOD)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


if __name__ == "__main__":
    sys.exit(run_cli(main, default_argument_parser().parse_args()))
